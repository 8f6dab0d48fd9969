"""Object reassembly and re-inversion (OIR step 5, ARCHITECTURE.md §4.5; paper §3.3).

1. Each pair ``k`` is denoised from its optimal level ``t_k*`` with its guided prompt down to the
   reassembly level ``R``, giving ``z_k``.
2. ``z = M_bg * x_R + sum_k M_k * z_k`` with the masks on the latent grid.
3. ``z`` is re-inverted ``r`` levels with the original prompt (CFG off).
4. The last ``R + r`` levels are denoised with the target prompt (CFG).

Rule for ``t_k* <= R`` (the official code crashes there): the pair starts at level ``R`` from the
inverted latent ``x_R`` itself, exactly as if ``t_k* = R`` (zero guided steps), so its region is
edited only by the shared target-prompt denoise of the last ``R + r`` levels. The effective start
of every pair is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .errors import OIRInputError
from .host import Host, Stage
from .inversion import InversionTrajectory
from .masks import MaskGeometry, OverlapRule, region_masks
from .sampling import (
    CallStats,
    LevelCallback,
    ascending_walk,
    invert_levels,
    lockstep_denoise,
    lockstep_rows,
    lockstep_total_rows,
    walked_levels,
)
from .steps import validate_reassembly


@dataclass(frozen=True)
class ReassemblyResult:
    """Everything the reassembly produced.

    Attributes:
        latent: ``[*latent_shape]`` the final clean latent (model space, after
            :meth:`InversionTrajectory.to_clean`: what the VAE decodes).
        merged: ``[*latent_shape]`` the reassembled latent ``z`` at level ``R`` (before re-inversion).
        pair_latents: ``[K, *latent_shape]`` each pair's ``z_k`` at level ``R``.
        effective_starts: per pair, the level it was actually denoised from (``max(t_k*, R)``).
        reassembly_step, reinversion_steps: the ``R`` and ``r`` used (``auto`` resolved).
        pair_regions: ``[K, h, w]`` exclusive binary pair regions on the latent grid.
        background: ``[h, w]`` binary background region.
        stats: model use of all four stages.
        pair_sources: per pair, where its ``z_k`` came from: ``"search"`` (the search's own latent
            at ``R``, no model call), ``"denoised"`` (denoised here from ``t_k*``) or ``"inverted"``
            (``t_k* <= R``: ``x_R`` itself).
    """

    latent: Tensor
    merged: Tensor
    pair_latents: Tensor
    effective_starts: list[int]
    pair_regions: Tensor
    background: Tensor
    stats: CallStats = field(default_factory=CallStats)
    reassembly_step: int = 0
    reinversion_steps: int = 0
    pair_sources: tuple[str, ...] = ()


def effective_starts(chosen_steps: Sequence[int], reassembly_step: int) -> list[int]:
    """The level each pair is denoised from: ``max(t_k*, R)`` (see the module's rule)."""
    return [max(int(t), reassembly_step) for t in chosen_steps]


def merge_regions(
    background_latent: Tensor, pair_latents: Tensor, pair_regions: Tensor, background: Tensor
) -> Tensor:
    """``z = M_bg * x_R + sum_k M_k * z_k`` (paper Eq. for reassembly).

    Args:
        background_latent: ``[C, ..., h, w]`` the inverted latent ``x_R``.
        pair_latents: ``[K, C, ..., h, w]``.
        pair_regions: ``[K, h, w]``; background: ``[h, w]`` (broadcast over channels and frames).
    """
    regions = pair_regions.to(pair_latents)
    spread = regions.reshape(regions.shape[0], *([1] * (pair_latents.ndim - 3)), *regions.shape[-2:])
    merged = background.to(background_latent) * background_latent
    return merged + (spread * pair_latents).sum(0)


def reassemble(
    host: Host,
    trajectory: InversionTrajectory,
    chosen_steps: Sequence[int],
    masks: Sequence[Tensor],
    reassembly_step: int = 10,
    reinversion_steps: int = 10,
    overlap: OverlapRule = "later_wins",
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
    mask_geometry: MaskGeometry = "official",
    searched: Sequence[Tensor | None] | None = None,
) -> ReassemblyResult:
    """Run OIR's reassembly: per-pair guided denoise to ``R``, merge, re-invert ``r``, target denoise.

    Args:
        trajectory: the shared inversion (``T`` steps).
        chosen_steps: ``K`` optimal steps ``t_k*`` in ``1..T``.
        masks: ``K`` masks ``[H, W]`` at any resolution (resized to the latent grid).
        reassembly_step: ``R`` (paper: 10 of 50); -1 = auto, ``round(T / 5)``.
        reinversion_steps: ``r`` (paper: 10 of 50); -1 = auto, ``round(T / 5)`` (capped so ``R + r <= T``).
        overlap: rule for overlapping masks (see :func:`oir_core.masks.region_masks`).
        mask_geometry: how masks reach the latent grid (``official``: binarised at >= 1/255 and
            sampled at each cell's top-left pixel, as the OIR code; ``centered``: > 0.5, cell centres).
        on_level: called after every level of every stage with ``(done, total)`` over all stages.
        searched: per pair, the search's latent ``[*latent_shape]`` of candidate ``(k, t_k*)`` at
            level ``R`` (:attr:`oir_core.candidates.CandidateSet.kept`), or ``None``. A pair with one
            skips step 1: the search already walked exactly that path (same model, prompts and
            levels), so ``z_k`` is that latent.
    """
    steps = trajectory.steps
    reassembly_step, reinversion_steps = validate_reassembly(steps, reassembly_step, reinversion_steps)
    if len(chosen_steps) != len(masks):
        raise OIRInputError(
            "chosen_steps",
            list(chosen_steps),
            f"{len(chosen_steps)} steps for {len(masks)} edit pairs",
            "give one chosen step per edit pair",
        )
    bad = [t for t in chosen_steps if not 1 <= int(t) <= steps]
    if bad:
        raise OIRInputError("chosen_steps", bad, f"steps must lie in 1..{steps}", "use the search's choice")
    grid_hw = trajectory.latent_shape[-2:]
    pair_regions, background = region_masks(
        masks, (int(grid_hw[0]), int(grid_hw[1])), overlap, geometry=mask_geometry
    )
    latents = trajectory.latents
    level_sigmas = trajectory.level_sigmas.to(latents.device)
    starts = effective_starts(chosen_steps, reassembly_step)
    reuse = list(searched) if searched is not None else [None] * len(starts)
    if len(reuse) != len(starts):
        raise ValueError(f"{len(reuse)} searched latents for {len(starts)} pairs")
    sources = tuple(
        "inverted" if start == reassembly_step else ("search" if kept is not None else "denoised")
        for start, kept in zip(starts, reuse)
    )
    walking = [k for k, source in enumerate(sources) if source == "denoised"]
    top = reassembly_step + reinversion_steps
    pair_levels = max((starts[k] for k in walking), default=reassembly_step) - reassembly_step
    total_levels = pair_levels + reinversion_steps + top
    stats = CallStats()
    progress = _StageProgress(on_level, total_levels)

    # 1. Each pair from its own start down to R, all pairs sharing calls (lockstep); a pair the
    # search already brought to R exactly is taken from it.
    index = torch.tensor(starts, dtype=torch.long, device=latents.device)
    pair_latents = latents.index_select(0, index).clone()
    for k, kept in enumerate(reuse):
        if sources[k] == "search":
            pair_latents[k] = kept.to(pair_latents)  # type: ignore[union-attr]
    if pair_levels > 0:
        walk_starts = [starts[k] for k in walking]
        rows = torch.tensor(walking, dtype=torch.long, device=latents.device)
        stage = Stage(
            role="guided",
            sigmas=level_sigmas.cpu()[walked_levels(walk_starts, reassembly_step)],
            rows=lockstep_rows(walk_starts, reassembly_step),
            latent_shape=trajectory.latent_shape,
            label="reassembly: objects",
            total_rows=lockstep_total_rows(walk_starts, reassembly_step),
        )
        walked = host.run(
            stage,
            lambda denoiser, host_max: lockstep_denoise(
                denoiser,
                level_sigmas,
                pair_latents.index_select(0, rows),
                walk_starts,
                end_level=reassembly_step,
                cond_ids=rows,
                max_batch=max_batch or host_max,
                stats=stats,
                on_level=progress,
            ),
        )
        pair_latents.index_copy_(0, rows, walked.to(pair_latents.dtype))

    # 2. Reassemble by masks at level R.
    merged = merge_regions(latents[reassembly_step], pair_latents, pair_regions, background)

    # 3. Re-invert r levels with the original prompt, CFG off.
    reinverted = merged
    if reinversion_steps > 0:
        start_sigma = trajectory.clean_sigma
        stage = Stage(
            role="original",
            sigmas=ascending_walk(level_sigmas.cpu(), reassembly_step, top, start_sigma),
            rows=1,
            latent_shape=trajectory.latent_shape,
            label="reassembly: re-inversion",
            total_rows=top - reassembly_step,
        )
        path = host.run(
            stage,
            lambda denoiser, host_max: invert_levels(
                denoiser,
                merged.unsqueeze(0),
                level_sigmas,
                reassembly_step,
                top,
                trajectory.convention,  # type: ignore[arg-type]
                start_sigma,
                max_batch=max_batch or host_max,
                stats=stats,
                on_level=progress,
            ),
        )
        reinverted = path[-1][0]

    # 4. Denoise the last R + r levels with the target prompt.
    final = reinverted
    if top > 0:
        stage = Stage(
            role="target",
            sigmas=level_sigmas.cpu()[walked_levels([top], 0)],
            rows=1,
            latent_shape=trajectory.latent_shape,
            label="reassembly: target",
            total_rows=top,
        )
        final = host.run(
            stage,
            lambda denoiser, host_max: lockstep_denoise(
                denoiser,
                level_sigmas,
                reinverted.unsqueeze(0),
                [top],
                end_level=0,
                max_batch=max_batch or host_max,
                stats=stats,
                on_level=progress,
            ),
        )[0]
    return ReassemblyResult(
        latent=trajectory.to_clean(final),
        merged=merged,
        pair_latents=pair_latents,
        effective_starts=starts,
        pair_regions=pair_regions,
        background=background,
        stats=stats,
        reassembly_step=reassembly_step,
        reinversion_steps=reinversion_steps,
        pair_sources=sources,
    )


class _StageProgress:
    """Turns per-stage ``(done, total)`` reports into one running count over all stages."""

    def __init__(self, on_level: LevelCallback | None, total: int) -> None:
        self.on_level = on_level
        self.total = total
        self.done = 0

    def __call__(self, _stage_done: int, _stage_total: int) -> bool | None:
        self.done += 1
        if self.on_level is None:
            return None
        return self.on_level(self.done, self.total)
