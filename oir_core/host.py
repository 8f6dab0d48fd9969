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


ROW_WORK_PER_CALL: dict[str, float] = {"accelerator": 2.5e14, "cpu": 4e12}
"""The most work one model call may hold, in parameter-positions (ARCHITECTURE.md §5).

A row's work is ``parameters * latent positions * branches`` (a FLOP proxy that does not depend on
load). 2.5e14 is about 2 s on a 24 GB consumer GPU for SD1.5 at 512² (about 35 rows with CFG) and
for SDXL at 1024² (2 rows); the CPU figure keeps a full-size model to one row per call. A cancel is
honoured between calls, so this bounds the cancel latency without ever timing a call.
"""


@dataclass(frozen=True)
class CallPlan:
    """How a stage's rows are split into model calls, decided before the first call (ARCHITECTURE.md §5).

    Every input is fixed for a given workflow, model and machine (never load, timing or the memory
    other models use), so the same workflow always makes the same calls and the same numbers.

    Attributes:
        rows_per_call: rows (per CFG branch) of every full call; the last call of a level holds the rest.
        limited_by: what set it: ``"level"`` (a whole level fits), ``"max_batch"`` (the user),
            ``"memory"`` (the device's total memory less the weights), ``"cancel_latency"``
            (:data:`ROW_WORK_PER_CALL`).
        memory_rows: the most rows the memory budget allows.
        latency_rows: the most rows the work bound allows.
    """

    rows_per_call: int
    limited_by: str
    memory_rows: int
    latency_rows: int

    def to_dict(self) -> dict[str, int | str]:
        return {
            "rows_per_call": self.rows_per_call,
            "limited_by": self.limited_by,
            "memory_rows": self.memory_rows,
            "latency_rows": self.latency_rows,
        }


def plan_call_rows(
    level_rows: int,
    memory_rows: int,
    row_work: float,
    device_kind: str,
    user_max_batch: int | None = None,
) -> CallPlan:
    """The static split of a stage's levels into model calls.

    Args:
        level_rows: the most rows the stage holds at one level (:attr:`Stage.rows`).
        memory_rows: the most rows whose activations fit the device's total memory less the weights.
        row_work: ``parameters * latent positions * branches`` of one row.
        device_kind: ``"cpu"`` or ``"accelerator"`` (a key of :data:`ROW_WORK_PER_CALL`).
        user_max_batch: the user's cap (``None``: none). It replaces the work bound (the user
            chose the call size) but never the memory bound.
    """
    if level_rows < 1 or memory_rows < 1 or row_work <= 0:
        raise ValueError(f"plan_call_rows needs positive inputs: {level_rows}, {memory_rows}, {row_work}")
    latency_rows = max(1, int(ROW_WORK_PER_CALL[device_kind] // row_work))
    bounds = [("level", level_rows), ("memory", memory_rows)]
    bounds.append(("max_batch", user_max_batch) if user_max_batch else ("cancel_latency", latency_rows))
    limited_by, rows = min(bounds, key=lambda bound: bound[1])
    return CallPlan(max(1, int(rows)), limited_by, int(memory_rows), latency_rows)


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
