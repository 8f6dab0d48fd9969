"""Which inversion steps to try, coarse-to-fine search, and manual step overrides.

The paper searches every step ``1..T`` (ARCHITECTURE.md §4.2); that costs ``T(T+1)/2`` model rows per
pair, about 25 full generations at ``T = 50``. The coarse-to-fine mode answers the reviewers'
request for a cheaper search. It scores *approximate* candidates only: each candidate walks the
:class:`~oir_core.sampling.SubSchedule` ``(stride, tail=COARSE_TAIL)`` (``stride`` levels per model
call down to level ``COARSE_TAIL``, then every level: the last levels shape the details both scores
see), so candidate ``t`` costs about ``t / stride + COARSE_TAIL`` rows instead of ``t``.

1. *Coarse round*: step 1 (the unedited end of both scores) and every ``stride``-th step.
2. *Refinement*: the steps within ``radius`` of each pair's best coarse step, same sub-schedule.
3. *Choice*: the best of every candidate scored (the scores normalised over all of them).

The search only chooses; the chosen step's exact path is the reassembly's (OIR step 5 denoises pair
``k`` from ``t_k*`` to ``R`` on the full schedule), so the edit equals what the exhaustive search
gives for the same step. For ``T = 50``, stride 5, radius 2, ``R = 10`` a two-object edit costs 6.3×
a plain generation on average over where the search lands and 7.8× at worst (exhaustive: 52×), and
the chosen step is within ±1 of the exhaustive choice in 96 % of the analytic benchmark's cases
(``benchmarks/bench_coarse_to_fine.py``, ``bench_edit.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .candidates import CandidateSet, denoise_candidates, exhaustive_steps, generate_candidates
from .edit import fit_image
from .errors import OIRInputError
from .host import Host
from .inversion import InversionTrajectory
from .masks import check_mask_aspect
from .metric import DEFAULT_WEIGHTS, CandidateScorer, ScoreTable, SearchMetric, search_scores
from .options import SEARCH_MODES
from .sampling import LevelCallback, SubSchedule, walked_levels
from .steps import coarse_round_steps, parse_steps, refine_steps

COARSE_TAIL = 3
"""Levels ``3..0`` of every coarse-to-fine candidate are walked one at a time: the shortest tail that
keeps the analytic benchmark's ±1 agreement at or above 95 % (stride 5, radius 2; a coarse round
with a tail of 2 gives 94 %)."""


@dataclass(frozen=True)
class CoarseToFineRun:
    """Both rounds of a coarse-to-fine search and the pool the final choice is made from.

    Attributes:
        coarse: the coarse round.
        coarse_best: per pair, the best coarse step (from the ranking callback).
        refined: the candidates within ``radius`` of each ``coarse_best`` the coarse round lacks.
        pool: ``coarse`` followed by ``refined``: every candidate scored.
    """

    coarse: CandidateSet
    coarse_best: list[int]
    refined: CandidateSet
    pool: CandidateSet


def coarse_to_fine_candidates(
    host: Host,
    trajectory: InversionTrajectory,
    pair_count: int,
    best_steps: Callable[[CandidateSet], Sequence[int]],
    stride: int = 5,
    radius: int = 2,
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
) -> CoarseToFineRun:
    """Coarse-to-fine candidate search (see the module docstring).

    Args:
        pair_count: ``K``.
        best_steps: ranks a candidate set: returns the best step of each pair (the host decodes and
            scores here, between the two sampling rounds, never inside one).
        stride: coarse step spacing and sub-schedule stride.
        radius: refinement half-width around the best coarse step.
        on_level: progress over both rounds; ``total`` is the sum of both rounds' levels.
    """
    if pair_count < 1:
        raise OIRInputError("edit_pairs", pair_count, "no edit pairs to search", "connect an OIR Edit Pair")
    steps = trajectory.steps
    schedule = SubSchedule(stride=stride, tail=COARSE_TAIL)  # see the module docstring
    coarse_set = coarse_round_steps(steps, stride)
    coarse_levels = len(walked_levels(coarse_set, 0, schedule)) - 1
    # The refinement's depth is unknown until the coarse round is scored; assume the deepest.
    deepest = [s for s in refine_steps(coarse_set[-1], radius, steps) if s not in coarse_set]
    deepest_levels = len(walked_levels(deepest, 0, schedule)) - 1 if deepest else 0

    def coarse_progress(done: int, _total: int) -> bool | None:
        return None if on_level is None else on_level(done, coarse_levels + deepest_levels)

    coarse = generate_candidates(
        host,
        trajectory,
        [coarse_set] * pair_count,
        schedule=schedule,
        max_batch=max_batch,
        on_level=coarse_progress,
        label="search: coarse round",
    )
    best = [int(s) for s in best_steps(coarse)]
    if len(best) != pair_count or any(s not in coarse_set for s in best):
        raise ValueError(f"best_steps returned {best}; expected one of {coarse_set} per pair")
    rows = [
        (pair, step)
        for pair, b in enumerate(best)
        for step in refine_steps(b, radius, steps)
        if step not in coarse_set
    ]
    refine_levels = len(walked_levels([step for _, step in rows], 0, schedule)) - 1

    def refine_progress(done: int, _total: int) -> bool | None:
        return None if on_level is None else on_level(coarse_levels + done, coarse_levels + refine_levels)

    refined = denoise_candidates(
        host,
        trajectory,
        [pair for pair, _ in rows],
        [step for _, step in rows],
        schedule=schedule,
        max_batch=max_batch,
        on_level=refine_progress,
        label="search: refinement",
    )
    pool = CandidateSet(
        pair_ids=coarse.pair_ids + refined.pair_ids,
        steps=coarse.steps + refined.steps,
        latents=torch.cat([coarse.latents, refined.latents]),
        stats=coarse.stats.add(refined.stats),
        schedule=schedule,
    )
    return CoarseToFineRun(coarse=coarse, coarse_best=best, refined=refined, pool=pool)


def score_candidate_pairs(
    scorer: CandidateScorer,
    candidates: CandidateSet,
    images: Tensor,
    original: Tensor,
    masks: Sequence[Tensor],
    score_texts: Sequence[str],
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> list[ScoreTable]:
    """The search metric's full table for every pair (OIR step 4, ARCHITECTURE.md §4.4).

    Args:
        candidates: the candidate set (pair-major order is not required).
        images: ``[N, H, W, 3]`` the decoded candidates, in ``candidates`` order.
        original: ``[H, W, 3]`` the source image at the candidates' size.
        masks: ``K`` masks (any resolution); score_texts: ``K`` target phrases.
    """
    if images.shape[0] != len(candidates.steps):
        raise ValueError(f"{images.shape[0]} images for {len(candidates.steps)} candidates")
    tables = []
    for pair, (mask, text) in enumerate(zip(masks, score_texts)):
        index = candidates.indices(pair)
        steps = [candidates.steps[i] for i in index]
        tables.append(search_scores(scorer, steps, images[index], original, mask, text, weights=weights))
    return tables


def saved_8bit(image: Tensor) -> Tensor:
    """``image`` (float 0..1, any shape) as the 8-bit picture ComfyUI's SaveImage writes, back in 0..1.

    SaveImage stores ``clip(255 · x, 0, 255).astype(uint8)``: the product rounded in float32, then
    truncated. The same here (float32 product, clamp, floor), so a score of the result is the score
    of the PNG on disk; each value is an exact ``k / 255``, which the scorer reads back as level ``k``.
    """
    return torch.floor((image.detach().float() * 255.0).clamp(0.0, 255.0)) / 255.0


def edited_region_scores(
    scorer: CandidateScorer,
    image: Tensor,
    masks: Sequence[Tensor],
    score_texts: Sequence[str],
) -> list[float]:
    """The editing score ``S_e`` of one finished image, per pair (OIR step 4's metric, applied after step 5).

    Each pair's value is what the search records as ``S_e`` for a candidate equal to the saved
    picture: :func:`oir_core.metric.search_scores` on a one-candidate table, through the same scorer
    (so the same CLIP, attention mode, mask geometry and 8-bit reading). The picture is ``image`` as
    an image file stores it (:func:`saved_8bit`), so the number can be recomputed from the PNG. It
    stands in as its own original: ``S_ne`` is then 0 and unused. A finished edit scored this way
    says how well each reassembled object matches its target phrase, on the scale the search ranked
    candidates on.

    Args:
        scorer: the search metric's scorer (:class:`oir_core.metric.CandidateScorer`).
        image: ``[H, W, 3]`` or ``[1, H, W, 3]`` float 0..1, the decoded final image.
        masks: ``K`` masks ``[h, w]`` (any resolution of the same aspect ratio as ``image``).
        score_texts: ``K`` target phrases, in pair order.

    Returns:
        ``K`` raw ``S_e`` values (cosine similarities), in pair order.

    Raises:
        OIRInputError: not one image, non-finite pixels, no pairs, a mask/text count or aspect
            mismatch; all before the scorer runs.
    """
    if not isinstance(image, Tensor) or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise OIRInputError(
            "image",
            getattr(image, "shape", type(image).__name__),
            "must be one RGB image [1,H,W,3]",
            "connect the VAE Decode of the reassembled latent",
        )
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise OIRInputError(
                "image",
                f"batch of {image.shape[0]} images",
                "OIR scores one edit at a time",
                "pass one image",
            )
        image = image[0]
    if not bool(torch.isfinite(image).all()):
        raise OIRInputError(
            "image", "NaN/inf pixels", "cannot be scored", "decode in float32 or lower the CFG scale"
        )
    if not masks:
        raise OIRInputError("oir_edit", 0, "has no edit pairs to score", "connect the Guided Prompt Builder")
    if len(masks) != len(score_texts):
        raise OIRInputError(
            "oir_edit",
            f"{len(masks)} masks, {len(score_texts)} target phrases",
            "every pair needs its mask and its phrase",
            "connect the Guided Prompt Builder's oir_edit output",
        )
    height, width = image.shape[0], image.shape[1]
    for index, mask in enumerate(masks, start=1):
        check_mask_aspect(mask, (height, width), f"mask of edit pair {index}")
    saved = saved_8bit(image)
    single = saved[None]
    return [
        float(search_scores(scorer, [1], single, saved, mask, text).editing[0])
        for mask, text in zip(masks, score_texts)
    ]


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
        coarse: the coarse round of a coarse-to-fine search, or ``None``.
        coarse_best: per pair, the best coarse step (coarse-to-fine), else empty.
    """

    candidates: CandidateSet
    images: Tensor
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
        keep_levels: exhaustive/custom: reassembly levels ``R`` at which the candidates keep their
            latents (:attr:`oir_core.candidates.CandidateSet.kept`), so step 5 can skip its pair
            denoise (coarse-to-fine's candidates are approximate: step 5 walks the chosen path).
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
        host, trajectory, pair_count, best_steps, stride, radius, on_level=on_level
    )
    images = coarse_images[0]
    if run.refined.steps:
        images = torch.cat([images, decode(run.refined.latents)])
    return SearchResult(
        candidates=run.pool, images=images, coarse=run.coarse, coarse_best=tuple(run.coarse_best)
    )
