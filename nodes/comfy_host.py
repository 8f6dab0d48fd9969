"""The ComfyUI implementation of the engine's model protocol (ARCHITECTURE.md §3, §5).

:class:`ComfyHost` runs every engine stage through ComfyUI's own sampling machinery: a
``comfy.samplers.CFGGuider`` (or, for per-row guided prompts, the :class:`GuidedCFGGuider`
subclass) drives our :class:`StageSampler`, whose ``sample`` method calls the engine's ``body``
with a denoiser built on ``model_wrap(x, sigma * ones(B), **extra_args)``. That single route is
what applies LoRA weight patches, object and attention patches, ControlNet carried in the
conditioning, hooks, wrappers and CFG post-functions, exactly as a KSampler would.

All tensors are in ComfyUI's k-diffusion model space (after ``process_latent_in``); see
:func:`model_space_in` / :func:`model_space_out`.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import comfy.model_management
import comfy.model_sampling
import comfy.samplers
import torch
from torch import Tensor

from ..oir_core.host import CallPlan, Denoiser, Stage, plan_call_rows
from ..oir_core.sampling import is_out_of_memory
from .progress import StageProgress

R = TypeVar("R")

Conditioning = list[list[Any]]
"""A ComfyUI CONDITIONING: ``[[cond [B, T, D], {"pooled_output": ..., "control": ..., ...}], ...]``."""

MEMORY_SAFETY_FACTOR = 1.5
"""The margin ComfyUI itself applies (``_calc_cond_batch``): ``memory_required * 1.5 < free``."""

LOW_MEMORY_SPLIT = "low_memory"
"""A :class:`StageReport` fallback: free memory was short of the planned call even after ComfyUI
unloaded other models, so calls were split further (ComfyUI would otherwise run cond and uncond
apart, or the call would run out of memory)."""

OUT_OF_MEMORY_SPLIT = "out_of_memory"
"""A :class:`StageReport` fallback: a model call ran out of memory and the engine halved it."""


# --------------------------------------------------------------------------------------------------
# Small helpers the nodes need
# --------------------------------------------------------------------------------------------------


def model_space_in(model: Any, samples: Tensor) -> Tensor:
    """LATENT ``samples`` ``[B, C, h, w]`` (as the VAE gives them) -> model space (``process_latent_in``).

    Uses the (possibly object-patched) ``latent_format`` of the ModelPatcher, which is what
    ``BaseModel.process_latent_in`` applies during sampling.
    """
    return model.get_model_object("latent_format").process_in(samples)


def model_space_out(model: Any, x: Tensor) -> Tensor:
    """Model-space latents ``[B, C, h, w]`` -> LATENT ``samples`` for the VAE (``process_latent_out``)."""
    return model.get_model_object("latent_format").process_out(x)


def get_sigmas(model: Any, scheduler: str, steps: int) -> Tensor:
    """The model's descending noise schedule: ``[steps + 1]`` float32 on CPU, usually ending in 0.

    Args:
        model: a ModelPatcher (its ``model_sampling`` object patch is honoured).
        scheduler: one of ``comfy.samplers.SCHEDULER_NAMES`` (``"ddim_uniform"``, ``"normal"``, ...).
        steps: number of steps (>= 1).
    """
    model_sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps)
    return sigmas.to(device="cpu", dtype=torch.float32)


def schedule_levels_reason(model: Any, scheduler: str, steps: int, levels: int) -> str:
    """Why ComfyUI's ``scheduler`` made ``levels`` levels from ``steps`` (``""`` when they agree or
    the reason is not known), in words for the inversion node's message.

    ``ddim_uniform`` (``comfy.samplers.ddim_scheduler``) walks the model's discrete noise levels in
    strides of ``len(sigmas) // steps`` from the second one, so a ``steps`` that does not divide the
    level count lands on more levels than asked for (6 of 1000 gives 7).
    """
    if levels == steps or scheduler != "ddim_uniform":
        return ""
    count = len(model.get_model_object("model_sampling").sigmas)
    stride = max(count // steps, 1)
    divisors = [d for d in range(2, count + 1) if count % d == 0]
    below = [d for d in divisors if d < steps][-1:]
    above = [d for d in divisors if d > steps][:1]
    nearest = " or ".join(str(d) for d in below + above)
    return (
        f"ComfyUI's ddim_uniform takes the model's {count} noise levels in strides of {count} // {steps} "
        f"= {stride}, which lands on {levels} of them; a steps value that divides {count}"
        + (f", such as {nearest}," if nearest else "")
        + " gives exactly that many levels"
    )


def is_flow_model(model: Any) -> bool:
    """True when the model's sampling is rectified flow (``CONST``: SD3, Flux, ``ModelType.FLOW``).

    For these ``x = (1 - sigma) x0 + sigma eps`` and ``sigma_max`` is exactly 1.0.
    """
    return isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)


def is_discrete_vp_model(model: Any) -> bool:
    """True for a discrete DDPM-style schedule with ``sigma_data = 1`` (SD1.x, SD2.x, SDXL).

    EDM-style sampling (``sigma_data = 0.5``: Playground v2.5) and continuous schedules
    (``ModelSamplingContinuousEDM``/``V``: CosXL) are not: the official inversion's DDPM
    normalisation ``x / sqrt(1 + sigma^2)`` and its t = 0 level do not apply to them.
    """
    sampling = model.get_model_object("model_sampling")
    discrete = isinstance(sampling, comfy.model_sampling.ModelSamplingDiscrete)
    return discrete and math.isclose(float(getattr(sampling, "sigma_data", 1.0)), 1.0)


def clean_sigma(model: Any) -> float:
    """The smallest noise level the model knows (``model_sampling.sigma_min``).

    For discrete EPS / V models this is the t = 0 level (about 0.029 for SD1.x), where the
    official OIR code places the clean latent.
    """
    return float(model.get_model_object("model_sampling").sigma_min)


def fit_max_batch(
    memory_required: Callable[[list[int]], float],
    latent_shape: Sequence[int],
    rows: int,
    free_memory: float,
    branches: int = 2,
    cap: int | None = None,
    safety: float = MEMORY_SAFETY_FACTOR,
) -> int:
    """The largest chunk ``k`` (rows per model call) that fits in ``free_memory``.

    ``k`` is the largest value in ``[1, min(rows, cap)]`` with
    ``memory_required([k * branches, *latent_shape]) * safety < free_memory``, found by bisection
    (``memory_required`` is assumed non-decreasing in the batch). At least 1 is returned even when
    one row does not fit: ComfyUI then falls back to its own low-VRAM behaviour.

    Args:
        memory_required: ``BaseModel.memory_required`` (bytes for one forward pass of a batch shape).
        latent_shape: one latent's shape, without batch, e.g. ``(C, h, w)``.
        rows: the largest batch the stage will ask for.
        free_memory: bytes free on the compute device (``comfy.model_management.get_free_memory``).
        branches: forward passes per row: 2 with CFG (cond + uncond), 1 without.
        cap: the user's upper bound on the chunk, ``None`` for none.
        safety: multiplier on the estimate (ComfyUI uses 1.5).
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    limit = rows if cap is None else min(rows, cap)
    limit = max(1, int(limit))
    shape = [int(s) for s in latent_shape]

    def fits(k: int) -> bool:
        return memory_required([k * branches, *shape]) * safety < free_memory

    if fits(limit):
        return limit
    if not fits(1):
        return 1
    lo, hi = 1, limit - 1  # fits(lo) holds, fits(limit) does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------------------------------
# Guider and sampler
# --------------------------------------------------------------------------------------------------


def _same_value(a: Any, b: Any) -> bool:
    """Whether two processed-conditioning values are the same (identity, equal tensors, plain data).

    Conservative: anything it cannot compare counts as different (the caller then keeps pairs apart).
    """
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (str, int, float, bool)):
        return a == b
    if hasattr(a, "cond") and hasattr(a, "_copy_with"):  # comfy.conds.CONDRegular and its kin
        return _same_value(a.cond, b.cond)
    return False


_FORWARD_KEYS = (
    "control",
    "hooks",
    "gligen",
    "area",
    "strength",
    "mask",
    "mask_strength",
    "timestep_start",
    "timestep_end",
)
"""The keys of a processed cond entry that ComfyUI's forward reads besides ``model_conds`` and
``uuid`` (``comfy.samplers.get_area_and_mult``, same in 0.3.64 and 0.33); the rest (``cross_attn``,
``pooled_output``, sizes, ...) were turned into ``model_conds`` by ``process_conds``."""


def _same_entry(a: dict, b: dict, keys: Sequence[str] = _FORWARD_KEYS) -> bool:
    """Whether two processed cond entries give the forward the same ``keys`` (present in both or
    neither, and the same)."""
    return all((key in a) == (key in b) and (key not in a or _same_value(a[key], b[key])) for key in keys)


def _same_conditioning(first: Sequence[dict], other: Sequence[dict]) -> bool:
    """Whether two processed conditionings give the forward the same inputs, ``model_conds`` included."""
    keys = (*_FORWARD_KEYS, "model_conds")
    return len(first) == len(other) and all(_same_entry(a, b, keys) for a, b in zip(first, other))


class RowwisePlan:
    """How the K guided prompts become one positive whose row ``i`` carries pair ``cond_ids[i]``.

    Possible when the prompts differ only in the tensors of their ``model_conds`` (the text
    embedding, SDXL's pooled output and size conditioning, ...), each of batch 1 and of equal
    shape: every other key (ControlNet, hooks, areas, masks, start/end percents) must be the same.
    ComfyUI's conds repeat a batch-1 tensor to the batch and keep a tensor that already has it
    (``repeat_to_batch_size``), so a stacked ``[B, ...]`` tensor is used row by row.

    Attributes:
        template: pair 0's processed entries.
        stacked: per entry, ``{model_cond name: [K, ...] stacked tensor}`` for the conds that differ.
    """

    def __init__(self, template: list[dict], stacked: list[dict[str, Tensor]]) -> None:
        self.template = template
        self.stacked = stacked

    @classmethod
    def build(cls, positives: Sequence[Sequence[dict] | None]) -> RowwisePlan | None:
        """The plan for processed positives ``G_0..G_{K-1}``, or ``None`` when they cannot share rows."""
        first = positives[0]
        if first is None or any(p is None or len(p) != len(first) for p in positives):
            return None
        stacked: list[dict[str, Tensor]] = []
        for index, entry in enumerate(first):
            entries = [p[index] for p in positives]  # type: ignore[index]
            if not all(_same_entry(entry, e) for e in entries[1:]):
                return None
            conds = entry.get("model_conds", {})
            if any(e.get("model_conds", {}).keys() != conds.keys() for e in entries):
                return None
            differing: dict[str, Tensor] = {}
            for name, cond in conds.items():
                others = [e["model_conds"][name] for e in entries]
                if all(_same_value(other, cond) for other in others):
                    continue
                tensors = [getattr(other, "cond", None) for other in others]
                if not all(
                    type(other) is type(cond)
                    and isinstance(t, Tensor)
                    and t.shape[0] == 1
                    and t.shape == tensors[0].shape
                    and t.device == tensors[0].device
                    for other, t in zip(others, tensors)
                ):
                    return None  # e.g. guided prompts of different token lengths
                differing[name] = torch.cat(tensors)  # type: ignore[arg-type]
            stacked.append(differing)
        return cls(list(first), stacked)

    def positive(self, cond_ids: Tensor) -> list[dict]:
        """The processed positive for rows guided by ``cond_ids [B]``."""
        entries = []
        for entry, differing in zip(self.template, self.stacked):
            conds = dict(entry["model_conds"])
            for name, stacked in differing.items():
                conds[name] = conds[name]._copy_with(stacked.index_select(0, cond_ids.to(stacked.device)))
            entries.append({**entry, "model_conds": conds, "uuid": uuid.uuid4()})
        return entries


class GuidedCFGGuider(comfy.samplers.CFGGuider):
    """CFG with a per-row positive prompt: row ``i`` uses guided prompt ``cond_ids[i]``.

    Registers the conds ``{"negative": N, "positive_0": G_0, ..., "positive_{K-1}": G_{K-1}}`` so
    each gets ComfyUI's full ``process_conds`` treatment (masks, areas, start/end percents,
    ``extra_conds``, ControlNet ``pre_run``). ``predict_noise`` runs
    ``comfy.samplers.sampling_function(inner_model, x, t, N, G, cfg)`` once for all rows with a
    row-wise positive ``G`` (:class:`RowwisePlan`: the pairs' embeddings stacked per row), so the
    rows of every pair, cond and uncond, share one UNet forward per chunk (ComfyUI batches cond and
    uncond of equal shapes). Where the pairs differ beyond those tensors (another ControlNet,
    hooks, areas, token lengths) it runs one ``sampling_function`` per pair instead. Either way
    each row gets what a plain ``CFGGuider(G_k, N)`` would give it.

    One known difference: for conds carrying an ``area`` (ConditioningSetArea, or a mask with
    ``set_area_to_bounds``) ``process_conds`` adds same-area copies across *all* registered keys,
    so pair k may also see area entries derived from another pair's areas. Plain text, masks,
    start/end percents, ControlNet and hooks are unaffected.

    The caller sets :attr:`cond_ids` (``[B]`` int64) just before each model call.
    """

    def __init__(self, model_patcher: Any) -> None:
        super().__init__(model_patcher)
        self.num_pairs = 0
        self.cond_ids: Tensor | None = None
        self._pair_negatives: list[Any] | None = None
        self._plan: RowwisePlan | bool | None = False  # False: not built for this sample yet

    def set_guided_conds(self, guided: Sequence[Conditioning], negative: Conditioning) -> None:
        """Register the K guided prompts and the shared negative (the user's objects, unchanged)."""
        if len(guided) == 0:
            raise ValueError("GuidedCFGGuider needs at least one guided conditioning")
        conds: dict[str, Conditioning] = {"negative": negative}
        for k, cond in enumerate(guided):
            conds[f"positive_{k}"] = cond
        self.num_pairs = len(guided)
        self.inner_set_conds(conds)

    def sample(self, *args: Any, **kwargs: Any) -> Tensor:
        self._pair_negatives, self._plan = None, False
        try:
            return super().sample(*args, **kwargs)
        finally:
            self._pair_negatives, self._plan = None, False
            self.cond_ids = None

    def _rowwise_plan(self) -> RowwisePlan | None:
        """The plan for sharing forwards between pairs in this sample, or ``None`` (built once)."""
        if self._plan is False:
            negatives = [self._negative_for_pair(k) for k in range(self.num_pairs)]
            same_negative = all(n is not None and _same_conditioning(negatives[0], n) for n in negatives[1:])
            positives = [self.conds.get(f"positive_{k}", None) for k in range(self.num_pairs)]
            self._plan = RowwisePlan.build(positives) if same_negative else None
        return self._plan  # type: ignore[return-value]

    def _negative_for_pair(self, k: int) -> Any:
        """The processed negative as a plain ``CFGGuider(G_k, N)`` would see it.

        ``process_conds`` copies a positive's ControlNet marked ``control_apply_to_uncond`` (and
        GLIGEN) onto the negative, but only for the key ``"positive"``; redo that per pair.
        """
        if self._pair_negatives is None:
            base = self.conds.get("negative", None)
            negatives = []
            for j in range(self.num_pairs):
                positive = self.conds.get(f"positive_{j}", None)
                if base is None or positive is None:
                    negatives.append(base)
                    continue
                neg = list(base)
                comfy.samplers.apply_empty_x_to_equal_area(
                    [c for c in positive if c.get("control_apply_to_uncond", False)],
                    neg,
                    "control",
                    lambda cond_cnets, i: cond_cnets[i],
                )
                comfy.samplers.apply_empty_x_to_equal_area(
                    positive, neg, "gligen", lambda cond_cnets, i: cond_cnets[i]
                )
                negatives.append(neg)
            self._pair_negatives = negatives
        return self._pair_negatives[k]

    def predict_noise(
        self, x: Tensor, timestep: Tensor, model_options: dict | None = None, seed: int | None = None
    ) -> Tensor:
        """CFG-combined x0 ``[B, ...]`` for ``x [B, ...]`` at ``timestep [B]``.

        Row ``i`` is guided by pair ``cond_ids[i]``.
        """
        if model_options is None:
            model_options = {}
        ids = self.cond_ids
        if ids is None:
            raise RuntimeError("GuidedCFGGuider: cond_ids were not set before the model call")
        batch = x.shape[0]
        if ids.shape != (batch,):
            raise RuntimeError(f"GuidedCFGGuider: cond_ids has shape {tuple(ids.shape)}, x has batch {batch}")
        per_row_t = timestep.ndim > 0 and timestep.shape[0] == batch
        ids_cpu = ids.to("cpu")
        pairs = torch.unique(ids_cpu).tolist()
        plan = self._rowwise_plan() if len(pairs) > 1 else None
        if plan is not None:
            return comfy.samplers.sampling_function(
                self.inner_model,
                x,
                timestep,
                self._negative_for_pair(0),
                plan.positive(ids_cpu),
                self.cfg,
                model_options=model_options,
                seed=seed,
            )
        if len(pairs) == 1:
            k = int(pairs[0])
            return comfy.samplers.sampling_function(
                self.inner_model,
                x,
                timestep,
                self._negative_for_pair(k),
                self.conds[f"positive_{k}"],
                self.cfg,
                model_options=model_options,
                seed=seed,
            )
        out: Tensor | None = None
        for k in pairs:
            k = int(k)
            idx = torch.nonzero(ids_cpu == k).squeeze(1).to(x.device)
            t_rows = timestep.index_select(0, idx.to(timestep.device)) if per_row_t else timestep
            res = comfy.samplers.sampling_function(
                self.inner_model,
                x.index_select(0, idx),
                t_rows,
                self._negative_for_pair(k),
                self.conds[f"positive_{k}"],
                self.cfg,
                model_options=model_options,
                seed=seed,
            )
            if out is None:
                out = res.new_empty((batch, *res.shape[1:]))
            out.index_copy_(0, idx.to(res.device), res)
        assert out is not None
        return out


def diffusion_parameters(model: Any) -> int:
    """Parameters of the diffusion network (weights only; fixed for a model file, whatever is loaded)."""
    network = getattr(model.model, "diffusion_model", model.model)
    return sum(p.numel() for p in network.parameters())


def memory_budget(model: Any, device: torch.device) -> float:
    """Bytes a stage's activations may plan on: the device's *total* memory less the model's weights
    and ComfyUI's fixed reserve (ARCHITECTURE.md §5). Never the free memory: that moves with load
    and with the other models loaded."""
    total = comfy.model_management.get_total_memory(device)
    return total - model.model_size() - comfy.model_management.extra_reserved_memory()


def device_kind(device: torch.device) -> str:
    return "cpu" if comfy.model_management.is_device_cpu(device) else "accelerator"


class StageReport:
    """How one stage's rows were split into model calls, as the node UI and ``report.json`` show it.

    Attributes:
        label: the stage's label.
        plan: the static :class:`~oir_core.host.CallPlan`.
        calls: model calls made.
        largest_call: the most rows one call held.
        fallbacks: ``"low_memory"`` / ``"out_of_memory"`` events with the rows they split to; any
            entry means the numbers may differ from a run that kept the plan.
    """

    def __init__(self, label: str, plan: CallPlan) -> None:
        self.label = label
        self.plan = plan
        self.calls = 0
        self.largest_call = 0
        self.fallbacks: list[dict[str, Any]] = []

    def fallback(self, kind: str, rows: int, split_to: int, detail: str) -> None:
        if not any(f["kind"] == kind and f["split_to"] == split_to for f in self.fallbacks):
            self.fallbacks.append({"kind": kind, "rows": rows, "split_to": split_to, "detail": detail})
            logging.warning(
                "OIR %s: %s; calls of %d rows split to %d, so this result may differ from a run that "
                "kept the planned split", self.label, detail, rows, split_to,
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.label,
            **self.plan.to_dict(),
            "calls": self.calls,
            "largest_call": self.largest_call,
            "fallbacks": list(self.fallbacks),
            "as_planned": not self.fallbacks,
        }


class StageSampler(comfy.samplers.Sampler):
    """A ``comfy.samplers.Sampler`` that hands the sampling context to an engine ``body``.

    ``sample`` (called by ``CFGGuider.sample`` once models are loaded and conds processed) plans the
    rows per model call from fixed facts only (:func:`~oir_core.host.plan_call_rows`: the stage's
    rows, the device's total memory less the weights, the model's size and the latent's, the
    user's ``max_batch``), builds the denoiser and calls ``body(denoiser, rows_per_call)``. Before a
    call it makes sure the free memory holds it as ComfyUI requires to batch cond and uncond
    together, unloading other models through ComfyUI if needed; only when that fails is the call
    split further, and :attr:`report` says so (ARCHITECTURE.md §5). The body's real result is kept
    in :attr:`result`; ``sample`` returns zeros shaped like ``noise``.

    Args:
        stage: the engine stage being run.
        body: the engine's callable.
        user_max_batch: the user's cap on rows per call (``None``: none).
        branches: forward passes per row (2 with CFG, 1 without), for the memory estimate.
        guider: the guider running this sampler (its loaded models are kept loaded).
        guided_guider: the :class:`GuidedCFGGuider` whose ``cond_ids`` to set, for role ``"guided"``.
        budget: override of :func:`memory_budget` in bytes (tests); ``None`` computes it.
        progress: the stage's live progress, told about every model call.
    """

    def __init__(
        self,
        stage: Stage,
        body: Callable[[Denoiser, int | None], Any],
        user_max_batch: int | None,
        branches: int,
        guider: Any = None,
        guided_guider: GuidedCFGGuider | None = None,
        budget: float | None = None,
        progress: StageProgress | None = None,
    ) -> None:
        self.stage = stage
        self.progress = progress
        self.body = body
        self.user_max_batch = user_max_batch
        self.branches = branches
        self.guider = guider
        self.guided_guider = guided_guider
        self.budget = budget
        self.result: Any = None
        self.max_batch: int | None = None
        self.report: StageReport | None = None

    def _keep_loaded(self) -> list[Any]:
        """ComfyUI's entries for the models this sampling uses (never unloaded to make room)."""
        guider = self.guider
        ours = [getattr(guider, "model_patcher", None), *getattr(guider, "loaded_models", [])]
        return [
            loaded
            for loaded in comfy.model_management.current_loaded_models
            if any(loaded.model is m or (m is not None and loaded.model.is_clone(m)) for m in ours)
        ]

    def sample(
        self,
        model_wrap: Any,
        sigmas: Tensor,
        extra_args: dict,
        callback: Any,
        noise: Tensor,
        latent_image: Tensor | None = None,
        denoise_mask: Tensor | None = None,
        disable_pbar: bool = False,
    ) -> Tensor:
        device = noise.device
        latent_shape = tuple(self.stage.latent_shape)
        patcher = getattr(self.guider, "model_patcher", None)
        memory_required = model_wrap.inner_model.memory_required
        budget = self.budget if self.budget is not None else memory_budget(patcher, device)
        memory_rows = fit_max_batch(memory_required, latent_shape, self.stage.rows, budget, self.branches)
        positions = math.prod(int(s) for s in latent_shape[1:])
        plan = plan_call_rows(
            self.stage.rows,
            memory_rows,
            float(diffusion_parameters(patcher)) * positions * self.branches,
            device_kind(device),
            self.user_max_batch,
        )
        self.max_batch = plan.rows_per_call
        report = self.report = StageReport(self.stage.label or self.stage.role, plan)
        guided = self.guided_guider

        def need(rows: int) -> float:
            """Free bytes ComfyUI wants to run ``rows`` rows' branches in one forward
            (``comfy.samplers._calc_cond_batch``)."""
            return memory_required([rows * self.branches, *latent_shape]) * MEMORY_SAFETY_FACTOR

        def rows_that_fit(rows: int) -> int:
            """``rows``, unless free memory cannot hold them even after unloading other models."""
            if need(rows) < comfy.model_management.get_free_memory(device):
                return rows
            if not comfy.model_management.is_device_cpu(device):  # unloading frees no RAM on the CPU
                comfy.model_management.free_memory(need(rows), device, keep_loaded=self._keep_loaded())
            free = comfy.model_management.get_free_memory(device)
            if need(rows) < free:
                return rows
            fits = fit_max_batch(memory_required, latent_shape, rows, free, self.branches)
            detail = f"{free / 2**30:.2f} GiB free, {need(rows) / 2**30:.2f} GiB needed"
            report.fallback(LOW_MEMORY_SPLIT, rows, fits, detail)
            return fits

        def model_call(x_dev: Tensor, sig: Tensor, ids: Tensor | None) -> Tensor:
            """One forward of ``x_dev [b, ...]`` (on the model's device) through ComfyUI's sampling path."""
            comfy.model_management.throw_exception_if_processing_interrupted()
            if guided is not None:
                guided.cond_ids = ids
            try:
                with torch.no_grad():
                    out = model_wrap(x_dev, sig * x_dev.new_ones(x_dev.shape[0]), **extra_args)
            except Exception as error:
                if is_out_of_memory(error) and x_dev.shape[0] > 1:  # the engine halves and retries
                    rows = x_dev.shape[0]
                    report.fallback(OUT_OF_MEMORY_SPLIT, rows, max(1, rows // 2), "out of memory")
                raise
            finally:
                if guided is not None:
                    guided.cond_ids = None
            report.calls += 1
            report.largest_call = max(report.largest_call, x_dev.shape[0])
            if self.progress is not None:
                self.progress.after_call(x_dev.shape[0], float(sig))
            return out

        def denoiser(x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
            """``x [B, *latent_shape]``, ``sigma`` 0-dim, ``cond_ids [B]`` (guided role) -> ``x0_hat``.

            ``x0_hat`` has ``x``'s shape, device and dtype. The engine hands at most the planned rows;
            a batch is split further only when free memory cannot hold it (reported).
            """
            comfy.model_management.throw_exception_if_processing_interrupted()
            if tuple(x.shape[1:]) != latent_shape:
                raise ValueError(
                    f"denoiser: x has shape {tuple(x.shape)}, the stage's latent shape is {latent_shape}"
                )
            batch = x.shape[0]
            x_dev = x.to(device)
            sig = torch.as_tensor(sigma).to(device=device, dtype=torch.float32).reshape(())
            ids = None
            if guided is not None:
                if cond_ids is None:
                    raise ValueError("denoiser: the 'guided' role needs cond_ids")
                ids = torch.as_tensor(cond_ids).to(dtype=torch.int64).reshape(-1)
                if ids.shape[0] != batch:
                    raise ValueError(f"denoiser: cond_ids has {ids.shape[0]} entries for a batch of {batch}")
                if batch and (int(ids.min()) < 0 or int(ids.max()) >= guided.num_pairs):
                    raise ValueError(
                        f"denoiser: cond_ids must lie in [0, {guided.num_pairs}), got {ids.tolist()}"
                    )
            pieces, start = [], 0
            while start < batch or not pieces:
                size = rows_that_fit(batch - start) if batch > start else 0
                rows = slice(start, start + size)
                pieces.append(model_call(x_dev[rows], sig, None if ids is None else ids[rows]))
                start += size
            out = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
            return out.to(device=x.device, dtype=x.dtype)

        self.result = self.body(denoiser, self.max_batch)
        return torch.zeros_like(noise)


# --------------------------------------------------------------------------------------------------
# The host
# --------------------------------------------------------------------------------------------------


class ComfyHost:
    """The engine's :class:`~oir_core.host.Host` on a ComfyUI MODEL and CONDITIONINGs.

    Roles (ARCHITECTURE.md §3):

    - ``"original"``: ``CFGGuider(positive=original, negative=negative)`` at cfg 1 (ComfyUI then
      evaluates the conditional branch only).
    - ``"guided"``: :class:`GuidedCFGGuider` with ``guided[k]`` per row vs ``negative``, at ``cfg``.
    - ``"target"``: ``CFGGuider(positive=target, negative=negative)`` at ``cfg``.

    Every user CONDITIONING is passed to ComfyUI unchanged (ControlNet, hooks, masks ride in it) and
    is never mutated. A new guider is built per :meth:`run`, so the host holds no sampling state.

    Args:
        model: the ModelPatcher from the graph (LoRA'd, patched; never mutated).
        original: CONDITIONING of the original prompt P_o.
        negative: the negative CONDITIONING; ``None`` uses ``original`` (OIR's default,
            negative-prompt-inversion style).
        guided: one CONDITIONING per edit pair (guided prompt G_k).
        target: CONDITIONING of the target prompt P_t (``None`` if no target stage will run).
        cfg: the CFG scale of the ``"guided"`` and ``"target"`` roles.
        seed: passed to ComfyUI as the sampling seed (used by some conds / patches only; the
            engine's steps are deterministic).
        max_batch: the user's cap on rows per model call (``None``: planned from the model, the
            latent and the device's total memory, :class:`StageSampler`).

    Attributes:
        last_max_batch: the chunk size given to the most recent body.
        last_model_calls: model calls (``sampling_function`` rounds) of the most recent stage.
        reports: one :class:`StageReport` per stage run, in order (the split, shown by the nodes).
        memory_budget_override: set to a byte count to replace :func:`memory_budget` (tests,
            benchmarks).
    """

    def __init__(
        self,
        model: Any,
        original: Conditioning,
        negative: Conditioning | None,
        guided: Sequence[Conditioning],
        target: Conditioning | None,
        cfg: float,
        seed: int = 0,
        max_batch: int | None = None,
    ) -> None:
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        self.model = model
        self.original = original
        self.negative = negative if negative is not None else original
        self.guided = list(guided)
        self.target = target
        self.cfg = float(cfg)
        self.seed = int(seed)
        self.max_batch = max_batch
        self.last_max_batch: int | None = None
        self.last_model_calls = 0
        self.reports: list[StageReport] = []
        self.memory_budget_override: float | None = None

    def _cfg1_skips_uncond(self) -> bool:
        return not self.model.model_options.get("disable_cfg1_optimization", False)

    def _guider(self, role: str) -> tuple[comfy.samplers.CFGGuider, int, GuidedCFGGuider | None]:
        """Build the guider for ``role``: ``(guider, branches per row, guided guider or None)``."""
        if role == "original":
            guider = comfy.samplers.CFGGuider(self.model)
            guider.set_conds(self.original, self.negative)
            guider.set_cfg(1.0)
            return guider, 1 if self._cfg1_skips_uncond() else 2, None
        branches = 1 if math.isclose(self.cfg, 1.0) and self._cfg1_skips_uncond() else 2
        if role == "target":
            if self.target is None:
                raise ValueError("ComfyHost: a 'target' stage needs the target conditioning")
            guider = comfy.samplers.CFGGuider(self.model)
            guider.set_conds(self.target, self.negative)
            guider.set_cfg(self.cfg)
            return guider, branches, None
        if role == "guided":
            if not self.guided:
                raise ValueError("ComfyHost: a 'guided' stage needs at least one guided conditioning")
            guided = GuidedCFGGuider(self.model)
            guided.set_guided_conds(self.guided, self.negative)
            guided.set_cfg(self.cfg)
            return guided, branches, guided
        raise ValueError(f"ComfyHost: unknown role {role!r}")

    def run(self, stage: Stage, body: Callable[[Denoiser, int | None], R]) -> R:
        """Run ``body(denoiser, max_batch)`` inside ``guider.sample`` and return its result.

        ``guider.sample`` gets zero ``noise`` / ``latent_image`` of one row, or of the user's
        ``max_batch`` rows when set, and ``sigmas = stage.sigmas`` (so hooks and ControlNet percents
        see the real schedule; ascending inversion schedules are fine: the guider only passes them
        through). ComfyUI sizes its memory reservation from ``noise`` before it decides how much of
        the model to load: reserving for the whole stage (100 rows for two pairs at T = 50) would
        make it load SDXL-, SD3- or Flux-sized models only partially on consumer GPUs. The real
        rows per call are planned inside :class:`StageSampler` from fixed facts only.
        """
        sigmas = torch.as_tensor(stage.sigmas, dtype=torch.float32).reshape(-1)
        if sigmas.numel() == 0:
            raise ValueError(f"ComfyHost: stage {stage.label!r} has no sigmas")
        if stage.rows < 1:
            raise ValueError(f"ComfyHost: stage {stage.label!r} has rows = {stage.rows}")
        guider, branches, guided = self._guider(stage.role)
        chunk = 1 if self.max_batch is None else min(stage.rows, self.max_batch)
        shape = (chunk, *(int(s) for s in stage.latent_shape))
        noise = torch.zeros(shape, dtype=torch.float32)
        latent = torch.zeros(shape, dtype=torch.float32)
        sampler = StageSampler(
            stage,
            body,
            self.max_batch,
            branches,
            guider=guider,
            guided_guider=guided,
            budget=self.memory_budget_override,
            progress=StageProgress(stage),
        )
        guider.sample(
            noise,
            latent,
            sampler,
            sigmas,
            denoise_mask=None,
            callback=None,
            disable_pbar=True,
            seed=self.seed,
        )
        self.last_max_batch = sampler.max_batch
        assert sampler.report is not None
        self.last_model_calls = sampler.report.calls
        self.reports.append(sampler.report)
        return sampler.result

    def split_report(self) -> list[dict[str, Any]]:
        """Every stage's split so far (:meth:`StageReport.to_dict`), for a node's UI."""
        return [report.to_dict() for report in self.reports]
