"""The model protocol between the OIR engine and its host (ARCHITECTURE.md §3).

The engine never sees a network, a prompt encoder or a sampler library. It asks the host to run a
*stage* (a stretch of sampling with one conditioning role) and gives it a ``body`` to call with a
denoiser. The host sets up whatever it needs around the body (ComfyUI: a ``CFGGuider.sample`` call,
so LoRA, ControlNet, hooks and model patches are active) and returns what the body returns. A plain
PyTorch host simply calls ``body(denoiser, max_batch)``.

All tensors live in k-diffusion sigma space: a noisy latent is ``x = x0 + sigma * eps`` for noise-
and v-prediction models, ``x = (1 - sigma) * x0 + sigma * eps`` for flow models, and every denoiser
returns the clean estimate ``x0_hat``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from torch import Tensor

Role = Literal["original", "guided", "target"]
"""Which conditioning a stage samples with.

- ``"original"``: the original prompt P_o, CFG off (cfg = 1). Used by inversion and re-inversion.
- ``"guided"``: per row, the guided prompt G_k of the row's pair k as positive, P_o (or the user's
  negative) as negative, with CFG. Rows name their pair through ``cond_ids``.
- ``"target"``: the target prompt P_t as positive, the negative as negative, with CFG.
"""

R = TypeVar("R")


class Denoiser(Protocol):
    """``denoise(x, sigma, cond_ids) -> x0_hat``.

    Args:
        x: ``[B, *latent_shape]`` noisy latents, all at the same noise level.
        sigma: 0-dim tensor, the shared noise level (> 0).
        cond_ids: ``[B]`` int64 pair index per row for the ``"guided"`` role; ``None`` otherwise.

    Returns:
        ``[B, *latent_shape]`` CFG-combined clean estimates.
    """

    def __call__(self, x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor: ...


@dataclass(frozen=True)
class Stage:
    """One stretch of sampling the engine asks the host to run.

    Attributes:
        role: the conditioning role (see :data:`Role`).
        sigmas: ``[n]`` the noise levels this stage walks, in walking order (ascending for an
            inversion, descending for denoising). Hosts pass them on as the sampling schedule so
            that schedule-dependent features (ControlNet start/end percent, hook keyframes) see
            the real levels.
        rows: the largest number of rows the stage evaluates at one noise level (before chunking);
            hosts use it to reserve memory.
        latent_shape: the shape of one latent, without the batch dimension.
        label: a short human-readable name (``"inversion"``, ``"search"``, ...), for progress UIs.
        total_rows: rows the stage evaluates in all (per CFG branch, before chunking), for progress
            and ETA; 0 when unknown.
    """

    role: Role
    sigmas: Tensor
    rows: int
    latent_shape: tuple[int, ...]
    label: str = ""
    total_rows: int = 0


class CallSizer:
    """Rows per model call that keep one call to about ``budget_s`` seconds (ARCHITECTURE.md §5).

    A cancel is honoured between model calls, so one call's length is the cancel latency. The size
    starts at ``min(limit, start)`` and, like a congestion window, doubles (up to ``limit``, what
    fits memory) after a full-size call that took under half the budget, and shrinks in proportion
    after a call that took longer than the budget. Fast models (small latents, big GPUs) thus run
    at the memory limit, slow ones at the largest batch that fits the time budget.

    Args:
        limit: the most rows a call may hold (memory).
        budget_s: target seconds per call.
        start: rows of the first call (bounds it before anything is measured).
    """

    def __init__(self, limit: int, budget_s: float, start: int = 8) -> None:
        if limit < 1 or budget_s <= 0:
            raise ValueError(f"CallSizer needs limit >= 1 and budget_s > 0, got {limit}, {budget_s}")
        self.limit = int(limit)
        self.budget_s = float(budget_s)
        self.rows = max(1, min(self.limit, int(start)))

    def observe(self, rows: int, seconds: float) -> None:
        """Adapt after a call of ``rows`` rows that took ``seconds``."""
        if seconds > self.budget_s and rows > 1:
            self.rows = max(1, min(self.rows, int(rows * self.budget_s / seconds)))
        elif rows >= self.rows and seconds < self.budget_s / 2:
            self.rows = min(self.limit, self.rows * 2)


class Host(Protocol):
    """Runs engine stages with real conditioning. See the module docstring."""

    def run(self, stage: Stage, body: Callable[[Denoiser, int | None], R]) -> R:
        """Call ``body(denoiser, max_batch)`` inside the host's sampling context and return its result.

        ``max_batch`` is the largest number of rows one denoiser call may hold (``None``: no limit);
        the engine chunks larger batches itself.
        """
        ...


@dataclass
class FunctionHost:
    """A host made of plain callables: for tests, benchmarks and non-ComfyUI use.

    Attributes:
        original: denoiser for the ``"original"`` role.
        guided: denoiser for the ``"guided"`` role (reads ``cond_ids``).
        target: denoiser for the ``"target"`` role.
        max_batch: rows per call, ``None`` for unlimited.
        stages: every stage run so far, in order (for inspection).
    """

    original: Denoiser
    guided: Denoiser
    target: Denoiser
    max_batch: int | None = None
    stages: list[Stage] = field(default_factory=list)

    def run(self, stage: Stage, body: Callable[[Denoiser, int | None], R]) -> R:
        self.stages.append(stage)
        denoiser = {"original": self.original, "guided": self.guided, "target": self.target}[stage.role]
        return body(denoiser, self.max_batch)
