"""Step sets, overrides and the coarse-to-fine search."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import SD_CLEAN_SIGMA, CallRecorder, clean_latent, prompt_means, walk_by_hand

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


def test_a_refused_override_shows_a_valid_one_to_type() -> None:
    """The fix names what to type: the entry's range and the typed text with the bad entry made valid."""
    with pytest.raises(OIRInputError) as refused:
        parse_step_overrides("auto, 51", 2, 50)
    assert refused.value.fix.startswith("write 'auto' or a whole step from 1 to 50 as entry 2")
    assert "e.g. 'auto, auto'" in str(refused.value)
    with pytest.raises(OIRInputError) as refused:
        parse_step_overrides("23, seven", 2, 30)
    assert "e.g. '23, auto'" in refused.value.fix
    example = refused.value.fix.split("e.g. '")[1].split("'")[0]
    assert parse_step_overrides(example, 2, 30) == [23, None]  # the example itself is accepted
    with pytest.raises(OIRInputError) as refused:
        parse_step_overrides("12, auto, 4", 2, 50)
    assert "write 2 comma-separated entries" in refused.value.fix
    assert "e.g. '12, auto'" in refused.value.fix


def test_a_refused_step_list_shows_what_to_type() -> None:
    with pytest.raises(OIRInputError) as refused:
        parse_steps("5, ten", 40)
    assert "e.g. '5, 10, 20-30:2' or '1-40'" in refused.value.fix
    with pytest.raises(OIRInputError) as refused:
        parse_steps("40-44", 42)
    assert refused.value.fix.startswith("remove [43, 44] from the list (e.g. '1-42' for every step)")


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


def _walk_by_hand(host, trajectory, start: int, levels: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """``[*latent_shape]`` the clean guided walk of ``x_start`` over ``levels`` (pair 0)."""
    assert levels[0] == start and levels[-1] == 0
    walked = walk_by_hand(host.guided, trajectory.latents[start], trajectory.level_sigmas, levels, 0)
    return trajectory.to_clean(walked[None])[0]


COARSE_50 = [*range(50, 4, -5), 3, 2, 1, 0]
"""Stride 5 with the fine tail of 3: the levels a coarse candidate from 50 visits."""


def test_coarse_to_fine_refines_around_the_ranked_best_and_counts_rows() -> None:
    steps, pairs = 50, 2
    host, recorder, trajectory = _analytic(steps, pairs)

    def rank(candidates):  # type: ignore[no-untyped-def]
        assert candidates.schedule.stride == 5 and candidates.schedule.tail == 3
        return [50, 15]

    progress: list[tuple[int, int]] = []
    run = coarse_to_fine_candidates(
        host, trajectory, pairs, rank, stride=5, radius=2, on_level=lambda d, t: progress.append((d, t))
    )
    assert run.coarse_best == [50, 15]
    assert run.coarse.steps == [1, *coarse_steps(50, 5)] * 2
    # t = 5m: m - 1 stride steps down to 5, one to 3, three fine ones; step 1: one row.
    per_pair = 1 + sum(m + 3 for m in range(1, 11))
    assert run.coarse.stats.rows == pairs * per_pair == 2 * 86
    assert run.coarse.stats.levels == len(COARSE_50) - 1  # 50, 45, ..., 5, 3, 2, 1
    # The refinement adds the window's steps the coarse round lacks, on the same sub-schedule.
    assert run.refined.for_pair(0)[0] == [48, 49]
    assert run.refined.for_pair(1)[0] == [13, 14, 16, 17]
    # 48 -> 45: one step, then 45's walk (9 + 3); 13 -> 10 then 10's (2 + 3); 16 -> 15 then 15's (3 + 3).
    assert run.refined.stats.rows == 2 * 13 + 2 * 6 + 2 * 7
    total_rows = run.coarse.stats.rows + run.refined.stats.rows
    assert sum(c["rows"] for c in recorder.calls) == total_rows == run.pool.stats.rows
    assert total_rows <= 0.12 * pairs * steps * (steps + 1) // 2
    refine_sigmas = [c["sigma"] for c in recorder.calls[run.coarse.stats.calls :]]
    levels = [49, 48, *range(45, 19, -5), 17, 16, 15, 14, 13, 10, 5, 3, 2, 1]
    assert refine_sigmas == pytest.approx(trajectory.level_sigmas[levels].tolist())
    done = [d for d, _ in progress]
    assert done == list(range(1, len(done) + 1))
    assert progress[-1][0] == progress[-1][1] == 13 + len(levels)
    # The pool is every candidate scored: the coarse round, then the refinement.
    assert run.pool.steps == run.coarse.steps + run.refined.steps
    assert run.pool.for_pair(1)[0] == sorted({1, *range(5, 51, 5), 13, 14, 16, 17})
    # Only walks that visit every level are exact: step 1 here (steps <= tail + 1 in general).
    assert [run.pool.steps[i] for i in range(len(run.pool.steps)) if run.pool.is_exact(i)] == [1, 1]
    # Approximations keep nothing for the reassembly, which walks the chosen step exactly.
    assert run.pool.kept == {} and run.pool.kept_latent(1, 15, 10) is None


def test_coarse_and_refined_candidates_walk_the_stride_schedule_then_a_fine_tail() -> None:
    from oir_core import generate_candidates

    host, _, trajectory = _analytic(20, 1)
    run = coarse_to_fine_candidates(host, trajectory, 1, lambda c: [10], stride=5, radius=2)
    exact = generate_candidates(host, trajectory, [[1]])
    torch.testing.assert_close(run.coarse.latents[:1], exact.latents)  # step 1 walks every level
    for start, levels in [
        (20, [20, 15, 10, 5, 3, 2, 1, 0]),
        (5, [5, 3, 2, 1, 0]),
    ]:
        row = run.coarse.steps.index(start)
        torch.testing.assert_close(run.coarse.latents[row], _walk_by_hand(host, trajectory, start, levels))
    for start, levels in [
        (8, [8, 5, 3, 2, 1, 0]),
        (12, [12, 10, 5, 3, 2, 1, 0]),
    ]:
        row = run.refined.steps.index(start)
        torch.testing.assert_close(run.refined.latents[row], _walk_by_hand(host, trajectory, start, levels))
    assert run.refined.steps == [8, 9, 11, 12]


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
    assert result.coarse is not None
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
