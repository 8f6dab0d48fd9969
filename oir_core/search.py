"""Which inversion steps to try, coarse-to-fine search, and manual step overrides.

The paper searches every step ``1..T`` (DESIGN.md §4.2); that costs ``T(T+1)/2`` model rows per
pair, about 25 full generations at ``T = 50``. The coarse-to-fine mode answers the reviewers'
request for a cheaper search: candidates at every ``stride``-th step are denoised on the matching
``stride`` sub-schedule (``t / stride`` rows each), scored, and the full-schedule candidates within
``radius`` of each pair's best coarse step are generated and scored for the final choice. For
``T = 50``, stride 5, radius 2 that is at most 55 + 5 * 50 = 305 rows per pair (24 % of 1,275).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from .candidates import CandidateSet, exhaustive_steps, generate_candidates
from .errors import OIRInputError
from .host import Host
from .inversion import InversionTrajectory
from .metric import DEFAULT_WEIGHTS, CandidateScorer, ScoreTable, search_scores
from .sampling import LevelCallback

SearchMode = Literal["exhaustive", "coarse_to_fine", "custom"]
SEARCH_MODES: tuple[str, ...] = ("exhaustive", "coarse_to_fine", "custom")

_RANGE = re.compile(r"^(\d+)\s*(?:-\s*(\d+)\s*(?::\s*(\d+))?)?$")


def parse_steps(text: str, steps: int, input_name: str = "custom_steps") -> list[int]:
    """Parse a step list such as ``"1-50"``, ``"5, 10, 20-30:2"`` into sorted unique steps in ``1..T``."""
    chosen: set[int] = set()
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        raise OIRInputError(
            input_name, text, "no steps given", f"write steps like '1-{steps}' or '5, 10, 20-30:2'"
        )
    for part in parts:
        match = _RANGE.match(part)
        if not match:
            raise OIRInputError(
                input_name, part, "not a step, range 'a-b' or strided range 'a-b:s'", "fix the list"
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        stride = int(match.group(3) or 1)
        if stride < 1 or last < first:
            raise OIRInputError(
                input_name, part, "ranges must ascend with a positive stride", "write e.g. '10-30:5'"
            )
        chosen.update(range(first, last + 1, stride))
    outside = sorted(s for s in chosen if not 1 <= s <= steps)
    if outside:
        raise OIRInputError(input_name, outside, f"steps must lie in 1..{steps}", "drop them or raise steps")
    return sorted(chosen)


def coarse_steps(steps: int, stride: int) -> list[int]:
    """Every ``stride``-th step ``stride, 2 stride, ... <= T`` (aligned with the stride sub-schedule)."""
    if stride < 1:
        raise OIRInputError("coarse_stride", stride, "must be at least 1", "use e.g. 5")
    if stride > steps:
        raise OIRInputError("coarse_stride", stride, f"larger than steps = {steps}", f"use at most {steps}")
    return list(range(stride, steps + 1, stride))


def refine_steps(best: int, radius: int, steps: int) -> list[int]:
    """Steps within ``radius`` of ``best``, clipped to ``1..T``."""
    if radius < 0:
        raise OIRInputError("refine_radius", radius, "must not be negative", "use e.g. 2")
    return list(range(max(1, best - radius), min(steps, best + radius) + 1))


@dataclass(frozen=True)
class CoarseToFineRun:
    """Both rounds of a coarse-to-fine search.

    Attributes:
        coarse: candidates on the stride sub-schedule at every ``stride``-th step.
        coarse_best: per pair, the best coarse step (from the ranking callback).
        refined: full-schedule candidates around each ``coarse_best``: the set to choose from.
    """

    coarse: CandidateSet
    coarse_best: list[int]
    refined: CandidateSet


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
    coarse_set = coarse_steps(steps, stride)
    coarse_levels = max(coarse_set) // stride

    def coarse_progress(done: int, _total: int) -> bool | None:
        # The refinement's depth is unknown until the coarse round is scored; assume the deepest.
        return (
            None if on_level is None else on_level(done, coarse_levels + min(steps, max(coarse_set) + radius))
        )

    coarse = generate_candidates(
        host,
        trajectory,
        [coarse_set] * pair_count,
        stride=stride,
        max_batch=max_batch,
        on_level=coarse_progress,
    )
    best = [int(s) for s in best_steps(coarse)]
    if len(best) != pair_count or any(s not in coarse_set for s in best):
        raise ValueError(f"best_steps returned {best}; expected one of {coarse_set} per pair")
    refine_sets = [refine_steps(b, radius, steps) for b in best]
    refine_levels = max(max(s) for s in refine_sets)

    def refine_progress(done: int, _total: int) -> bool | None:
        return None if on_level is None else on_level(coarse_levels + done, coarse_levels + refine_levels)

    refined = generate_candidates(
        host, trajectory, refine_sets, stride=1, max_batch=max_batch, on_level=refine_progress
    )
    return CoarseToFineRun(coarse=coarse, coarse_best=best, refined=refined)


def score_candidate_pairs(
    scorer: CandidateScorer,
    candidates: CandidateSet,
    images: Tensor,
    original: Tensor,
    masks: Sequence[Tensor],
    score_texts: Sequence[str],
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> list[ScoreTable]:
    """The search metric's full table for every pair (OIR step 4, DESIGN.md §4.4).

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


def search_step_sets(mode: str, steps: int, pair_count: int, custom: str = "") -> list[list[int]]:
    """Per-pair step sets for the single-round modes (``exhaustive``, ``custom``)."""
    if mode == "exhaustive":
        return [exhaustive_steps(steps)] * pair_count
    if mode == "custom":
        return [parse_steps(custom, steps)] * pair_count
    raise OIRInputError("search_mode", mode, "not a single-round mode", f"use one of {SEARCH_MODES}")


def parse_step_overrides(text: str, pair_count: int, steps: int) -> list[int | None]:
    """Parse the manual per-pair override: ``""`` or ``"auto, 23"`` (one entry per pair).

    ``auto`` (or an empty entry) keeps the search's choice. Fewer entries than pairs are padded
    with ``auto``; more are refused.
    """
    entries = [entry.strip().lower() for entry in text.split(",")] if text.strip() else []
    if len(entries) > pair_count:
        raise OIRInputError(
            "step_override",
            text,
            f"{len(entries)} entries for {pair_count} edit pairs",
            "give one entry per pair",
        )
    overrides: list[int | None] = []
    for pair, entry in enumerate(entries):
        if entry in ("", "auto"):
            overrides.append(None)
            continue
        if not entry.isdecimal() or not 1 <= int(entry) <= steps:
            raise OIRInputError(
                "step_override",
                entry,
                f"pair {pair + 1}: not 'auto' or a step in 1..{steps}",
                "fix that entry",
            )
        overrides.append(int(entry))
    return overrides + [None] * (pair_count - len(overrides))


def format_step_overrides(overrides: Sequence[int | None]) -> str:
    """The inverse of :func:`parse_step_overrides` (what the frontend writes into the widget)."""
    return ", ".join("auto" if step is None else str(step) for step in overrides)
