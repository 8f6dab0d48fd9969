"""Every OIR node executed in a real ComfyUI with tiny in-memory models (ARCHITECTURE.md §7)."""

from __future__ import annotations

import copy
import sys
from typing import Any

import pytest
import torch
from oir_graph import IMAGE, STEPS, image_pixels, run_graph, run_node


def test_two_object_graph_runs_every_node(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder) -> None:
    out = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder)
    assert out["prompts"]["guided"] == ["a cat sitting next to a gift", "a dog sitting next to a cake"]
    assert out["prompts"]["target"] == "a cat sitting next to a cake"
    assert out["trajectory"].latents.shape == (STEPS + 1, 4, 8, 8)
    assert out["inverted"]["samples"].shape == (1, 4, 8, 8)
    candidates = out["candidates"]
    # official convention: the step-1 candidate is the source latent, no rows spent on it
    assert out["trajectory"].convention == "official"
    assert candidates.candidates.stats.rows == 2 * (STEPS * (STEPS + 1) // 2 - 1)
    assert candidates.candidates.stats.levels == STEPS
    assert candidates.images.shape == (2 * STEPS, IMAGE, IMAGE, 3)
    assert candidates.images.dtype == torch.uint8  # a quarter of float32 in ComfyUI's node cache
    assert out["grid"].shape[0] == 2 and out["plot"].shape[0] == 2
    chosen = out["chosen"]
    assert len(chosen.steps) == 2 and all(1 <= s <= STEPS for s in chosen.steps)
    assert chosen.steps == chosen.searched
    for table, step in zip(chosen.tables, chosen.steps):
        assert table.steps == list(range(1, STEPS + 1))
        assert (
            table.chosen_step == step == table.steps[max(range(STEPS), key=lambda i: (table.combined[i], -i))]
        )
    assert out["report"]["steps"] == list(chosen.steps)
    chart = out["score_ui"]["oir_scores"]
    assert [c["chosen"] for c in chart] == list(chosen.steps)
    # the grids travel under the pack's own key, so the frontend draws no second copy on the nodes
    assert out["score_ui"]["oir_images"] and out["search_ui"]["oir_images"]
    assert "images" not in out["score_ui"] and "images" not in out["search_ui"]
    assert out["edited"]["samples"].shape == (1, 4, 8, 8)
    assert out["image"].shape == (1, IMAGE, IMAGE, 3)
    assert torch.isfinite(out["image"]).all()


REASSEMBLY_STEP = 2  # run_graph's R


def _queued_prompt() -> dict[str, Any]:
    """The part of a queued prompt the search reads: its own trajectory link and the reassembly's
    constant R and r on the same trajectory (as ComfyUI hands it to the node as a hidden input)."""
    return {
        "9": {"class_type": "OIRParallelStepSearch", "inputs": {"trajectory": ["7", 0]}},
        "12": {
            "class_type": "OIRObjectReassembly",
            "inputs": {"trajectory": ["7", 0], "reassembly_step": REASSEMBLY_STEP, "reinversion_steps": 2},
        },
    }


def _hidden_inputs() -> Any:
    """What ComfyUI hands the search node as ``cls.hidden`` for :func:`_queued_prompt`."""
    from comfy_api.latest import io

    return io.HiddenHolder.from_dict({io.Hidden.prompt: _queued_prompt(), io.Hidden.unique_id: "9"})


@pytest.mark.parametrize("search_mode", ["exhaustive", "custom"])
def test_reassembly_reuses_the_searchs_latents(
    nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, search_mode: str
) -> None:
    """With the queued prompt in view the search keeps every exact candidate's latent at R; the
    reassembly then runs no pair-denoise rows for those pairs and gives the same edit."""
    rows: list[int] = []
    model = tiny_unet.clone()
    model.set_model_unet_function_wrapper(
        lambda apply, args: (
            rows.append(int(args["input"].shape[0])),
            apply(args["input"], args["timestep"], **args["c"]),
        )[1]
    )
    search = nodes["OIRParallelStepSearch"]
    plain = run_graph(nodes, model, tiny_clip, tiny_vae, scorer_folder, search_mode=search_mode)
    plain_rows = sum(rows)
    rows.clear()
    saved = search.__dict__.get("hidden", None)
    search.hidden = _hidden_inputs()
    try:
        reused = run_graph(nodes, model, tiny_clip, tiny_vae, scorer_folder, search_mode=search_mode)
    finally:
        search.hidden = saved
    chosen = reused["chosen"].steps
    assert chosen == plain["chosen"].steps
    sources = [p["source"] for p in reused["reassembly_ui"]["oir_reassembly"][0]["pairs"]]
    assert sources == ["search" if t > REASSEMBLY_STEP else "inverted" for t in chosen]
    before = plain["reassembly_ui"]["oir_reassembly"][0]["pairs"]
    assert [p["source"] for p in before] == [
        "denoised" if t > REASSEMBLY_STEP else "inverted" for t in chosen
    ]
    assert all("kept no latents" in p["why_denoised"] for p in before if p["source"] == "denoised")
    # the pair-denoise rows are gone: (t_k - R) levels per pair, cond and uncond
    assert plain_rows - sum(rows) == 2 * sum(max(t - REASSEMBLY_STEP, 0) for t in chosen)
    # The kept latents are the reassembly's own pair latents up to fp32 rounding of other batch
    # compositions (≤ 1e-5 relative: tests/core/test_reassembly.py); the random tiny UNet then
    # amplifies that through the re-inversion and the cfg-5 target denoise (seen: 1.2e-5 on 0.33).
    scale = float(plain["edited"]["samples"].detach().abs().max())
    diff = float((reused["edited"]["samples"] - plain["edited"]["samples"]).detach().abs().max())
    assert diff <= 5e-5 * scale


def test_reassembly_denoises_when_its_inputs_are_not_the_searchs(
    nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder
) -> None:
    """Another cfg (or model, prompt, trajectory) in the reassembly: the search's latents are not
    its path, so it denoises and says why."""
    search = nodes["OIRParallelStepSearch"]
    saved = search.__dict__.get("hidden", None)
    search.hidden = _hidden_inputs()
    try:
        out = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder)
    finally:
        search.hidden = saved
    _, ui = run_node(
        nodes["OIRObjectReassembly"],
        model=tiny_unet,
        trajectory=out["trajectory"],
        oir_edit=out["candidates"].edit,
        chosen_steps=out["chosen"],
        original=out["original"],
        target=out["target"],
        cfg=4.0,  # the search ran at 5.0
        reassembly_step=REASSEMBLY_STEP,
        reinversion_steps=2,
        overlap="later_wins",
        max_batch=0,
    )
    pairs = ui["oir_reassembly"][0]["pairs"]
    denoised = [p for p in pairs if p["source"] == "denoised"]
    assert denoised and all("cfg differ" in p["why_denoised"] for p in denoised)


def test_graph_is_deterministic_and_inputs_unchanged(
    nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder
) -> None:
    first = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder)
    original_copy = copy.deepcopy(first["original"])
    trajectory_copy = first["trajectory"].latents.clone()
    second = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder)
    assert torch.equal(first["edited"]["samples"], second["edited"]["samples"])
    assert torch.equal(first["candidates"].images, second["candidates"].images)
    assert torch.equal(trajectory_copy, first["trajectory"].latents)
    assert torch.equal(original_copy[0][0], first["original"][0][0])


def test_chunked_search_equals_unchunked(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder) -> None:
    full = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, max_batch=0)
    chunked = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, max_batch=3)
    # Batched convolutions round differently per batch size: equal to float32 accuracy, not bitwise.
    torch.testing.assert_close(
        chunked["candidates"].candidates.latents, full["candidates"].candidates.latents, atol=2e-4, rtol=1e-3
    )
    assert chunked["candidates"].candidates.stats.peak_rows <= 3
    assert chunked["candidates"].candidates.stats.calls > full["candidates"].candidates.stats.calls
    torch.testing.assert_close(chunked["edited"]["samples"], full["edited"]["samples"], atol=2e-4, rtol=1e-3)


def test_override_replaces_the_searched_step(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder) -> None:
    out = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, override="auto, 5")
    assert out["chosen"].steps[1] == 5 and out["chosen"].overridden == (False, True)
    assert out["chosen"].steps[0] == out["chosen"].searched[0]


def test_coarse_to_fine_search_runs_in_comfy(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder) -> None:
    out = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, search_mode="coarse_to_fine")
    bundle = out["candidates"]
    assert bundle.coarse is not None and bundle.coarse.steps == [1, 2, 4, 1, 2, 4]
    assert len(bundle.candidates.steps) == bundle.images.shape[0]
    for pair, best in enumerate(bundle.coarse_best):
        window = {s for s in (best - 1, best, best + 1) if 1 <= s <= STEPS}
        pool = {bundle.candidates.steps[i] for i in bundle.candidates.indices(pair)}
        assert pool == window | {1, 2, 4}  # the coarse round (stride 2) and the refinement
        table = out["chosen"].tables[pair]
        assert sorted(table.steps) == sorted(pool)  # the choice is the best of every candidate
        assert out["chosen"].steps[pair] == table.steps[table.combined.index(max(table.combined))]


def test_coarse_to_fine_edit_is_the_exhaustive_edit_at_the_chosen_steps(
    nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder
) -> None:
    """Coarse-to-fine only approximates its candidates; the reassembly walks the chosen steps
    exactly (and says so), so the edit equals an exhaustive search's edit overridden to those steps,
    and the reuse that needs the queued prompt does not apply."""
    search = nodes["OIRParallelStepSearch"]
    saved = search.__dict__.get("hidden", None)
    search.hidden = _hidden_inputs()
    try:
        fast = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, search_mode="coarse_to_fine")
    finally:
        search.hidden = saved
    chosen = fast["chosen"].steps
    pairs = fast["reassembly_ui"]["oir_reassembly"][0]["pairs"]
    assert [p["source"] for p in pairs] == ["denoised" if t > REASSEMBLY_STEP else "inverted" for t in chosen]
    assert all("only approximated" in p["why_denoised"] for p in pairs if p["source"] == "denoised")
    override = ", ".join(str(t) for t in chosen)
    full = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, override=override)
    assert full["chosen"].steps == chosen
    torch.testing.assert_close(fast["edited"]["samples"], full["edited"]["samples"], rtol=0, atol=0)


def test_coarse_round_ranks_with_the_metric_the_scorer_uses(
    monkeypatch, pack, nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder
) -> None:
    """One OIR_SCORER carries the CLIP, its modes and the weights to both rankings."""
    search = sys.modules[f"{pack.__name__}.oir_core.search"]  # the coarse-to-fine driver's namespace
    real, seen = search.score_candidate_pairs, []

    def spy(scorer: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append((scorer, kwargs.get("weights")))
        return real(scorer, *args, **kwargs)

    monkeypatch.setattr(search, "score_candidate_pairs", spy)
    settings = {"editing_weight": 0.8, "attention_mode": "hard", "fidelity_space": "pixels"}
    out = run_graph(
        nodes,
        tiny_unet,
        tiny_clip,
        tiny_vae,
        scorer_folder,
        "coarse_to_fine",
        metric={**settings, "mask_geometry": "centered"},
    )
    ((scorer, weights),) = seen  # the coarse round's ranking
    assert weights == pytest.approx((0.8, 0.2))
    assert (scorer.attention_mode, scorer.fidelity_space, scorer.mask_geometry) == (
        "hard",
        "pixels",
        "centered",
    )
    assert all(table.weights == pytest.approx((0.8, 0.2)) for table in out["chosen"].tables)


@pytest.mark.parametrize("fixture", ["tiny_unet_v", "tiny_unet_flow"])
def test_v_prediction_and_flow_models_run_end_to_end(
    request, nodes, tiny_clip, tiny_vae, scorer_folder, fixture
) -> None:
    model = request.getfixturevalue(fixture)
    out = run_graph(nodes, model, tiny_clip, tiny_vae, scorer_folder)
    expected = "euler" if fixture == "tiny_unet_flow" else "official"
    assert out["trajectory"].convention == expected
    assert torch.isfinite(out["edited"]["samples"]).all()
    assert torch.isfinite(out["candidates"].float_images()).all()


def _stage_walks(records: list[torch.Tensor]) -> set[tuple[float, ...]]:
    return {tuple(round(float(s), 5) for s in walk) for walk in records}


def test_lora_and_controlnet_act_in_inversion_search_and_reassembly(
    nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder
) -> None:
    import comfy.controlnet
    import node_helpers

    attention_walks: list[torch.Tensor] = []
    control_walks: list[torch.Tensor] = []
    control_branches: dict[tuple[float, ...], set[int]] = {}

    class ControlSpy(comfy.controlnet.ControlBase):
        def get_control(self, x_noisy, t, cond, batched_number, transformer_options):  # type: ignore[no-untyped-def]
            walk = transformer_options["sample_sigmas"].detach().cpu().clone()
            control_walks.append(walk)
            branches = control_branches.setdefault(tuple(round(float(s), 5) for s in walk), set())
            branches.update(transformer_options.get("cond_or_uncond", []))
            return None

        def copy(self) -> ControlSpy:
            twin = ControlSpy()
            self.copy_to(twin)
            return twin

    def attn1_spy(q, k, v, extra_options):  # type: ignore[no-untyped-def]
        attention_walks.append(extra_options["sample_sigmas"].detach().cpu().clone())
        return q, k, v

    key = "diffusion_model.out.2.weight"
    delta = (
        torch.randn(tiny_unet.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(5)) * 0.2
    )
    lora = tiny_unet.clone()
    lora.add_patches({key: ("diff", (delta,))}, 1.0)
    lora.set_model_attn1_patch(attn1_spy)
    spy = ControlSpy()

    def with_control(conditioning: list) -> list:
        return node_helpers.conditioning_set_values(
            conditioning, {"control": spy, "control_apply_to_uncond": True}
        )

    plain = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder)
    patched = run_graph(nodes, lora, tiny_clip, tiny_vae, scorer_folder, conditioning_hook=with_control)
    trajectory = patched["trajectory"]
    levels = trajectory.level_sigmas
    inversion = tuple(round(float(s), 5) for s in levels[1:])  # level 0 is replaced by the start sigma
    # Down to level 0, which the official convention lands at (its t = 0 level, not sigma 0).
    search = tuple(round(float(s), 5) for s in levels.flip(0))
    final = tuple(round(float(s), 5) for s in levels[: 2 + 2 + 1].flip(0))  # R + r = 4 levels down to 0
    for walks in (attention_walks, control_walks):
        seen = _stage_walks(walks)
        assert any(walk[1:] == inversion for walk in seen), "inversion"
        assert search in seen, "search"
        assert final in seen, "reassembly (target stage)"
    # The guided prompts (positive branch, 0) inherit the ControlNet from the original conditioning.
    assert 0 in control_branches[search] and 1 in control_branches[search]
    # The LoRA changed the result; the user's conditioning still carries the spy, unchanged.
    assert (patched["edited"]["samples"] - plain["edited"]["samples"]).abs().max() > 1e-4
    assert patched["original"][0][1]["control"] is spy


@pytest.mark.parametrize(
    ("sampling", "scheduler"),
    [("edm", "ddim_uniform"), ("v_prediction", "karras"), (None, "karras"), (None, "exponential")],
)
def test_auto_convention_is_euler_where_the_official_premise_fails(
    nodes, tiny_unet, prompts, tiny_vae, sampling, scheduler
) -> None:
    """EDM-style (sigma_data 0.5) and continuous sampling patched in with ComfyUI's own
    ModelSamplingContinuousEDM node, and schedules that start at sigma_min: auto picks euler, an
    explicit official is refused before any model call, and the inversion runs."""
    from comfy_extras.nodes_model_advanced import ModelSamplingContinuousEDM

    model = tiny_unet
    if sampling is not None:
        (model,) = ModelSamplingContinuousEDM().patch(tiny_unet, sampling, 80.0, 0.002)
    original = prompts["original"]
    latent = {"samples": tiny_vae.encode(image_pixels())}
    inputs = {"model": model, "latent": latent, "original": original, "steps": 6, "scheduler": scheduler}
    (trajectory, _), _ = run_node(nodes["OIRDDIMInversion"], convention="auto", **inputs)
    assert trajectory.convention == "euler" and torch.isfinite(trajectory.latents).all()
    with pytest.raises(Exception, match="convention") as refused:
        run_node(nodes["OIRDDIMInversion"], convention="official", **inputs)
    assert "official convention needs a DDPM t = 0 level" in str(refused.value)
