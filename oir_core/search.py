"""Which inversion steps to try, coarse-to-fine search, and manual step overrides.

The paper searches every step ``1..T`` (ARCHITECTURE.md §4.2); that costs ``T(T+1)/2`` model rows per
pair, about 25 full generations at ``T = 50``. The coarse-to-fine mode answers the reviewers'
request for a cheaper search:

1. *Coarse round*: candidates at step 1 and every ``stride``-th step. Candidate ``t`` walks the
   ``stride`` sub-schedule down to level ``stride`` and the last ``stride`` levels at full
   resolution (the "fine tail": the last levels shape the details both scores see), so it costs
   ``(t - stride) / stride + stride`` rows and candidates with ``t <= stride`` are exact.
2. *Refinement*: full-schedule candidates within ``radius`` of each pair's best coarse step.
3. *Choice*: every candidate scored so far sets the min-max ranges ("anchored" normalisation: a
   few refined candidates alone would stretch tiny differences to the full 0..1 range), and the
   winner is taken among the exact ones (refined, and coarse ones with ``t <= stride``).

For ``T = 50``, stride 5, radius 2 the mean cost is about 16 % of the exhaustive rows, and the
chosen step is within ±1 of the exhaustive choice in 97 % of the analytic benchmark's cases
(``benchmarks/bench_coarse_to_fine.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .candidates import (
    CandidateSet,
    exhaustive_steps,
    generate_candidates,
    split_source_rows,
    validate_start_steps,
)
from .edit import fit_image
from .errors import OIRInputError
from .host import Host, Stage
from .inversion import InversionTrajectory
from .metric import DEFAULT_WEIGHTS, CandidateScorer, ScoreTable, SearchMetric, search_scores
from .options import SEARCH_MODES
from .sampling import CallStats, LevelCallback, lockstep_denoise, lockstep_rows
from .steps import coarse_round_steps, parse_steps, refine_steps


def generate_coarse_candidates(
    host: Host,
    trajectory: InversionTrajectory,
    pair_count: int,
    stride: int,
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
) -> CandidateSet:
    """The coarse round: every pair at :func:`coarse_round_steps`, on the stride sub-schedule with a
    full-resolution tail (see the module docstring), all pairs sharing each model call.

    Returns:
        Pair-major candidates; ``stride`` records the sub-schedule.
    """
    steps = coarse_round_steps(trajectory.steps, stride)
    validate_start_steps([steps] * pair_count, trajectory.steps)
    pair_ids = [pair for pair in range(pair_count) for _ in steps]
    starts = steps * pair_count
    latents = trajectory.latents
    device = latents.device
    initial = latents.index_select(0, torch.tensor(starts, dtype=torch.long, device=device))
    cond_ids = torch.tensor(pair_ids, dtype=torch.long, device=device)
    level_sigmas = trajectory.level_sigmas.to(device)
    top = max(steps)
    walk = [*range(top, stride, -stride), *range(min(stride, top), -1, -1)]
    far_levels = (top - stride) // stride if top > stride else 0
    stats = CallStats()
    stage = Stage(
        role="guided",
        sigmas=level_sigmas.cpu()[walk],
        rows=lockstep_rows(starts, 0),
        latent_shape=trajectory.latent_shape,
        label="search: coarse round",
        # a row starting at s is evaluated at every walked level <= s except the last (level 0)
        total_rows=sum(1 for start in starts for level in walk[:-1] if level <= start),
    )

    def progress(offset: int) -> LevelCallback | None:
        if on_level is None:
            return None
        return lambda done, _total: on_level(offset + done, len(walk) - 1)

    def body(denoiser, host_max_batch):  # type: ignore[no-untyped-def]
        x = initial.clone()
        far = [i for i, start in enumerate(starts) if start > stride]
        if far:
            index = torch.tensor(far, dtype=torch.long, device=device)
            x[index] = lockstep_denoise(
                denoiser,
                level_sigmas,
                initial[index],
                [starts[i] for i in far],
                end_level=stride,
                cond_ids=cond_ids[index],
                stride=stride,
                max_batch=max_batch or host_max_batch,
                stats=stats,
                on_level=progress(0),
            )
        index = torch.tensor(walked, dtype=torch.long, device=device)
        x[index] = lockstep_denoise(
            denoiser,
            level_sigmas,
            x[index],
            [min(starts[i], stride) for i in walked],
            end_level=0,
            cond_ids=cond_ids[index],
            max_batch=max_batch or host_max_batch,
            stats=stats,
            on_level=progress(far_levels),
        )
        return x

    # The official convention's step-1 candidate is the source latent: no model rows for it.
    source_rows, walked = split_source_rows(trajectory, starts)
    clean = trajectory.to_clean(host.run(stage, body))
    if source_rows:
        clean[source_rows] = trajectory.source_latent().to(clean.dtype)
    return CandidateSet(pair_ids=pair_ids, steps=starts, latents=clean, stats=stats, stride=stride)


@dataclass(frozen=True)
class CoarseToFineRun:
    """Both rounds of a coarse-to-fine search and the pool the final choice is made from.

    Attributes:
        coarse: the coarse round (:func:`generate_coarse_candidates`).
        coarse_best: per pair, the best coarse step (from the ranking callback).
        refined: full-schedule candidates around each ``coarse_best``.
        pool: ``refined`` followed by the coarse candidates whose (pair, step) it lacks: every
            candidate scored, for the anchored normalisation.
        eligible: per ``pool`` row, whether it may be chosen (exact candidates only).
        kept_coarse: indices into ``coarse`` of the pool's coarse rows, in pool order.
    """

    coarse: CandidateSet
    coarse_best: list[int]
    refined: CandidateSet
    pool: CandidateSet
    eligible: list[bool]
    kept_coarse: list[int]


def merge_rounds(
    coarse: CandidateSet, refined: CandidateSet, stride: int
) -> tuple[CandidateSet, list[bool], list[int]]:
    """``(pool, eligible, kept_coarse)`` of :class:`CoarseToFineRun` from the two rounds."""
    have = set(zip(refined.pair_ids, refined.steps))
    kept = [i for i, key in enumerate(zip(coarse.pair_ids, coarse.steps)) if key not in have]
    index = torch.tensor(kept, dtype=torch.long, device=coarse.latents.device)
    coarse_rows = coarse.latents.index_select(0, index)
    pool = CandidateSet(
        pair_ids=refined.pair_ids + [coarse.pair_ids[i] for i in kept],
        steps=refined.steps + [coarse.steps[i] for i in kept],
        latents=torch.cat([refined.latents, coarse_rows]),
        stats=coarse.stats.add(refined.stats),
        stride=1,
        # only the refined (exact) rows carry the search's latents at the reassembly levels
        kept={level: torch.cat([at, torch.zeros_like(coarse_rows)]) for level, at in refined.kept.items()},
        kept_rows=(True,) * len(refined.steps) + (False,) * len(kept),
    )
    eligible = [True] * len(refined.steps) + [coarse.steps[i] <= stride for i in kept]
    return pool, eligible, kept


def coarse_to_fine_candidates(
    host: Host,
    trajectory: InversionTrajectory,
    pair_count: int,
    best_steps: Callable[[CandidateSet], Sequence[int]],
    stride: int = 5,
    radius: int = 2,
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
    keep_levels: Sequence[int] = (),
) -> CoarseToFineRun:
    """Coarse-to-fine candidate search (see the module docstring).

    Args:
        pair_count: ``K``.
        best_steps: ranks a candidate set: returns the best step of each pair (the host decodes and
            scores here, between the two sampling rounds, never inside one).
        stride: coarse step spacing and sub-schedule stride.
        radius: refinement half-width around the best coarse step.
        on_level: progress over both rounds; ``total`` is the sum of both rounds' levels.
        keep_levels: reassembly levels at which the refined (exact) candidates keep their latents.
    """
    if pair_count < 1:
        raise OIRInputError("edit_pairs", pair_count, "no edit pairs to search", "connect an OIR Edit Pair")
    steps = trajectory.steps
    coarse_set = coarse_round_steps(steps, stride)
    top = max(coarse_set)
    coarse_levels = (top - stride) // stride + min(stride, top) if top > stride else top
    deepest_refine = min(steps, top + radius)

    def coarse_progress(done: int, _total: int) -> bool | None:
        # The refinement's depth is unknown until the coarse round is scored; assume the deepest.
        return None if on_level is None else on_level(done, coarse_levels + deepest_refine)

    coarse = generate_coarse_candidates(
        host, trajectory, pair_count, stride, max_batch=max_batch, on_level=coarse_progress
    )
    best = [int(s) for s in best_steps(coarse)]
    if len(best) != pair_count or any(s not in coarse_set for s in best):
        raise ValueError(f"best_steps returned {best}; expected one of {coarse_set} per pair")
    refine_sets = [refine_steps(b, radius, steps) for b in best]
    refine_levels = max(max(s) for s in refine_sets)

    def refine_progress(done: int, _total: int) -> bool | None:
        return None if on_level is None else on_level(coarse_levels + done, coarse_levels + refine_levels)

    refined = generate_candidates(
        host,
        trajectory,
        refine_sets,
        stride=1,
        max_batch=max_batch,
        on_level=refine_progress,
        keep_levels=keep_levels,
    )
    pool, eligible, kept = merge_rounds(coarse, refined, stride)
    return CoarseToFineRun(
        coarse=coarse, coarse_best=best, refined=refined, pool=pool, eligible=eligible, kept_coarse=kept
    )


def score_candidate_pairs(
    scorer: CandidateScorer,
    candidates: CandidateSet,
    images: Tensor,
    original: Tensor,
    masks: Sequence[Tensor],
    score_texts: Sequence[str],
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    eligible: Sequence[bool] | None = None,
) -> list[ScoreTable]:
    """The search metric's full table for every pair (OIR step 4, ARCHITECTURE.md §4.4).

    Args:
        candidates: the candidate set (pair-major order is not required).
        images: ``[N, H, W, 3]`` the decoded candidates, in ``candidates`` order.
        original: ``[H, W, 3]`` the source image at the candidates' size.
        masks: ``K`` masks (any resolution); score_texts: ``K`` target phrases.
        eligible: per candidate, whether it may be chosen (default all; see
            :class:`CoarseToFineRun`).
    """
    if images.shape[0] != len(candidates.steps):
        raise ValueError(f"{images.shape[0]} images for {len(candidates.steps)} candidates")
    tables = []
    for pair, (mask, text) in enumerate(zip(masks, score_texts)):
        index = candidates.indices(pair)
        steps = [candidates.steps[i] for i in index]
        allowed = None if eligible is None else [eligible[i] for i in index]
        tables.append(
            search_scores(
                scorer, steps, images[index], original, mask, text, weights=weights, eligible=allowed
            )
        )
    return tables


def search_step_sets(mode: str, steps: int, pair_count: int, custom: str = "") -> list[list[int]]:
    """Per-pair step sets for the single-round modes (``exhaustive``, ``custom``)."""
    if mode == "exhaustive":
        return [exhaustive_steps(steps)] * pair_count
    if mode == "custom":
        return [parse_steps(custom, steps)] * pair_count
    raise OIRInputError("search_mode", mode, "not a single-round mode", f"use one of {SEARCH_MODES}")


@dataclass(frozen=True)
class SearchResult:
    """Everything a search produced, for the scorer and the previews.

    Attributes:
        candidates: the candidates to choose from (exhaustive/custom: all; coarse-to-fine: the pool).
        images: ``[N, H, W, 3]`` float 0..1, the decoded candidates in ``candidates`` order.
        eligible: per candidate, whether it may be chosen (coarse-to-fine), or ``None`` (all).
        coarse: the coarse round of a coarse-to-fine search, or ``None``.
        coarse_best: per pair, the best coarse step (coarse-to-fine), else empty.
    """

    candidates: CandidateSet
    images: Tensor
    eligible: list[bool] | None = None
    coarse: CandidateSet | None = None
    coarse_best: tuple[int, ...] = ()


def run_search(
    host: Host,
    trajectory: InversionTrajectory,
    mode: str,
    pair_count: int,
    decode: Callable[[Tensor], Tensor],
    *,
    custom_steps: str = "",
    stride: int = 5,
    radius: int = 2,
    metric: SearchMetric | None = None,
    original: Tensor | None = None,
    masks: Sequence[Tensor] = (),
    score_texts: Sequence[str] = (),
    on_level: LevelCallback | None = None,
    keep_levels: Sequence[int] = (),
) -> SearchResult:
    """OIR steps 2-3 in any mode; coarse-to-fine also ranks its coarse round (step 4) in between.

    Args:
        mode: one of :data:`SEARCH_MODES`.
        decode: ``[N, *latent_shape]`` clean latents -> ``[N, H, W, 3]`` images; called after each
            sampling round, never inside one (a host may have to load another model for it).
        custom_steps: the steps of ``custom`` (e.g. ``"5, 10, 20-40:2"``).
        stride, radius: coarse-to-fine's coarse spacing and refinement half-width.
        metric: coarse-to-fine only: the search metric the final choice will use, so the
            refinement window centres on the step that choice would make.
        original: coarse-to-fine only: the source image ``[H, W, 3]`` or ``[1, H, W, 3]``.
        masks, score_texts: coarse-to-fine only: each pair's mask and target phrase.
        keep_levels: reassembly levels ``R`` at which exactly computed candidates keep their latents
            (:attr:`oir_core.candidates.CandidateSet.kept`), so step 5 can skip its pair denoise.
    """
    if mode not in SEARCH_MODES:
        raise OIRInputError("search_mode", mode, "unknown mode", f"use one of {SEARCH_MODES}")
    if mode != "coarse_to_fine":
        starts = search_step_sets(mode, trajectory.steps, pair_count, custom_steps)
        candidates = generate_candidates(host, trajectory, starts, on_level=on_level, keep_levels=keep_levels)
        return SearchResult(candidates=candidates, images=decode(candidates.latents))
    if metric is None or original is None:
        raise OIRInputError(
            "search_mode", mode, "coarse_to_fine scores between rounds", "connect 'scorer' and 'image'"
        )
    coarse_images: list[Tensor] = []

    def best_steps(round_one: CandidateSet) -> list[int]:
        images = decode(round_one.latents)
        coarse_images.append(images)
        source = fit_image(original, (int(images.shape[1]), int(images.shape[2])))
        tables = score_candidate_pairs(
            metric.scorer, round_one, images, source, masks, score_texts, weights=metric.weights
        )
        return [table.chosen_step for table in tables]

    run = coarse_to_fine_candidates(
        host, trajectory, pair_count, best_steps, stride, radius, on_level=on_level, keep_levels=keep_levels
    )
    images = torch.cat([decode(run.refined.latents), coarse_images[0][run.kept_coarse]])
    return SearchResult(
        candidates=run.pool,
        images=images,
        eligible=list(run.eligible),
        coarse=run.coarse,
        coarse_best=tuple(run.coarse_best),
    )
