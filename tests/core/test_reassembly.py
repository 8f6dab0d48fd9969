"""Reassembly: region routing, the exact analytic path, t* <= R, overlapping masks (ARCHITECTURE.md §4.5)."""

from __future__ import annotations

import math

import pytest
import torch
from engine_fixtures import (
    SD_CLEAN_SIGMA,
    CallRecorder,
    TinyConditionedNet,
    clean_latent,
    prompt_means,
    walk_by_hand,
)

from oir_core import FunctionHost, OIRInputError, invert, reassemble
from oir_core.analytic import GaussianModel, ddim_uniform_schedule
from oir_core.sampling import SubSchedule, invert_levels, lockstep_denoise
from oir_core.steps import AUTO, resolve_reassembly, validate_reassembly

# Prompt ids: 0 = original P_o, 1..K = guided G_k, K+1 = target P_t.
PAIRS = 2
CFG = 3.0


def _setup(steps: int = 20, guided=None):  # type: ignore[no-untyped-def]
    model = GaussianModel(prompt_means(PAIRS + 2, seed=5), std=0.5)
    host = FunctionHost(
        original=model.denoiser(0),
        guided=guided or model.cfg_denoiser(negative=0, cfg=CFG, id_offset=1),
        target=model.cfg_denoiser(negative=0, cfg=CFG, positive=PAIRS + 1),
    )
    trajectory = invert(
        host, clean_latent(model), ddim_uniform_schedule(steps), "official_x0", clean_sigma=SD_CLEAN_SIGMA
    )
    return model, host, trajectory


def _image_masks() -> list[torch.Tensor]:
    """Two 64x64 masks whose 8x8 latent footprints are the left-top and right-bottom blocks."""
    first = torch.zeros(64, 64)
    first[:32, :24] = 1.0
    second = torch.zeros(64, 64)
    second[40:, 32:] = 1.0
    return [first, second]


def _finish(
    host: FunctionHost, trajectory, z: torch.Tensor, reassembly: int, reinversion: int
) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Reference for stages 3-4 applied to a whole latent (the analytic model is per-pixel)."""
    top = reassembly + reinversion
    path = invert_levels(
        host.original,
        z[None],
        trajectory.level_sigmas,
        reassembly,
        top,
        "official_x0",
        trajectory.clean_sigma,
    )
    return lockstep_denoise(host.target, trajectory.level_sigmas, path[-1], [top], 0)[0]


def test_each_region_follows_its_own_path() -> None:
    _, host, trajectory = _setup()
    chosen, reassembly, reinversion = [15, 12], 5, 4
    result = reassemble(host, trajectory, chosen, _image_masks(), reassembly, reinversion)
    regions = result.pair_regions.bool()
    background = result.background.bool()
    assert regions[0, :4, :3].all() and regions[1, 5:, 4:].all()
    assert background.sum() == 64 - 12 - 12

    # z_k: pair k alone from x_{t_k} to R with its guided prompt, on the whole latent.
    for k, start in enumerate(chosen):
        z_k = lockstep_denoise(
            host.guided,
            trajectory.level_sigmas,
            trajectory.latents[start][None],
            [start],
            reassembly,
            cond_ids=torch.tensor([k]),
        )[0]
        torch.testing.assert_close(result.pair_latents[k], z_k)
        expected_final = _finish(host, trajectory, z_k, reassembly, reinversion)
        inside = regions[k].expand_as(result.latent)
        torch.testing.assert_close(result.latent[inside], expected_final[inside], atol=1e-5, rtol=1e-5)

    expected_background = _finish(host, trajectory, trajectory.latents[reassembly], reassembly, reinversion)
    outside = background.expand_as(result.latent)
    torch.testing.assert_close(result.latent[outside], expected_background[outside], atol=1e-5, rtol=1e-5)
    # The merged latent takes x_R verbatim outside every mask.
    torch.testing.assert_close(result.merged[outside], trajectory.latents[reassembly][outside])


def test_background_follows_the_exact_original_then_target_path() -> None:
    model, host, trajectory = _setup(steps=200)
    reassembly, reinversion = 40, 40
    result = reassemble(host, trajectory, [150, 100], _image_masks(), reassembly, reinversion)
    levels = trajectory.level_sigmas.tolist()
    x_r = trajectory.latents[reassembly]
    reinverted = model.exact_path(x_r, levels[reassembly], levels[reassembly + reinversion], model.means[0])
    target_mean = model.means[0] + CFG * (model.means[PAIRS + 1] - model.means[0])
    exact = model.exact_path(reinverted, levels[reassembly + reinversion], 0.0, target_mean)
    outside = result.background.bool().expand_as(exact)
    assert (result.latent[outside] - exact[outside]).abs().max() < 0.1
    # The edited regions are not the background's path: the guided prompts changed them.
    inside = result.pair_regions[0].bool().expand_as(exact)
    assert (result.latent[inside] - exact[inside]).abs().max() > 0.1


def test_stages_roles_levels_and_row_counts() -> None:
    model, _, trajectory = _setup()
    recorders = {
        "original": CallRecorder(model.denoiser(0)),
        "guided": CallRecorder(model.cfg_denoiser(negative=0, cfg=CFG, id_offset=1)),
        "target": CallRecorder(model.cfg_denoiser(negative=0, cfg=CFG, positive=PAIRS + 1)),
    }
    host = FunctionHost(**recorders)
    progress: list[tuple[int, int]] = []
    result = reassemble(
        host, trajectory, [15, 9], _image_masks(), 5, 4, on_level=lambda d, t: progress.append((d, t))
    )
    assert [stage.role for stage in host.stages] == ["guided", "original", "target"]
    guided_stage, original_stage, target_stage = host.stages
    assert guided_stage.rows == 2
    assert (guided_stage.sigmas[:-1] > guided_stage.sigmas[1:]).all()
    assert (original_stage.sigmas[1:] > original_stage.sigmas[:-1]).all()
    assert float(target_stage.sigmas[-1]) == 0.0
    assert sum(c["rows"] for c in recorders["guided"].calls) == (15 - 5) + (9 - 5)
    assert len(recorders["guided"].calls) == 15 - 5
    assert len(recorders["original"].calls) == 4
    assert len(recorders["target"].calls) == 5 + 4
    assert result.stats.rows == (15 - 5) + (9 - 5) + 4 + 9
    total = (15 - 5) + 4 + 9
    assert progress == [(d, total) for d in range(1, total + 1)]
    # each stage announces the rows it evaluates (progress and ETA in the host)
    assert [stage.total_rows for stage in host.stages] == [(15 - 5) + (9 - 5), 4, 5 + 4]
    assert (result.reassembly_step, result.reinversion_steps) == (5, 4)


@pytest.mark.parametrize("steps", range(2, 121))
def test_auto_reassembly_fits_every_step_count_and_is_the_papers_at_50(steps: int) -> None:
    merge, reinvert = resolve_reassembly(steps, AUTO, AUTO)
    assert 0 <= merge < steps and 0 <= reinvert and merge + reinvert <= steps
    assert validate_reassembly(steps, AUTO, AUTO) == (merge, reinvert)
    assert (merge, reinvert) == (min(round(steps / 5), steps - 1), min(round(steps / 5), steps - merge))
    if steps == 50:
        assert (merge, reinvert) == (10, 10)  # the paper's R and r
    assert resolve_reassembly(steps, 1, 0) == (1, 0)  # explicit values are kept


def test_auto_reassembly_equals_the_explicit_paper_values() -> None:
    model, _, trajectory = _setup(steps=50)
    host = FunctionHost(model.denoiser(0), model.cfg_denoiser(negative=0, cfg=CFG, id_offset=1),
                        model.cfg_denoiser(negative=0, cfg=CFG, positive=PAIRS + 1))  # fmt: skip
    auto = reassemble(host, trajectory, [30, 22], _image_masks(), AUTO, AUTO)
    explicit = reassemble(host, trajectory, [30, 22], _image_masks(), 10, 10)
    assert (auto.reassembly_step, auto.reinversion_steps) == (10, 10)
    assert torch.equal(auto.latent, explicit.latent)


def test_chosen_step_at_or_below_reassembly_starts_from_x_r() -> None:
    """Rule: t* <= R is clamped to R, i.e. z_k = x_R (the official code crashes here)."""
    model, _, trajectory = _setup()
    recorder = CallRecorder(model.cfg_denoiser(negative=0, cfg=CFG, id_offset=1))
    host = FunctionHost(
        original=model.denoiser(0),
        guided=recorder,
        target=model.cfg_denoiser(negative=0, cfg=CFG, positive=PAIRS + 1),
    )
    below = reassemble(host, trajectory, [3, 12], _image_masks(), 5, 4)
    assert below.effective_starts == [5, 12]
    torch.testing.assert_close(below.pair_latents[0], trajectory.latents[5])
    assert all(0 not in call["ids"] for call in recorder.calls)
    at = reassemble(host, trajectory, [5, 12], _image_masks(), 5, 4)
    torch.testing.assert_close(at.latent, below.latent)
    # Every pair at or below R: no guided stage at all, still a full result.
    recorder.calls.clear()
    both = reassemble(host, trajectory, [1, 2], _image_masks(), 5, 4)
    assert recorder.calls == [] and torch.isfinite(both.latent).all()


def test_overlapping_masks_later_pair_wins_or_error() -> None:
    _, host, trajectory = _setup()
    first = torch.zeros(64, 64)
    first[:, :40] = 1.0
    second = torch.zeros(64, 64)
    second[:, 24:] = 1.0
    result = reassemble(host, trajectory, [15, 12], [first, second], 5, 4)
    # Columns 3-4 of the 8x8 grid are claimed by both; the later pair takes them.
    assert result.pair_regions[1, :, 3:].eq(1).all()
    assert result.pair_regions[0, :, 3:].eq(0).all()
    torch.testing.assert_close(result.pair_regions.sum(0) + result.background, torch.ones(8, 8))
    with pytest.raises(OIRInputError, match="overlap"):
        reassemble(host, trajectory, [15, 12], [first, second], 5, 4, overlap="error")


def test_whole_image_mask_leaves_no_background() -> None:
    _, host, trajectory = _setup()
    result = reassemble(host, trajectory, [15], [torch.ones(64, 64)], 5, 4)
    assert result.background.sum() == 0
    torch.testing.assert_close(result.merged, result.pair_latents[0])


def test_reassembly_does_not_mutate_inputs_and_is_deterministic() -> None:
    _, host, trajectory = _setup()
    masks = _image_masks()
    latents_before = trajectory.latents.clone()
    masks_before = [m.clone() for m in masks]
    first = reassemble(host, trajectory, [15, 12], masks, 5, 4)
    second = reassemble(host, trajectory, [15, 12], masks, 5, 4)
    assert torch.equal(first.latent, second.latent)
    assert torch.equal(trajectory.latents, latents_before)
    assert all(torch.equal(a, b) for a, b in zip(masks, masks_before))


@pytest.mark.parametrize(
    ("chosen", "reassembly", "reinversion", "problem"),
    [
        ([15, 12], 20, 0, "reassembly_step"),
        ([15, 12], -2, 0, "reassembly_step"),
        ([15, 12], 15, 6, "exceeds the inversion's"),
        ([15, 12], 5, -2, "negative"),
        ([15, 12], -1, 17, "exceeds the inversion's"),  # auto R = 4 of 20, r explicit
        ([15], 5, 4, "1 steps for 2 edit pairs"),
        ([0, 12], 5, 4, "must lie in"),
        ([21, 12], 5, 4, "must lie in"),
    ],
)
def test_bad_reassembly_inputs_are_refused(
    chosen: list[int], reassembly: int, reinversion: int, problem: str
) -> None:
    _, host, trajectory = _setup()
    with pytest.raises(OIRInputError, match=problem):
        reassemble(host, trajectory, chosen, _image_masks(), reassembly, reinversion)


def test_empty_mask_is_refused_with_the_pair_named() -> None:
    _, host, trajectory = _setup()
    masks = _image_masks()
    masks[1] = torch.zeros(64, 64)
    with pytest.raises(OIRInputError, match="edit pair 2"):
        reassemble(host, trajectory, [15, 12], masks, 5, 4)


# --------------------------------------------------------------------------------------------------
# reusing the search's latents (step 5 after steps 2-3)


def _nonlinear_setup(steps: int = 12):  # type: ignore[no-untyped-def]
    """A host whose guided role is a small nonlinear network (batch composition matters to it)."""
    from engine_fixtures import TinyConditionedNet

    net = TinyConditionedNet(prompts=PAIRS + 2, seed=3)
    _, host, trajectory = _setup(steps=steps)
    recorder = CallRecorder(lambda x, sigma, ids: net(x, sigma, ids))
    return host, trajectory, recorder


@pytest.mark.parametrize("reassembly_step", [1, 4, 7])
def test_the_searchs_kept_latents_are_what_the_reassembly_computes(reassembly_step: int) -> None:
    """Candidate (k, t) kept at R equals the reassembly's own pair denoise from max(t, R) to R, and a
    reassembly fed those latents runs no guided rows and gives the same latent."""
    from oir_core import generate_candidates

    host, trajectory, recorder = _nonlinear_setup()
    guided_host = FunctionHost(original=host.original, guided=recorder, target=host.target)
    steps = list(range(1, trajectory.steps + 1))
    found = generate_candidates(guided_host, trajectory, [steps, steps], keep_levels=[reassembly_step])
    chosen = [9, 3]
    plain = reassemble(guided_host, trajectory, chosen, _image_masks(), reassembly_step, 2)
    kept = [found.kept_latent(k, t, reassembly_step) for k, t in enumerate(chosen)]
    recorder.calls.clear()
    reused = reassemble(guided_host, trajectory, chosen, _image_masks(), reassembly_step, 2, searched=kept)
    assert recorder.calls == []  # no pair-denoise row
    expected = tuple("inverted" if t <= reassembly_step else "search" for t in chosen)
    assert reused.pair_sources == expected
    assert plain.pair_sources == tuple("inverted" if t <= reassembly_step else "denoised" for t in chosen)
    scale = float(plain.latent.abs().max())
    assert float((reused.pair_latents - plain.pair_latents).abs().max()) <= 1e-5 * scale
    assert float((reused.latent - plain.latent).abs().max()) <= 1e-5 * scale


def test_a_pair_without_a_kept_latent_is_denoised_alone() -> None:
    host, trajectory, recorder = _nonlinear_setup()
    guided_host = FunctionHost(original=host.original, guided=recorder, target=host.target)
    from oir_core import generate_candidates

    found = generate_candidates(guided_host, trajectory, [[10], [8]], keep_levels=[4])
    plain = reassemble(guided_host, trajectory, [10, 8], _image_masks(), 4, 2)
    recorder.calls.clear()
    mixed = reassemble(
        guided_host, trajectory, [10, 8], _image_masks(), 4, 2, searched=[found.kept_latent(0, 10, 4), None]
    )
    assert mixed.pair_sources == ("search", "denoised")
    assert sum(call["rows"] for call in recorder.calls) == 8 - 4  # pair 1 only
    assert {i for call in recorder.calls for i in call["ids"]} == {1}
    torch.testing.assert_close(mixed.latent, plain.latent, rtol=1e-5, atol=1e-5)


def test_approximate_candidates_keep_nothing() -> None:
    from oir_core import generate_candidates

    _, host, trajectory = _setup(steps=12)
    coarse = generate_candidates(
        host, trajectory, [[4, 8, 12]] * PAIRS, schedule=SubSchedule(stride=4), keep_levels=[4]
    )
    assert coarse.kept == {} and coarse.kept_latent(0, 8, 4) is None


# --------------------------------------------------------------------------------------------------
# background = "preserve" (ARCHITECTURE.md §4.5): the inversion's own latent outside the regions


def _conv_host(net) -> FunctionHost:  # type: ignore[no-untyped-def]
    """Every role on a small convolutional network, so a cell's result depends on its neighbours
    (prompt ids: 0 original, 1..K guided, K+1 target; CFG with the original as the negative)."""

    def cfg(positive):  # type: ignore[no-untyped-def]
        def denoise(x, sigma, ids):  # type: ignore[no-untyped-def]
            rows = x.shape[0]
            uncond = net(x, sigma, torch.zeros(rows, dtype=torch.long))
            return uncond + CFG * (net(x, sigma, positive(ids, rows)) - uncond)

        return denoise

    return FunctionHost(
        original=lambda x, sigma, ids: net(x, sigma, torch.zeros(x.shape[0], dtype=torch.long)),
        guided=cfg(lambda ids, rows: ids + 1),
        target=cfg(lambda ids, rows: torch.full((rows,), PAIRS + 1)),
    )


def smoothstep_ramp(background: torch.Tensor, feather: int) -> torch.Tensor:
    """The documented ramp from scipy's exact Euclidean distance transform (an independent library):
    ``d`` = distance from each cell to the nearest edited cell, ``u = min(d / (feather + 1), 1)``,
    weight ``3u^2 - 2u^3``."""
    from scipy.ndimage import distance_transform_edt

    distance = torch.from_numpy(distance_transform_edt(background.numpy() > 0.5)).float()
    u = (distance / (feather + 1)).clamp(max=1.0)
    return 3 * u**2 - 2 * u**3


def _preserve_by_hand(host, trajectory, chosen, regions, weights, reassembly, reinversion, z0):  # type: ignore[no-untyped-def]
    """The preserve reassembly written from its definition (not the engine's loops): the pairs
    to R (DDIM eta 0 by hand), the masked merge, the re-inversion step of the convention by hand,
    the target denoise by hand; after every step ``x <- w * background + (1 - w) * x`` with the
    inversion's latent at that level (at level 0: the landing state, ``x_0`` for ``official``,
    the clean source ``z0`` elsewhere)."""
    levels = trajectory.level_sigmas.double()
    convention = trajectory.convention

    def blend(level: int, x: torch.Tensor) -> torch.Tensor:
        kept = (
            trajectory.latents[level]
            if level > 0
            else (trajectory.latents[0] if convention == "official" else z0)
        )
        return weights * kept + (1 - weights) * x

    pairs = [
        walk_by_hand(
            host.guided,
            trajectory.latents[max(t, reassembly)],
            levels,
            list(range(max(t, reassembly), reassembly - 1, -1)),
            k,
        )
        for k, t in enumerate(chosen)
    ]
    x = (1 - regions.sum(0)) * trajectory.latents[reassembly] + sum(m * p for m, p in zip(regions, pairs))
    x = blend(reassembly, x)[None]
    for level in range(reassembly, reassembly + reinversion):
        a, b = float(levels[level]), float(levels[level + 1])
        if convention == "euler":
            x = x + (x - host.original(x, torch.tensor(a), None)) * (b - a) / a
        else:
            scaled = x * math.sqrt((1 + b * b) / (1 + a * a))  # sqrt(alpha(a) / alpha(b))
            x = x + (b - a) * (scaled - host.original(scaled, torch.tensor(b), None)) / b
        x = blend(level + 1, x)
    for level in range(reassembly + reinversion, 0, -1):
        sigma, sigma_next = levels[level], levels[level - 1]
        x0_hat = host.target(x, sigma, None)
        x = x0_hat if float(sigma_next) == 0 else x + (x - x0_hat) / sigma * (sigma_next - sigma)
        x = blend(level - 1, x)
    return x[0] / math.sqrt(1 + float(levels[0]) ** 2)


@pytest.mark.parametrize("convention", ["official", "official_x0", "euler"])
@pytest.mark.parametrize("feather", [0, 2])
def test_preserve_keeps_the_inversion_outside_and_edits_inside(convention: str, feather: int) -> None:
    net = TinyConditionedNet(prompts=PAIRS + 2, seed=7)
    host = _conv_host(net)
    model = GaussianModel(prompt_means(1, seed=5), std=0.5)
    z0 = clean_latent(model)
    clean_sigma = SD_CLEAN_SIGMA if convention != "euler" else None
    trajectory = invert(host, z0, ddim_uniform_schedule(12), convention, clean_sigma=clean_sigma)
    chosen, reassembly, reinversion = [9, 6], 3, 4
    recorder = {role: CallRecorder(getattr(host, role)) for role in ("original", "guided", "target")}
    counted = FunctionHost(**recorder)
    result = reassemble(
        counted,
        trajectory,
        chosen,
        _image_masks(),
        reassembly,
        reinversion,
        background_mode="preserve",
        feather=feather,
    )
    official = reassemble(host, trajectory, chosen, _image_masks(), reassembly, reinversion)

    weights = smoothstep_ramp(result.background, feather)
    torch.testing.assert_close(result.preserve_weights, weights, rtol=0, atol=1e-6)
    # The source's clean latent, from the convention's definition: official lands at sigma_min
    # (x_0 / sqrt(1 + sigma_min^2)); official_x0 and euler land at sigma 0 on z0 itself.
    source = (
        trajectory.latents[0] / math.sqrt(1 + SD_CLEAN_SIGMA**2) if clean_sigma else trajectory.latents[0]
    )
    torch.testing.assert_close(source, z0, rtol=1e-6, atol=1e-6)
    beyond = (weights == 1).expand_as(result.latent)
    assert beyond.any() and torch.equal(result.latent[beyond], source[beyond])  # exactly
    assert (official.latent[beyond] - source[beyond]).abs().max() > 1e-2  # official repaints it

    expected = _preserve_by_hand(
        host, trajectory, chosen, result.pair_regions, weights.expand_as(z0), reassembly, reinversion, source
    )
    torch.testing.assert_close(result.latent, expected, rtol=1e-5, atol=1e-5)
    inside = result.pair_regions.sum(0).bool().expand_as(result.latent)
    assert (result.latent[inside] - source[inside]).abs().max() > 1e-2  # the regions are edited

    # No model call more than the official reassembly: the same rows at the same levels.
    assert result.stats.to_dict() == official.stats.to_dict()
    assert [c["sigma"] for c in recorder["target"].calls] == trajectory.level_sigmas[1:8].flip(0).tolist()


def test_feather_ramp_is_the_smoothstep_of_the_distance_to_the_regions() -> None:
    from oir_core.reassembly import preserve_weights

    generator = torch.Generator().manual_seed(3)
    for trial in range(20):
        grid = (
            int(torch.randint(4, 40, (1,), generator=generator)),
            int(torch.randint(4, 40, (1,), generator=generator)),
        )
        background = (torch.rand(grid, generator=generator) > 0.03 * (1 + trial % 4)).float()
        if background.all():
            background[grid[0] // 2, grid[1] // 3] = 0.0
        for feather in (0, 1, 3, 7):
            weights = preserve_weights(background, feather)
            torch.testing.assert_close(weights, smoothstep_ramp(background, feather), rtol=0, atol=1e-6)
            assert torch.equal(weights[background == 0], torch.zeros(int((background == 0).sum())))
        assert torch.equal(preserve_weights(background, 0), background)
    # a hand value: one edited cell, feather 3 -> u = d / 4; the diagonal neighbour at sqrt(2)
    single = torch.ones(9, 9)
    single[4, 4] = 0
    weights = preserve_weights(single, 3)
    u = math.sqrt(2) / 4
    assert float(weights[5, 5]) == pytest.approx(3 * u**2 - 2 * u**3, abs=1e-6)
    assert float(weights[4, 8]) == 1.0 and float(weights[4, 6]) == pytest.approx(0.5)


def test_official_background_ignores_feather_and_is_unchanged() -> None:
    _, host, trajectory = _setup()
    default = reassemble(host, trajectory, [15, 12], _image_masks(), 5, 4)
    named = reassemble(
        host, trajectory, [15, 12], _image_masks(), 5, 4, background_mode="official", feather=5
    )
    assert torch.equal(default.latent, named.latent) and default.background_mode == "official"


@pytest.mark.parametrize(
    ("mode", "feather", "problem"),
    [("keep", 0, "background"), ("preserve", -1, "feather"), ("preserve", 99, "feather")],
)
def test_bad_background_inputs_are_refused_before_any_model_call(
    mode: str, feather: int, problem: str
) -> None:
    model, _, trajectory = _setup()
    recorder = CallRecorder(model.denoiser(0))
    host = FunctionHost(original=recorder, guided=recorder, target=recorder)
    with pytest.raises(OIRInputError, match=problem):
        reassemble(host, trajectory, [15, 12], _image_masks(), 5, 4, background_mode=mode, feather=feather)
    assert recorder.calls == []


def test_background_psnr_counts_only_the_cells_beyond_the_band() -> None:
    from oir_core.reassembly import background_psnr

    weights = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
    reference = torch.zeros(16, 16, 3)
    edited = reference.clone()
    edited[:8, 8:] = 1.0  # a cell of the band: not counted
    edited[8:, :8] = 0.7  # an edited cell: not counted
    edited[:8, :8] = 0.1  # a kept cell: MSE over both kept cells = 0.01 / 2
    assert background_psnr(edited, reference, weights) == pytest.approx(10 * math.log10(2 / 0.01), abs=1e-3)
    assert background_psnr(reference, reference, weights) == 100.0
    assert background_psnr(edited, reference, torch.zeros(2, 2)) is None
