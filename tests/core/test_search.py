"""Step sets, overrides and the coarse-to-fine search."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import SD_CLEAN_SIGMA, CallRecorder, clean_latent, prompt_means

from oir_core import FunctionHost, OIRInputError, invert
from oir_core.analytic import GaussianModel, ddim_uniform_schedule
from oir_core.search import coarse_to_fine_candidates, search_step_sets
from oir_core.steps import (
    coarse_steps,
    format_step_overrides,
    parse_step_overrides,
    parse_steps,
    refine_steps,
)


def test_parse_steps_ranges_and_strides() -> None:
    assert parse_steps("1-5", 50) == [1, 2, 3, 4, 5]
    assert parse_steps("5, 10; 20-30:5, 10", 50) == [5, 10, 20, 25, 30]
    for bad, problem in [
        ("", "no steps"),
        ("3-1", "ascend"),
        ("a", "not a step"),
        ("0-3", "1..50"),
        ("49-51", "1..50"),
    ]:
        with pytest.raises(OIRInputError, match=problem):
            parse_steps(bad, 50)


def test_search_step_sets() -> None:
    assert search_step_sets("exhaustive", 4, 2) == [[1, 2, 3, 4], [1, 2, 3, 4]]
    assert search_step_sets("custom", 10, 1, "2-6:2") == [[2, 4, 6]]
    with pytest.raises(OIRInputError, match="search_mode"):
        search_step_sets("coarse_to_fine", 10, 1)


def test_overrides_round_trip_and_errors() -> None:
    assert parse_step_overrides("", 2, 50) == [None, None]
    assert parse_step_overrides("auto, 23", 2, 50) == [None, 23]
    assert parse_step_overrides("7", 3, 50) == [7, None, None]
    assert parse_step_overrides(format_step_overrides([None, 23, 4]), 3, 50) == [None, 23, 4]
    with pytest.raises(OIRInputError, match="pair 1"):
        parse_step_overrides("²", 1, 50)
    with pytest.raises(OIRInputError, match="2 entries for 1"):
        parse_step_overrides("1, 2", 1, 50)
    with pytest.raises(OIRInputError, match="pair 2"):
        parse_step_overrides("auto, 51", 2, 50)


def test_coarse_and_refine_sets() -> None:
    assert coarse_steps(50, 5) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert coarse_steps(12, 5) == [5, 10]
    assert refine_steps(2, 2, 50) == [1, 2, 3, 4]
    assert refine_steps(50, 2, 50) == [48, 49, 50]
    with pytest.raises(OIRInputError, match="coarse_stride"):
        coarse_steps(10, 0)
    with pytest.raises(OIRInputError, match="refine_radius"):
        refine_steps(5, -1, 10)


def _analytic(steps: int, pairs: int):  # type: ignore[no-untyped-def]
    model = GaussianModel(prompt_means(pairs + 1))
    recorder = CallRecorder(model.cfg_denoiser(negative=0, cfg=3.0, id_offset=1))
    host = FunctionHost(original=model.denoiser(0), guided=recorder, target=model.denoiser(0))
    trajectory = invert(
        host, clean_latent(model), ddim_uniform_schedule(steps), "official_x0", clean_sigma=SD_CLEAN_SIGMA
    )
    return host, recorder, trajectory


def test_coarse_to_fine_refines_around_the_ranked_best_and_counts_rows() -> None:
    steps, pairs = 50, 2
    host, recorder, trajectory = _analytic(steps, pairs)

    def rank(candidates):  # type: ignore[no-untyped-def]
        assert candidates.stride == 5
        return [50, 15]

    progress: list[tuple[int, int]] = []
    run = coarse_to_fine_candidates(
        host, trajectory, pairs, rank, stride=5, radius=2, on_level=lambda d, t: progress.append((d, t))
    )
    assert run.coarse_best == [50, 15]
    assert run.coarse.steps == [1, *coarse_steps(50, 5)] * 2
    # t <= stride: t full-resolution rows; deeper: (t - stride) / stride coarse rows + stride fine ones.
    per_pair = 1 + 5 + sum((t - 5) // 5 + 5 for t in range(10, 51, 5))
    assert run.coarse.stats.rows == pairs * per_pair == 2 * 96
    assert run.coarse.stats.levels == (50 - 5) // 5 + 5
    assert run.refined.for_pair(0)[0] == [48, 49, 50]
    assert run.refined.for_pair(1)[0] == [13, 14, 15, 16, 17]
    assert run.refined.stats.rows == (48 + 49 + 50) + (13 + 14 + 15 + 16 + 17)
    total_rows = run.coarse.stats.rows + run.refined.stats.rows
    assert total_rows <= 0.25 * pairs * steps * (steps + 1) // 2
    assert sum(c["rows"] for c in recorder.calls) == total_rows == run.pool.stats.rows
    done = [d for d, _ in progress]
    assert done == list(range(1, len(done) + 1))
    assert progress[-1][0] == progress[-1][1] == 14 + 50
    # The pool: refined rows, then the coarse rows they lack; only exact candidates may win.
    assert run.pool.for_pair(1)[0] == sorted({1, *range(5, 51, 5), 13, 14, 16, 17})
    for row, (pair, step) in enumerate(zip(run.pool.pair_ids, run.pool.steps)):
        refined = (pair, step) in set(zip(run.refined.pair_ids, run.refined.steps))
        assert run.eligible[row] == (refined or step <= 5)


def test_coarse_candidates_walk_the_stride_schedule_then_a_fine_tail() -> None:
    from oir_core import generate_candidates
    from oir_core.sampling import lockstep_denoise

    host, _, trajectory = _analytic(20, 1)
    run = coarse_to_fine_candidates(host, trajectory, 1, lambda c: [10], stride=5, radius=0)
    exact = generate_candidates(host, trajectory, [[1, 5]])
    torch.testing.assert_close(run.coarse.latents[:2], exact.latents)  # t <= stride: exact
    ids = torch.tensor([0])
    coarse_part = lockstep_denoise(
        host.guided, trajectory.level_sigmas, trajectory.latents[[20]], [20], 5, ids, 5
    )
    expected = lockstep_denoise(host.guided, trajectory.level_sigmas, coarse_part, [5], 0, ids)
    torch.testing.assert_close(run.coarse.latents[run.coarse.steps.index(20)], expected[0])


def test_anchored_choice_normalises_over_every_candidate_but_picks_an_eligible_one() -> None:
    from oir_core.metric import score_table

    steps = [1, 5, 9, 10, 11]
    editing = torch.tensor([0.0, 0.5, 0.80, 0.81, 0.82])
    fidelity = torch.tensor([0.0, -0.2, -0.5, -0.51, -0.60])
    anchored = score_table(steps, editing, fidelity, eligible=[True, False, True, True, True])
    alone = score_table(steps[2:], editing[2:], fidelity[2:])
    # Alone, the three refined candidates stretch 0.80..0.82 to 0..1 and step 9 wins on fidelity;
    # anchored by the coarse ones, these differences are small and the ranking follows the totals.
    assert anchored.chosen_step in (9, 10, 11) and anchored.steps == steps
    assert anchored.combined[2:] != alone.combined
    bad = score_table(steps, editing, fidelity, eligible=[False, True, False, False, False])
    assert bad.chosen_step == 5


def test_refined_candidates_equal_exhaustive_ones_at_the_same_steps() -> None:
    from oir_core import generate_candidates

    host, _, trajectory = _analytic(20, 1)
    run = coarse_to_fine_candidates(host, trajectory, 1, lambda c: [10], stride=5, radius=1)
    full = generate_candidates(host, trajectory, [[9, 10, 11]])
    torch.testing.assert_close(run.refined.latents, full.latents)


def test_ranking_contract_is_checked() -> None:
    host, _, trajectory = _analytic(20, 1)
    with pytest.raises(ValueError, match="best_steps returned"):
        coarse_to_fine_candidates(host, trajectory, 1, lambda c: [7], stride=5, radius=1)


def test_score_candidate_pairs_scores_each_pair_against_its_own_mask_and_text() -> None:
    from oir_core.candidates import CandidateSet
    from oir_core.metric import ColorTargetScorer, search_scores
    from oir_core.search import score_candidate_pairs

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 16, 16, 3, generator=generator)
    original = torch.rand(16, 16, 3, generator=generator)
    left, right = torch.zeros(16, 16), torch.zeros(16, 16)
    left[:, :8], right[:, 8:] = 1.0, 1.0
    # Interleaved and unsorted on purpose: pair 1 at positions 0 and 3, pair 0 at 1, 2, 4.
    candidates = CandidateSet(pair_ids=[1, 0, 0, 1, 0], steps=[4, 3, 1, 2, 2], latents=torch.zeros(5, 1))
    scorer = ColorTargetScorer()
    tables = score_candidate_pairs(scorer, candidates, images, original, [left, right], ["red", "blue"])
    assert [t.steps for t in tables] == [[1, 2, 3], [2, 4]]
    expected = search_scores(scorer, [1, 2, 3], images[[2, 4, 1]], original, left, "red")
    assert tables[0].combined == expected.combined and tables[0].chosen_step == expected.chosen_step
    expected = search_scores(scorer, [2, 4], images[[3, 0]], original, right, "blue")
    assert tables[1].combined == expected.combined
    with pytest.raises(ValueError, match="4 images for 5 candidates"):
        score_candidate_pairs(scorer, candidates, images[:4], original, [left, right], ["red", "blue"])


def _as_images(latents: torch.Tensor) -> torch.Tensor:
    """A stand-in decoder: ``[N, 4, h, w]`` latents -> ``[N, h, w, 3]`` images in 0..1."""
    return torch.sigmoid(latents[:, :3]).permute(0, 2, 3, 1)


def test_run_search_coarse_to_fine_ranks_with_the_given_metric() -> None:
    """The driver decodes between the rounds and ranks the coarse round with the metric it is given:
    fidelity alone (weights 0/1) must centre the refinement on the coarse step whose image is
    closest to the source outside the mask."""
    from oir_core.metric import ColorTargetScorer, SearchMetric
    from oir_core.search import run_search

    steps, pairs = 20, 2
    host, _recorder, trajectory = _analytic(steps, pairs)
    source = _as_images(trajectory.source_latent()[None])[0]
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    fidelity_only = SearchMetric(ColorTargetScorer(), (0.0, 1.0))
    result = run_search(
        host, trajectory, "coarse_to_fine", pairs, _as_images, stride=5, radius=1,
        metric=fidelity_only, original=source, masks=[mask, mask], score_texts=["red", "blue"],
    )  # fmt: skip
    assert result.coarse is not None and result.eligible is not None
    assert result.images.shape == (len(result.candidates.steps), 8, 8, 3)
    coarse_images = _as_images(result.coarse.latents)
    outside = (1.0 - mask)[None, :, :, None]
    for pair, best in enumerate(result.coarse_best):
        rows = result.coarse.indices(pair)
        errors = [((coarse_images[i] - source) ** 2 * outside).sum().item() for i in rows]
        assert best == result.coarse.steps[rows[errors.index(min(errors))]]
        window = set(range(max(1, best - 1), min(steps, best + 1) + 1))
        assert window <= {result.candidates.steps[i] for i in result.candidates.indices(pair)}


def test_run_search_refuses_before_any_model_call() -> None:
    from oir_core.search import run_search

    host, recorder, trajectory = _analytic(6, 1)
    with pytest.raises(OIRInputError, match="search_mode"):
        run_search(host, trajectory, "fastest", 1, _as_images)
    with pytest.raises(OIRInputError, match="connect 'scorer' and 'image'"):
        run_search(host, trajectory, "coarse_to_fine", 1, _as_images)
    assert recorder.calls == []


def test_coarse_to_fine_keeps_latents_for_its_refined_candidates_only() -> None:
    """The refined (exact) candidates carry their latent at R; the approximate coarse rows of the
    pool carry none, so an override to one of them makes the reassembly denoise."""
    from oir_core import generate_candidates

    steps, pairs, level = 50, 2, 10
    host, _, trajectory = _analytic(steps, pairs)
    run = coarse_to_fine_candidates(
        host, trajectory, pairs, lambda c: [50, 15], stride=5, radius=2, keep_levels=[level]
    )
    exact = generate_candidates(host, trajectory, [[49], [14]], keep_levels=[level])
    torch.testing.assert_close(run.pool.kept_latent(0, 49, level), exact.kept_latent(0, 49, level))
    torch.testing.assert_close(run.pool.kept_latent(1, 14, level), exact.kept_latent(1, 14, level))
    assert run.pool.kept_latent(1, 30, level) is None  # a coarse row: approximate
    assert run.pool.kept_latent(0, 49, level + 1) is None  # a level the search did not keep
    assert run.coarse.kept == {}
