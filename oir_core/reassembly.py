"""Object reassembly and re-inversion (OIR step 5, ARCHITECTURE.md §4.5; paper §3.3).

1. Each pair ``k`` is denoised from its optimal level ``t_k*`` with its guided prompt down to the
   reassembly level ``R``, giving ``z_k`` (:func:`_denoise_objects_to_reassembly_step`).
2. ``z = M_bg * x_R + sum_k M_k * z_k`` with the masks on the latent grid (:func:`merge_regions`).
3. ``z`` is re-inverted ``r`` levels with the original prompt (CFG off; :func:`_reinvert_merged`).
4. The last ``R + r`` levels are denoised with the target prompt (CFG; :func:`_denoise_with_target`).

:func:`reassemble` checks every input first (:func:`plan_reassembly`), then runs the four steps.

``background="preserve"`` (not in the paper, which repaints the whole latent in steps 3-4): after
every step of 3 and 4 the latent outside the edited regions is replaced by the inversion's own
latent at the level the step reached (blended-latent style), ``x <- w * x_level + (1 - w) * x``,
with the weights :func:`preserve_weights` (``feather`` cells of smooth ramp next to the regions,
0 inside them). At level 0 the background is the source's landing state
(:meth:`InversionTrajectory.landing_state`), so the final latent is ``z0`` there. No model call
is added.

Rule for ``t_k* <= R`` (the official code crashes there): the pair starts at level ``R`` from the
inverted latent ``x_R`` itself, exactly as if ``t_k* = R`` (zero guided steps), so its region is
edited only by the shared target-prompt denoise of the last ``R + r`` levels. The effective start
of every pair is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import OIRInputError
from .host import Host, Stage
from .inversion import InversionTrajectory
from .masks import MaskGeometry, OverlapRule, region_masks
from .sampling import (
    CallStats,
    LatentConstraint,
    LevelCallback,
    ascending_walk,
    invert_levels,
    lockstep_denoise,
    lockstep_rows,
    lockstep_total_rows,
    walked_levels,
)
from .steps import levels_phrase, validate_background, validate_reassembly


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
        background_mode: ``"official"`` or ``"preserve"`` (see the module).
        preserve_weights: ``[h, w]`` the weight of the inversion's latent per cell under
            ``preserve`` (:func:`preserve_weights` of ``background`` and ``feather``; 1 beyond the
            feather band, also reported under ``official`` so both are measured on the same cells).
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
    background_mode: str = "official"
    preserve_weights: Tensor | None = None


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


def preserve_weights(background: Tensor, feather: int) -> Tensor:
    """``[h, w]`` how much of the inversion's latent ``preserve`` keeps in each latent cell.

    ``d`` is the Euclidean distance from a cell's centre to the nearest edited cell's centre, in
    cells (0 inside the edited regions). The weight is the smoothstep ``3u^2 - 2u^3`` of
    ``u = min(d / (feather + 1), 1)``: 0 in the edited regions (never overwritten), 1 from
    ``feather + 1`` cells on, a ramp with zero slope at both ends in between. ``feather = 0`` gives the
    hard background mask itself (every background cell has ``d >= 1``).

    Args:
        background: ``[h, w]`` 0/1, 1 where no pair claims the cell.
        feather: ramp width in latent cells, ``0..MAX_FEATHER``.
    """
    edited = background < 0.5
    if feather == 0 or not edited.any():
        return (~edited).float()
    reach = int(feather) + 1
    height, width = edited.shape
    padded = F.pad(edited[None, None].float(), (reach, reach, reach, reach))[0, 0] > 0.5
    distance = torch.full(edited.shape, float(reach), device=background.device)
    # Distances below ``reach`` only matter (beyond it the weight is 1): scan the offsets inside it.
    for dy in range(-reach + 1, reach):
        for dx in range(-reach + 1, reach):
            length = math.hypot(dy, dx)
            if length >= reach:
                continue
            near = padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
            distance = torch.where(near, distance.clamp(max=length), distance)
    ramp = (distance / reach).clamp(0.0, 1.0)
    return ramp * ramp * (3.0 - 2.0 * ramp)


def background_constraint(trajectory: InversionTrajectory, weights: Tensor) -> LatentConstraint:
    """``preserve``'s blend after each step: ``x <- w * b_level + (1 - w) * x``.

    ``b_level`` is the inversion's latent at that level, the landing state
    (:meth:`InversionTrajectory.landing_state`) at level 0. ``weights``: ``[h, w]``, broadcast
    over rows, channels and frames; exact where they are 0 or 1.
    """

    def blend(level: int, x: Tensor) -> Tensor:
        kept = trajectory.landing_state() if level == 0 else trajectory.latents[level]
        w = weights.to(x).reshape(*([1] * (x.ndim - 2)), *weights.shape)
        return w * kept.to(x) + (1.0 - w) * x

    return blend


def background_psnr(edited: Tensor, reference: Tensor, weights: Tensor) -> float | None:
    """PSNR (dB) of ``edited`` against ``reference`` over the pixels of cells whose weight is 1.

    Args:
        edited, reference: ``[H, W, 3]`` images in 0..1 (``H, W`` whole multiples of ``h, w``).
        weights: ``[h, w]`` :func:`preserve_weights` (the cells beyond the feather band count).

    Returns:
        ``10 log10(1 / MSE)`` over those pixels and channels, at most 100 (MSE floored at 1e-10:
        identical pixels), or ``None`` when no cell lies beyond the band.
    """
    kept = weights >= 1.0
    if not kept.any():
        return None
    scale = (edited.shape[0] // weights.shape[0], edited.shape[1] // weights.shape[1])
    pixels = kept.repeat_interleave(scale[0], 0).repeat_interleave(scale[1], 1).to(edited.device)
    error = (edited.detach().float() - reference.detach().float().to(edited.device))[pixels]
    mse = max(float((error**2).mean()), 1e-10)
    return round(10.0 * math.log10(1.0 / mse), 3)


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
    background_mode: str = "official",
    feather: int = 0,
) -> ReassemblyResult:
    """Run OIR's reassembly: per-pair guided denoise to ``R``, merge, re-invert ``r``, target denoise.

    Every input is checked (:func:`plan_reassembly`) before the first model call; then the four
    steps of the module run (:func:`_run_reassembly`).

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
        background_mode: ``"official"`` (paper) or ``"preserve"``: the inversion's latent outside
            the regions at every level of steps 3-4 (see the module).
        feather: ``preserve``'s boundary ramp in latent cells (:func:`preserve_weights`; 0 = hard).
    """
    plan = plan_reassembly(
        trajectory,
        chosen_steps,
        masks,
        reassembly_step,
        reinversion_steps,
        overlap,
        mask_geometry,
        searched,
        background_mode,
        feather,
    )
    return _run_reassembly(host, trajectory, plan, max_batch, on_level)


@dataclass(frozen=True)
class ReassemblyPlan:
    """What the reassembly will do, settled from checked inputs before any model call.

    Attributes:
        reassembly_step, reinversion_steps: ``R`` and ``r`` (``auto`` resolved).
        starts: per pair, the level it is denoised from, ``max(t_k*, R)`` (:func:`effective_starts`).
        reuse: per pair, the search's latent ``[*latent_shape]`` at ``R``, or ``None``.
        sources: per pair, ``"search"``, ``"denoised"`` or ``"inverted"`` (:class:`ReassemblyResult`).
        pair_regions: ``[K, h, w]`` exclusive binary pair regions on the latent grid.
        background: ``[h, w]`` binary background region.
        background_mode, feather: ``"official"`` or ``"preserve"``, and the ramp width (checked).
    """

    reassembly_step: int
    reinversion_steps: int
    starts: list[int]
    reuse: list[Tensor | None]
    sources: tuple[str, ...]
    pair_regions: Tensor
    background: Tensor
    background_mode: str
    feather: int

    @property
    def top(self) -> int:
        """``R + r``: the level the re-inversion reaches and the target denoise starts from."""
        return self.reassembly_step + self.reinversion_steps

    @property
    def walking(self) -> list[int]:
        """The pairs step 1 denoises here (neither reused from the search nor starting at ``R``)."""
        return [k for k, source in enumerate(self.sources) if source == "denoised"]

    @property
    def total_levels(self) -> int:
        """Sequential levels of all stages (steps 1, 3 and 4), for the progress count."""
        pair_levels = max((self.starts[k] for k in self.walking), default=self.reassembly_step)
        return pair_levels - self.reassembly_step + self.reinversion_steps + self.top


def plan_reassembly(
    trajectory: InversionTrajectory,
    chosen_steps: Sequence[int],
    masks: Sequence[Tensor],
    reassembly_step: int,
    reinversion_steps: int,
    overlap: OverlapRule,
    mask_geometry: MaskGeometry,
    searched: Sequence[Tensor | None] | None,
    background_mode: str,
    feather: int,
) -> ReassemblyPlan:
    """Check :func:`reassemble`'s inputs (same meanings) and settle ``R``, ``r``, regions and starts.

    Raises:
        OIRInputError: ``R``/``r``, the background mode or feather out of range, not one chosen
            step per mask, a chosen step outside ``1..T``, masks the overlap rule refuses.
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
    background_mode, feather = validate_background(background_mode, feather)
    bad = [t for t in chosen_steps if not 1 <= int(t) <= steps]
    if bad:
        raise OIRInputError(
            "chosen_steps",
            bad,
            f"steps must lie in 1..{steps} ({levels_phrase(steps)})",
            "use the search's choice (leave step_override empty)",
        )
    grid_hw = trajectory.latent_shape[-2:]
    pair_regions, background = region_masks(
        masks, (int(grid_hw[0]), int(grid_hw[1])), overlap, geometry=mask_geometry
    )
    starts = effective_starts(chosen_steps, reassembly_step)
    reuse = list(searched) if searched is not None else [None] * len(starts)
    if len(reuse) != len(starts):
        raise ValueError(f"{len(reuse)} searched latents for {len(starts)} pairs")
    sources = tuple(
        "inverted" if start == reassembly_step else ("search" if kept is not None else "denoised")
        for start, kept in zip(starts, reuse)
    )
    return ReassemblyPlan(
        reassembly_step,
        reinversion_steps,
        starts,
        reuse,
        sources,
        pair_regions,
        background,
        background_mode,
        feather,
    )


@dataclass(frozen=True)
class _Stages:
    """What the stages of one reassembly share: the host, the inversion, the batch cap, the accounting."""

    host: Host
    trajectory: InversionTrajectory
    max_batch: int | None
    stats: CallStats
    progress: LevelCallback


def _run_reassembly(
    host: Host,
    trajectory: InversionTrajectory,
    plan: ReassemblyPlan,
    max_batch: int | None,
    on_level: LevelCallback | None,
) -> ReassemblyResult:
    """Steps 1-4 of the module on a settled plan (``preserve``'s blend in steps 3-4)."""
    stats = CallStats()
    stages = _Stages(host, trajectory, max_batch, stats, _StageProgress(on_level, plan.total_levels))
    pair_latents = _denoise_objects_to_reassembly_step(stages, plan)

    # 2. Reassemble by masks at level R.
    background_latent = trajectory.latents[plan.reassembly_step]
    merged = merge_regions(background_latent, pair_latents, plan.pair_regions, plan.background)
    weights = preserve_weights(plan.background, plan.feather)
    constrain = background_constraint(trajectory, weights) if plan.background_mode == "preserve" else None
    start = merged if constrain is None else constrain(plan.reassembly_step, merged[None])[0]

    reinverted = _reinvert_merged(stages, start, plan, constrain)
    final = _denoise_with_target(stages, reinverted, plan, constrain)
    return ReassemblyResult(
        latent=trajectory.to_clean(final),
        merged=merged,
        pair_latents=pair_latents,
        effective_starts=plan.starts,
        pair_regions=plan.pair_regions,
        background=plan.background,
        stats=stats,
        reassembly_step=plan.reassembly_step,
        reinversion_steps=plan.reinversion_steps,
        pair_sources=plan.sources,
        background_mode=plan.background_mode,
        preserve_weights=weights,
    )


def _denoise_objects_to_reassembly_step(stages: _Stages, plan: ReassemblyPlan) -> Tensor:
    """Step 1: each pair ``k`` from its start down to ``R`` with its guided prompt, giving ``z_k``.

    The pairs denoised here share calls (lockstep); a pair the search already brought to ``R``
    exactly is taken from it, one starting at ``R`` is ``x_R`` itself.

    Returns:
        ``[K, *latent_shape]`` the pairs' latents at level ``R``.
    """
    host, trajectory = stages.host, stages.trajectory
    latents = trajectory.latents
    level_sigmas = trajectory.level_sigmas.to(latents.device)
    reassembly_step, walking = plan.reassembly_step, plan.walking
    index = torch.tensor(plan.starts, dtype=torch.long, device=latents.device)
    pair_latents = latents.index_select(0, index).clone()
    for k, kept in enumerate(plan.reuse):
        if plan.sources[k] == "search":
            pair_latents[k] = kept.to(pair_latents)  # type: ignore[union-attr]
    walk_starts = [plan.starts[k] for k in walking]
    if max(walk_starts, default=reassembly_step) <= reassembly_step:
        return pair_latents
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
            max_batch=stages.max_batch or host_max,
            stats=stages.stats,
            on_level=stages.progress,
        ),
    )
    pair_latents.index_copy_(0, rows, walked.to(pair_latents.dtype))
    return pair_latents


def _reinvert_merged(
    stages: _Stages, start: Tensor, plan: ReassemblyPlan, constrain: LatentConstraint | None
) -> Tensor:
    """Step 3: the merged ``z`` (``start``, ``[*latent_shape]``) re-inverted ``r`` levels, ``R -> R + r``.

    With the original prompt, CFG off; ``constrain``: ``preserve``'s blend after each level.
    Returns ``[*latent_shape]`` at level ``R + r`` (``start`` itself when ``r = 0``).
    """
    if plan.reinversion_steps <= 0:
        return start
    host, trajectory = stages.host, stages.trajectory
    level_sigmas = trajectory.level_sigmas.to(trajectory.latents.device)
    start_sigma = trajectory.clean_sigma
    stage = Stage(
        role="original",
        sigmas=ascending_walk(level_sigmas.cpu(), plan.reassembly_step, plan.top, start_sigma),
        rows=1,
        latent_shape=trajectory.latent_shape,
        label="reassembly: re-inversion",
        total_rows=plan.top - plan.reassembly_step,
    )
    path = host.run(
        stage,
        lambda denoiser, host_max: invert_levels(
            denoiser,
            start.unsqueeze(0),
            level_sigmas,
            plan.reassembly_step,
            plan.top,
            trajectory.convention,  # type: ignore[arg-type]
            start_sigma,
            max_batch=stages.max_batch or host_max,
            stats=stages.stats,
            on_level=stages.progress,
            constrain=constrain,
        ),
    )
    return path[-1][0]


def _denoise_with_target(
    stages: _Stages, reinverted: Tensor, plan: ReassemblyPlan, constrain: LatentConstraint | None
) -> Tensor:
    """Step 4: the last ``R + r`` levels denoised with the target prompt (CFG), down to level 0.

    ``reinverted``: ``[*latent_shape]`` at level ``R + r``; ``constrain``: ``preserve``'s blend.
    Returns ``[*latent_shape]`` at level 0 (``reinverted`` itself when ``R + r = 0``).
    """
    top = plan.top
    if top <= 0:
        return reinverted
    host, trajectory = stages.host, stages.trajectory
    level_sigmas = trajectory.level_sigmas.to(trajectory.latents.device)
    stage = Stage(
        role="target",
        sigmas=level_sigmas.cpu()[walked_levels([top], 0)],
        rows=1,
        latent_shape=trajectory.latent_shape,
        label="reassembly: target",
        total_rows=top,
    )
    return host.run(
        stage,
        lambda denoiser, host_max: lockstep_denoise(
            denoiser,
            level_sigmas,
            reinverted.unsqueeze(0),
            [top],
            end_level=0,
            max_batch=stages.max_batch or host_max,
            stats=stages.stats,
            on_level=stages.progress,
            constrain=constrain,
        ),
    )[0]


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
