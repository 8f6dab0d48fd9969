"""Parallel candidate generation for the optimal-inversion-step search (OIR steps 2-3).

ARCHITECTURE.md §4.2-4.3: candidate ``c_{k,t}`` is the inverted latent ``x_t`` denoised to level 0 with
the guided prompt ``G_k`` of pair ``k`` (negative: the original prompt, CFG). Serially that costs
``T(T+1)/2`` model steps per pair; in lockstep all pairs and all active candidates at the same
sigma share one model call, so an exhaustive search over ``T`` steps takes ``T`` calls (before
chunking) with exactly the same work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import OIRInputError
from .host import Host, Stage
from .inversion import InversionTrajectory
from .sampling import (
    FULL_SCHEDULE,
    CallStats,
    LevelCallback,
    SubSchedule,
    lockstep_denoise,
    lockstep_rows,
    lockstep_total_rows,
    walked_levels,
)
from .steps import levels_phrase


@dataclass(frozen=True)
class CandidateSet:
    """Clean candidate latents of every (pair, step) searched.

    Attributes:
        pair_ids: ``N`` pair index of each candidate.
        steps: ``N`` inversion step ``t`` each candidate started from.
        latents: ``[N, *latent_shape]`` clean candidate latents in model space.
        stats: exact model use (``rows`` per CFG branch, ``levels`` = sequential model calls before
            chunking, ``calls`` after chunking).
        schedule: the levels the candidates were denoised on (:class:`~oir_core.sampling.SubSchedule`;
            the full schedule unless coarse-to-fine approximated them).
        kept: ``{R: [N, *latent_shape]}``: each candidate's latent at reassembly level ``R``, i.e.
            what the reassembly's own pair denoise from ``max(t, R)`` to ``R`` gives (step 5 reuses
            it instead of denoising again). Only for full-schedule (exact) candidates; memory: one
            more latent per candidate and level.
    """

    pair_ids: list[int]
    steps: list[int]
    latents: Tensor
    stats: CallStats = field(default_factory=CallStats)
    schedule: SubSchedule = FULL_SCHEDULE
    kept: dict[int, Tensor] = field(default_factory=dict)

    def kept_latent(self, pair: int, step: int, level: int) -> Tensor | None:
        """``[*latent_shape]`` candidate ``(pair, step)``'s latent at level ``level``, if kept."""
        if level not in self.kept:
            return None
        for i, (p, s) in enumerate(zip(self.pair_ids, self.steps)):
            if p == pair and s == step:
                return self.kept[level][i]
        return None

    def is_exact(self, index: int) -> bool:
        """Whether candidate ``index`` was denoised on every level (what the exhaustive search computes)."""
        return self.schedule.is_exact(self.steps[index])

    @property
    def pair_count(self) -> int:
        return max(self.pair_ids, default=-1) + 1

    def indices(self, pair: int) -> list[int]:
        """Positions of one pair's candidates in this set, ordered by step."""
        return sorted((i for i, p in enumerate(self.pair_ids) if p == pair), key=lambda i: self.steps[i])

    def for_pair(self, pair: int) -> tuple[list[int], Tensor]:
        """``(steps, [n, *latent_shape] latents)`` of one pair, ordered by step."""
        index = self.indices(pair)
        rows = torch.tensor(index, dtype=torch.long, device=self.latents.device)
        return [self.steps[i] for i in index], self.latents.index_select(0, rows)


def exhaustive_steps(steps: int) -> list[int]:
    """Every inversion step ``1..T`` (the paper's search set)."""
    return list(range(1, steps + 1))


def validate_start_steps(starts: Sequence[Sequence[int]], steps: int) -> list[list[int]]:
    """Check per-pair start steps: integers in ``1..T``, unique."""
    if not starts:
        raise OIRInputError("edit_pairs", [], "no edit pairs to search", "connect at least one OIR Edit Pair")
    checked: list[list[int]] = []
    for pair, pair_steps in enumerate(starts):
        values = [int(s) for s in pair_steps]
        if not values:
            raise OIRInputError(
                "search_steps", f"pair {pair}: []", "no steps to search", "give at least one step in 1..T"
            )
        bad = [s for s in values if not 1 <= s <= steps]
        if bad:
            raise OIRInputError(
                "search_steps",
                f"pair {pair}: {bad}",
                f"steps must lie in 1..{steps} ({levels_phrase(steps)})",
                f"remove {bad} (steps lie in 1..{steps})",
            )
        if len(set(values)) != len(values):
            raise OIRInputError(
                "search_steps",
                f"pair {pair}: {values}",
                "repeated steps",
                f"list each step once, e.g. {sorted(set(values))}",
            )
        checked.append(sorted(values))
    return checked


def source_is_step_one(trajectory: InversionTrajectory) -> bool:
    """Whether the step-1 candidate is the source latent itself (the ``official`` convention).

    The official candidate generation overwrites its first candidate with the clean inverted latent
    (``edited_latents[0] = all_latents[0]``) and its selection returns ``index + 1``: "step 1" is the
    unedited reconstruction, and no model call is spent on it.
    """
    return trajectory.convention == "official"


def split_source_rows(trajectory: InversionTrajectory, starts: Sequence[int]) -> tuple[list[int], list[int]]:
    """``(source rows, walked rows)``: positions in ``starts`` whose candidate is the source latent
    (step 1 under :func:`source_is_step_one`) and the positions that are really denoised."""
    source = [i for i, start in enumerate(starts) if start == 1 and source_is_step_one(trajectory)]
    skipped = set(source)
    return source, [i for i in range(len(starts)) if i not in skipped]


def generate_candidates(
    host: Host,
    trajectory: InversionTrajectory,
    starts: Sequence[Sequence[int]],
    schedule: SubSchedule = FULL_SCHEDULE,
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
    keep_levels: Sequence[int] = (),
    label: str = "search",
) -> CandidateSet:
    """Denoise every candidate ``c_{k,t}`` to level 0 in lockstep (OIR steps 2-3).

    Args:
        trajectory: the shared inversion (``T`` steps).
        starts: per pair ``k``, the inversion steps ``t`` to try (``1..T``).
        schedule: the levels each candidate walks; the default is the paper's full ``t``-step
            denoise, a :class:`~oir_core.sampling.SubSchedule` approximates (coarse-to-fine).
        max_batch: rows per model call (``None``: the host's limit).
        on_level: progress callback after each level; may abort.
        keep_levels: reassembly levels ``R`` (``1..T-1``) at which to keep every candidate's latent
            (:attr:`CandidateSet.kept`); ignored for approximate candidates (not the full schedule).
        label: the stage's name for progress UIs.

    Returns:
        A :class:`CandidateSet` ordered pair-major, then by step, of clean latents
        (:meth:`InversionTrajectory.to_clean`). For an exhaustive search of ``K`` pairs,
        ``stats.rows == K * T * (T + 1) / 2`` and ``stats.levels == T`` (``official``: ``K`` rows
        fewer, see :func:`source_is_step_one`).
    """
    checked = validate_start_steps(starts, trajectory.steps)
    pair_ids = [pair for pair, pair_steps in enumerate(checked) for _ in pair_steps]
    steps = [step for pair_steps in checked for step in pair_steps]
    return denoise_candidates(
        host, trajectory, pair_ids, steps, schedule, max_batch, on_level, keep_levels, label
    )


def denoise_candidates(
    host: Host,
    trajectory: InversionTrajectory,
    pair_ids: Sequence[int],
    steps: Sequence[int],
    schedule: SubSchedule = FULL_SCHEDULE,
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
    keep_levels: Sequence[int] = (),
    label: str = "search",
) -> CandidateSet:
    """:func:`generate_candidates` for already checked rows: candidate ``i`` is pair ``pair_ids[i]``
    at step ``steps[i]`` (any order, possibly none)."""
    pair_ids, steps = [int(p) for p in pair_ids], [int(s) for s in steps]
    latents = trajectory.latents
    source_rows, walked = split_source_rows(trajectory, steps)
    walk_steps = [steps[i] for i in walked]
    index = torch.tensor(walk_steps, dtype=torch.long, device=latents.device)
    initial = latents.index_select(0, index)
    cond_ids = torch.tensor([pair_ids[i] for i in walked], dtype=torch.long, device=latents.device)
    level_sigmas = trajectory.level_sigmas.to(latents.device)
    stats = CallStats()
    keep = (
        sorted({int(level) for level in keep_levels if 0 < int(level) < trajectory.steps})
        if schedule.is_full
        else []
    )
    walked_kept: dict[int, Tensor] = {}
    clean = torch.empty((len(steps), *trajectory.latent_shape), dtype=latents.dtype, device=latents.device)
    if source_rows:
        clean[source_rows] = trajectory.source_latent().to(latents.dtype)
    if walked:
        stage = Stage(
            role="guided",
            sigmas=level_sigmas.cpu()[walked_levels(walk_steps, 0, schedule)],
            rows=lockstep_rows(walk_steps, 0),
            latent_shape=trajectory.latent_shape,
            label=label,
            total_rows=lockstep_total_rows(walk_steps, 0, schedule),
        )

        def body(denoiser, host_max_batch):  # type: ignore[no-untyped-def]
            return lockstep_denoise(
                denoiser,
                level_sigmas,
                initial,
                walk_steps,
                end_level=0,
                cond_ids=cond_ids,
                schedule=schedule,
                max_batch=max_batch or host_max_batch,
                stats=stats,
                on_level=on_level,
                keep_levels=keep,
                kept=walked_kept,
            )

        clean[walked] = trajectory.to_clean(host.run(stage, body))
    kept = {level: _kept_at(level, trajectory, steps, walked, walked_kept) for level in keep}
    return CandidateSet(
        pair_ids=pair_ids, steps=steps, latents=clean, stats=stats, schedule=schedule, kept=kept
    )


def _kept_at(
    level: int,
    trajectory: InversionTrajectory,
    steps: Sequence[int],
    walked: Sequence[int],
    walked_kept: dict[int, Tensor],
) -> Tensor:
    """``[N, *latent_shape]`` every candidate's latent at ``level`` by the reassembly's rule: the
    walked state for a start above ``level``, the inverted ``x_level`` itself otherwise."""
    latents = trajectory.latents
    out = latents[level].unsqueeze(0).repeat(len(steps), *([1] * (latents.ndim - 1)))
    above = [row for row, i in enumerate(walked) if steps[i] > level]
    if above:
        rows = torch.tensor(above, dtype=torch.long, device=latents.device)
        targets = torch.tensor([walked[row] for row in above], dtype=torch.long, device=latents.device)
        out.index_copy_(0, targets, walked_kept[level].index_select(0, rows).to(out.dtype))
    return out
