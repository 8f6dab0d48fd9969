"""Deterministic ODE steps in sigma space, chunked model calls and the lockstep walker.

ARCHITECTURE.md §3: DDIM with eta = 0 is the Euler step of the probability-flow ODE in k-diffusion
sigma space, ``x' = x + (x - x0_hat) * (sigma' - sigma) / sigma``, for noise-, v- and flow
models alike. Inversion runs the same step on the ascending schedule; the ``official`` convention
(Prompt-to-Prompt / OIR code) evaluates the model on the current latent with the *next* level's
timestep instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .errors import OIRInputError, OIRInterrupted
from .host import Denoiser
from .options import INVERSION_CONVENTIONS

InversionConvention = Literal["official", "official_x0", "euler"]
"""How the trajectory is made and where denoising ends (ARCHITECTURE.md, "Conventions"):

- ``official``: the OIR code exactly. The VAE latent ``z0`` is the DDPM-normalised sample at the
  t = 0 level (sigma_min), so the level-0 state is ``z0 * sqrt(1 + sigma_min^2)``; each inversion
  step evaluates the model at the next timestep; every denoising ends at the t = 0 level
  (``set_alpha_to_one=False``) and is mapped back, giving ``sqrt(abar_0) x0_hat + sqrt(1 - abar_0)
  eps_hat``; the step-1 search candidate is the source latent itself.
- ``official_x0``: the same inversion, but every denoising ends at sigma = 0 (the model's clean
  estimate ``x0_hat``, without the ``sqrt(1 - abar_0) eps_hat ~ 0.03 eps_hat`` the official decode
  keeps) and the step-1 candidate is really denoised from ``x_1``.
- ``euler``: ComfyUI's FlipSigmas unsampling from sigma = 0 (the only choice for flow models).
"""

OFFICIAL_FAMILY: tuple[str, ...] = ("official", "official_x0")
"""Conventions whose inversion steps evaluate the model at the next level (the OIR code's ``next_step``)."""

LatentConstraint = Callable[[int, Tensor], Tensor]
"""``constrain(level, x [B, *latent_shape]) -> x`` applied after every step of a walk to the latent
that reached ``level`` (the reassembly's ``preserve`` background, ARCHITECTURE.md §4.5)."""

LevelCallback = Callable[[int, int], "bool | None"]
"""``on_level(done, total)`` fires after every noise level a stage finishes. Raising aborts the
stage (ComfyUI's interrupt exception passes straight through); returning ``False`` aborts it with
:class:`~oir_core.errors.OIRInterrupted`."""


def _as_rows(sigma: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or ``[B]`` sigma against ``x: [B, ...]``."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        return sigma
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def ode_step(x: Tensor, x0_hat: Tensor, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
    """One deterministic DDIM (eta = 0) step = Euler step of the PF-ODE in sigma space.

    ``x_next = x + (x - x0_hat) * (sigma_next - sigma) / sigma`` (ARCHITECTURE.md §3). ``(x - x0_hat) /
    sigma`` is the model's noise (EPS/V) or velocity (flow) estimate, so the same line serves every
    parameterisation. With ``sigma_next == 0`` the result is exactly ``x0_hat``.

    Args:
        x: ``[B, *latent_shape]`` latents at ``sigma`` (> 0).
        x0_hat: ``[B, *latent_shape]`` clean estimates at ``sigma``.
        sigma, sigma_next: scalars or ``[B]``.
    """
    if not torch.is_tensor(sigma_next) and sigma_next == 0:
        return x0_hat.clone()
    s = _as_rows(sigma, x)
    s_next = _as_rows(sigma_next, x)
    return x + (x - x0_hat) * ((s_next - s) / s)


def vp_alpha(sigma: float) -> float:
    """``alpha(sigma) = 1 / (1 + sigma^2)``: the DDPM alpha-bar of a variance-preserving level."""
    return 1.0 / (1.0 + sigma * sigma)


def inversion_step(
    denoiser: Denoiser,
    x: Tensor,
    sigma: float,
    sigma_next: float,
    convention: InversionConvention,
    cond_ids: Tensor | None = None,
) -> Tensor:
    """One inversion step from level ``sigma`` up to ``sigma_next > sigma`` (ARCHITECTURE.md §3).

    ``euler`` (ComfyUI's FlipSigmas unsampling): evaluate the model at the current level,
    ``x_next = x + (x - D(x, a)) * (b - a) / a``.

    ``official`` (Prompt-to-Prompt / OIR ``next_step``): evaluate the model on the current latent
    but at the next level's timestep. The network must see the same DDPM-normalised input as the
    official code, so ``x' = x * sqrt(alpha(a) / alpha(b))`` is fed at sigma ``b``,
    ``eps = (x' - D(x', b)) / b`` and ``x_next = x + (b - a) * eps``.

    Args:
        x: ``[B, *latent_shape]`` latents at ``sigma``.
        sigma: current level (> 0; for the clean latent use a small positive start or the
            discrete model's t = 0 level).
        sigma_next: next, larger level.
    """
    if convention == "euler":
        x0_hat = denoiser(x, torch.tensor(sigma), cond_ids)
        return ode_step(x, x0_hat, sigma, sigma_next)
    if convention in OFFICIAL_FAMILY:
        scale = math.sqrt(vp_alpha(sigma) / vp_alpha(sigma_next))
        x_in = x * scale
        x0_hat = denoiser(x_in, torch.tensor(sigma_next), cond_ids)
        eps = (x_in - x0_hat) / sigma_next
        return x + (sigma_next - sigma) * eps
    raise OIRInputError(
        "inversion_convention",
        convention,
        "unknown inversion convention",
        f"use one of {INVERSION_CONVENTIONS}",
    )


@dataclass
class CallStats:
    """Exact accounting of model use.

    Attributes:
        levels: sequential noise levels walked (lockstep steps; model calls before chunking).
        calls: denoiser invocations actually made (after chunking and OOM retries that succeeded).
        rows: latent rows evaluated in successful calls, per CFG branch.
        peak_rows: the largest batch of one successful call.
        oom_retries: chunks that ran out of memory and were retried at half the batch.
    """

    levels: int = 0
    calls: int = 0
    rows: int = 0
    peak_rows: int = 0
    oom_retries: int = 0

    def add(self, other: CallStats) -> CallStats:
        """Return the field-wise sum (peak is the max)."""
        return CallStats(
            levels=self.levels + other.levels,
            calls=self.calls + other.calls,
            rows=self.rows + other.rows,
            peak_rows=max(self.peak_rows, other.peak_rows),
            oom_retries=self.oom_retries + other.oom_retries,
        )

    def to_dict(self) -> dict[str, int]:
        return {
            "levels": self.levels,
            "calls": self.calls,
            "rows": self.rows,
            "peak_rows": self.peak_rows,
            "oom_retries": self.oom_retries,
        }


def is_out_of_memory(error: BaseException) -> bool:
    """True for accelerator out-of-memory errors (CUDA, MPS, XPU all say "out of memory")."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class ChunkedDenoiser:
    """Calls a denoiser on batches of at most ``max_batch`` rows and counts every call.

    When a chunk raises an out-of-memory error the chunk size is halved and the chunk retried;
    the smaller size is kept for the rest of the stage. Rows are independent, so the result equals
    an unchunked call (ARCHITECTURE.md §4.3).
    """

    def __init__(self, denoiser: Denoiser, max_batch: int | None, stats: CallStats) -> None:
        if max_batch is not None and max_batch < 1:
            raise OIRInputError(
                "max_batch", max_batch, "must be at least 1", "use a positive batch or 0/None"
            )
        self.denoiser = denoiser
        self.max_batch = max_batch
        self.stats = stats

    def __call__(self, x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
        total = x.shape[0]
        outputs: list[Tensor] = []
        start = 0
        while start < total:
            size = total - start if self.max_batch is None else min(self.max_batch, total - start)
            rows = slice(start, start + size)
            try:
                out = self.denoiser(x[rows], sigma, None if cond_ids is None else cond_ids[rows])
            except Exception as error:
                if not is_out_of_memory(error) or size == 1:
                    raise
                self.stats.oom_retries += 1
                self.max_batch = max(1, size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            self.stats.calls += 1
            self.stats.rows += size
            self.stats.peak_rows = max(self.stats.peak_rows, size)
            outputs.append(out)
            start += size
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=0)


def check_finite(x: Tensor, stage: str, sigma: float) -> None:
    """Stop at the first non-finite latent instead of silently producing a black or noisy image."""
    if not torch.isfinite(x).all():
        raise OIRInputError(
            "model",
            f"NaN/inf during {stage} at sigma {sigma:.4g}",
            "the model produced non-finite values",
            "check the model and LoRA strength, lower cfg, or run in fp32 (ComfyUI --force-fp32)",
        )


def report_level(on_level: LevelCallback | None, done: int, total: int) -> None:
    """Fire the per-level callback; ``False`` means stop."""
    if on_level is not None and on_level(done, total) is False:
        raise OIRInterrupted(f"stopped by the progress callback after level {done} of {total}")


def safe_start_sigma(first_positive_sigma: float) -> float:
    """A positive stand-in for sigma = 0 at the start of an inversion: ``min(1e-4, sigma_1 / 2)``."""
    return min(1e-4, first_positive_sigma / 2.0)


def invert_levels(
    denoiser: Denoiser,
    x: Tensor,
    level_sigmas: Tensor,
    from_level: int,
    to_level: int,
    convention: InversionConvention,
    clean_sigma: float | None,
    max_batch: int | None = None,
    stats: CallStats | None = None,
    on_level: LevelCallback | None = None,
    constrain: LatentConstraint | None = None,
) -> list[Tensor]:
    """Invert ``x`` (at level ``from_level``) up to ``to_level``; return every latent on the way.

    Args:
        x: ``[B, *latent_shape]`` latents at ``level_sigmas[from_level]``.
        level_sigmas: ``[T+1]`` ascending, ``level_sigmas[0] == 0`` (the clean level).
        clean_sigma: where the clean latent "sits" for the first step out of level 0: the discrete
            model's t = 0 level for the official conventions (sigma ~ 0.029 for SD), otherwise
            ``None`` (a small positive start, :func:`safe_start_sigma`).
        constrain: applied to the latent after each step (:data:`LatentConstraint`); the next step
            and the returned list see its result.

    Returns:
        ``to_level - from_level + 1`` tensors ``[B, *latent_shape]``, levels ``from_level..to_level``.
    """
    stats = stats if stats is not None else CallStats()
    chunked = ChunkedDenoiser(denoiser, max_batch, stats)
    latents = [x]
    total = to_level - from_level
    for done, level in enumerate(range(from_level, to_level), start=1):
        sigma = float(level_sigmas[level])
        sigma_next = float(level_sigmas[level + 1])
        if level == 0:
            sigma = clean_sigma if clean_sigma else safe_start_sigma(sigma_next)
        x = inversion_step(chunked, x, sigma, sigma_next, convention)
        check_finite(x, "inversion", sigma_next)
        if constrain is not None:
            x = constrain(level + 1, x)
        stats.levels += 1
        latents.append(x)
        report_level(on_level, done, total)
    return latents


@dataclass(frozen=True)
class SubSchedule:
    """Which levels a denoising walk visits (ARCHITECTURE.md §4.3).

    ``stride == 1`` is the full schedule (the paper's ``t``-step denoise). Otherwise a latent at
    level ``L > tail`` steps to the highest multiple of ``stride`` below ``L`` (never below
    ``tail``), and from ``tail`` down one level at a time: the coarse-to-fine search's cheap
    approximation of a candidate, whose last levels (the details both scores see) stay exact. The
    next level depends on the current level only, so every row at one level steps to the same next
    level and a lockstep call still holds one sigma.

    Attributes:
        stride: sub-schedule spacing (1 = every level).
        tail: levels ``tail..0`` are walked one at a time.
    """

    stride: int = 1
    tail: int = 0

    def __post_init__(self) -> None:
        if self.stride < 1 or self.tail < 0:
            raise ValueError(f"SubSchedule needs stride >= 1 and tail >= 0, got {self.stride}, {self.tail}")

    @property
    def is_full(self) -> bool:
        return self.stride == 1

    def next_level(self, level: int) -> int:
        """The level a walk at ``level`` (> 0) steps to."""
        if self.stride == 1 or level <= self.tail:
            return level - 1
        return max(self.tail, (level - 1) // self.stride * self.stride)

    def walk(self, start: int, end: int = 0) -> list[int]:
        """``[start, ..., end]`` the levels a walk from ``start`` visits; ``end`` must lie on it."""
        levels = [start]
        while levels[-1] > end:
            levels.append(self.next_level(levels[-1]))
        if levels[-1] != end:
            raise ValueError(f"a walk from level {start} with {self} skips level {end}")
        return levels

    def is_exact(self, start: int, end: int = 0) -> bool:
        """Whether the walk from ``start`` to ``end`` visits every level (equals the full schedule)."""
        return len(self.walk(start, end)) == start - end + 1


FULL_SCHEDULE = SubSchedule()
"""Every level: the paper's full denoise."""


def lockstep_denoise(
    denoiser: Denoiser,
    level_sigmas: Tensor,
    initial: Tensor,
    start_levels: Sequence[int],
    end_level: int,
    cond_ids: Tensor | None = None,
    schedule: SubSchedule = FULL_SCHEDULE,
    max_batch: int | None = None,
    stats: CallStats | None = None,
    on_level: LevelCallback | None = None,
    keep_levels: Sequence[int] = (),
    kept: dict[int, Tensor] | None = None,
    constrain: LatentConstraint | None = None,
) -> Tensor:
    """Denoise many rows that start at different levels, in lockstep (ARCHITECTURE.md §4.3).

    Walk the levels from the highest start down to ``end_level``. At level ``s`` the batch holds
    every row whose walk is at ``s``, all at the same sigma and stepping to the same next level, so
    every model call is an ordinary batch (ControlNet percents, hooks and patches read one sigma).
    A row joins when the walk reaches its start level. The total work equals running each row alone
    (one model row per step of its walk); the number of sequential calls drops to the number of
    distinct levels walked. On the full schedule level ``s`` holds every row whose start is ``>= s``.

    Args:
        level_sigmas: ``[T+1]`` ascending sigmas of the levels, ``level_sigmas[0] == 0``.
        initial: ``[N, *latent_shape]`` each row's latent at its start level.
        start_levels: ``N`` start levels, each in ``end_level..T``.
        end_level: the level every row is brought to (0 = fully denoised); every walk must visit it.
        cond_ids: ``[N]`` int64 conditioning index per row (``"guided"`` role) or ``None``.
        schedule: the levels each row visits (:class:`SubSchedule`; default every level).
        keep_levels: levels (above ``end_level``) at which to keep a copy of every row into
            ``kept[level]`` (``[N, *latent_shape]``): rows walked down to that level hold the state
            there, rows starting at or below it their initial latent. The reassembly reuses them
            (a row's state at a level does not depend on where its walk ends). Full schedule only.
        constrain: applied to the rows of each step (:data:`LatentConstraint`), with the level
            they reached; the walk continues from its result.

    Returns:
        ``[N, *latent_shape]`` every row at ``end_level`` (rows that start there are returned as is).
    """
    stats = stats if stats is not None else CallStats()
    starts = [int(s) for s in start_levels]
    if len(starts) != initial.shape[0]:
        raise ValueError(f"{len(starts)} start levels for {initial.shape[0]} initial latents")
    levels = walked_levels(starts, end_level, schedule)[:-1]  # model calls happen above end_level
    x = initial.clone()
    chunked = ChunkedDenoiser(denoiser, max_batch, stats)
    top = max(starts, default=end_level)
    wanted = {int(level) for level in keep_levels}
    if wanted and (kept is None or not schedule.is_full or min(wanted) <= end_level):
        raise ValueError("keep_levels needs the full schedule, a kept dict and levels above end_level")
    for level in wanted:
        if level >= top:  # no row walks down to it: every row is still at its start
            kept[level] = x.clone()  # type: ignore[index]
    position = torch.tensor(starts, dtype=torch.long)
    for done, level in enumerate(levels, start=1):
        active = torch.nonzero(position == level).flatten()
        rows = x.index_select(0, active.to(x.device))
        ids = None if cond_ids is None else cond_ids.index_select(0, active.to(cond_ids.device))
        next_level = schedule.next_level(level)
        sigma = level_sigmas[level]
        sigma_next = level_sigmas[next_level]
        x0_hat = chunked(rows, sigma, ids)
        next_rows = x0_hat.clone() if float(sigma_next) == 0.0 else ode_step(rows, x0_hat, sigma, sigma_next)
        check_finite(next_rows, "denoising", float(sigma))
        if constrain is not None:
            next_rows = constrain(next_level, next_rows)
        x.index_copy_(0, active.to(x.device), next_rows.to(x.dtype))
        position[active] = next_level
        if next_level in wanted:
            kept[next_level] = x.clone()  # type: ignore[index]
        stats.levels += 1
        report_level(on_level, done, len(levels))
    return x


def walked_levels(
    start_levels: Sequence[int], end_level: int, schedule: SubSchedule = FULL_SCHEDULE
) -> list[int]:
    """Every level some row's walk visits, descending, ``end_level`` included (the stage's schedule)."""
    visited = {end_level}
    for start in start_levels:
        visited.update(schedule.walk(int(start), end_level))
    return sorted(visited, reverse=True)


def lockstep_total_rows(
    start_levels: Sequence[int], end_level: int, schedule: SubSchedule = FULL_SCHEDULE
) -> int:
    """Rows :func:`lockstep_denoise` evaluates in all: one per step of each row's walk."""
    return sum(len(schedule.walk(int(start), end_level)) - 1 for start in start_levels)


def lockstep_rows(start_levels: Sequence[int], end_level: int) -> int:
    """The largest number of rows :func:`lockstep_denoise` holds at one level (for memory planning)."""
    return sum(1 for start in start_levels if start > end_level)


def ascending_walk(level_sigmas: Tensor, bottom: int, top: int, start_sigma: float | None = None) -> Tensor:
    """``[n]`` the sigmas an inversion from ``bottom`` to ``top`` visits; level 0 replaced by its start."""
    walk = level_sigmas[bottom : top + 1].clone()
    if bottom == 0 and walk.numel() > 1:
        walk[0] = start_sigma if start_sigma else safe_start_sigma(float(walk[1]))
    return walk
