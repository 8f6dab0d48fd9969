"""DDIM inversion of the source image (OIR step 1, ARCHITECTURE.md §4.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import OIRInputError
from .host import Host, Stage
from .options import CONVENTIONS, INVERSION_CONVENTIONS
from .sampling import (
    OFFICIAL_FAMILY,
    CallStats,
    InversionConvention,
    LevelCallback,
    ascending_walk,
    invert_levels,
)


@dataclass(frozen=True)
class InversionTrajectory:
    """Every latent of a DDIM inversion, shared by all edit pairs of one image.

    Attributes:
        latents: ``[T+1, *latent_shape]``; ``latents[k]`` is the state at level ``k`` (``k = 0``: the
            clean latent's state, ``z0 * sqrt(1 + sigma_min^2)`` in the official conventions, ``k = T``:
            the fully inverted one), in the host's model space.
        sigmas: ``[T+1]`` the host's *descending* schedule ending at 0, as given to :func:`invert`.
        convention: one of :data:`oir_core.sampling.INVERSION_CONVENTIONS`.
        clean_sigma: the level the clean latent was treated as sitting at for the first step, or
            ``None`` for a small positive start.
        stats: model use of the inversion.
        source: host-provided facts about where it came from (model id, scheduler, image size);
            nodes compare them against their other inputs to refuse mismatched trajectories.
    """

    latents: Tensor
    sigmas: Tensor
    convention: str
    clean_sigma: float | None
    stats: CallStats = field(default_factory=CallStats)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """``T``, the number of inversion steps."""
        return self.latents.shape[0] - 1

    @property
    def landing_sigma(self) -> float:
        """Where every denoising to level 0 ends: the t = 0 level for ``official``, else sigma 0."""
        return float(self.clean_sigma or 0.0) if self.convention == "official" else 0.0

    @property
    def level_sigmas(self) -> Tensor:
        """``[T+1]`` ascending noise levels of the walks; level 0 is :attr:`landing_sigma`."""
        levels = self.sigmas.flip(0).clone()
        levels[0] = self.landing_sigma
        return levels

    def to_clean(self, x: Tensor) -> Tensor:
        """``[N, *latent_shape]`` states that landed at level 0 -> clean latents for the VAE.

        ``official`` lands at the t = 0 level: dividing the state by ``sqrt(1 + sigma_min^2)`` gives
        the DDPM sample ``sqrt(abar_0) x0_hat + sqrt(1 - abar_0) eps_hat`` the official code decodes.
        Elsewhere the landing is sigma = 0, where the state is already ``x0_hat``.
        """
        return x / math.sqrt(1.0 + self.landing_sigma**2)

    def landing_state(self) -> Tensor:
        """``[*latent_shape]`` the source's own state where every denoise lands (level 0 of the walks).

        ``official`` lands at the t = 0 level, where the inversion's ``latents[0]`` sits; the other
        conventions land at sigma = 0, where the state is the clean latent ``z0`` itself (for
        ``official_x0`` ``latents[0]`` sits at sigma_min, so it is scaled back). :meth:`to_clean` of it
        is ``z0``: the ``preserve`` background at level 0 (ARCHITECTURE.md §4.5).
        """
        if self.convention == "official":
            return self.latents[0]
        return self.source_latent()

    def source_latent(self) -> Tensor:
        """``[*latent_shape]`` the clean source latent ``z0`` the inversion started from."""
        return self.latents[0] / start_scale(self.convention, self.clean_sigma)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:])

    def latent_at(self, level: int) -> Tensor:
        """``[*latent_shape]`` the inverted latent ``x_level``."""
        return self.latents[level]


def start_scale(convention: str, clean_sigma: float | None) -> float:
    """Level-0 state = clean latent x this: ``sqrt(1 + sigma_min^2)`` in the official conventions.

    The official code feeds the VAE latent ``z0`` itself to its first model call at t = 0, i.e. it
    treats ``z0`` as the DDPM-normalised sample ``x / sqrt(1 + sigma^2)`` at sigma_min (DDPM's
    ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` is ``x / sqrt(1 + sigma^2)`` in sigma space).
    """
    if convention in OFFICIAL_FAMILY and clean_sigma:
        return math.sqrt(1.0 + float(clean_sigma) ** 2)
    return 1.0


def choose_convention(
    requested: str, *, flow: bool, discrete_vp: bool, clean_sigma: float | None, sigmas: Tensor
) -> str:
    """The inversion convention for a model and schedule: ``auto`` resolved, the others checked.

    The official conventions rest on DDPM's discrete schedule: the VAE latent is the sample at the
    t = 0 level and each step moves one DDIM timestep up. That holds for a variance-preserving
    model with a discrete schedule and ``sigma_data = 1`` (``discrete_vp``: SD1.x, SD2.x, SDXL), and
    only when the schedule's first noise level lies above that t = 0 level. Elsewhere (flow models;
    EDM-style models with ``sigma_data != 1`` such as Playground v2.5, or continuous ones such as
    CosXL; schedules that start at sigma_min such as ``karras`` and ``exponential``) ``auto`` picks
    ``euler``, which follows the probability-flow ODE in sigma space for any of them, and an
    explicit official convention is refused.

    Args:
        requested: ``"auto"`` or one of :data:`oir_core.sampling.INVERSION_CONVENTIONS`.
        sigmas: ``[T+1]`` the descending schedule ending at 0.
    """
    if requested not in CONVENTIONS:
        raise OIRInputError("convention", requested, "unknown convention", f"use one of {CONVENTIONS}")
    levels = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    positive = levels[levels > 0]
    first = float(positive.min()) if positive.numel() else 0.0
    if flow:
        reason = "flow models (SD3, Flux) have no DDPM t = 0 level"
    elif not discrete_vp or not clean_sigma:
        reason = (
            "the model's sampling is not a discrete variance-preserving schedule with sigma_data = 1 "
            "(EDM-style or continuous sampling)"
        )
    elif first <= float(clean_sigma) * (1.0 + 1e-4):
        reason = (
            f"the schedule's first level ({first:.4g}) is the model's t = 0 level itself "
            "(karras/exponential-style schedules start at sigma_min)"
        )
    else:
        reason = ""
    if requested == "auto":
        return "euler" if reason else "official"
    if requested in OFFICIAL_FAMILY and reason:
        raise OIRInputError(
            "convention",
            requested,
            f"the official convention needs a DDPM t = 0 level below the first step, but {reason}",
            "use 'auto' or 'euler' (or the ddim_uniform scheduler for SD-type models)",
        )
    return requested


def validate_schedule(sigmas: Tensor, name: str = "sigmas") -> Tensor:
    """Check a descending ``[T+1]`` schedule that ends at 0, as ComfyUI's schedulers produce."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sigmas.numel() < 3:
        raise OIRInputError(name, sigmas.tolist(), "needs at least 2 steps", "use steps >= 2")
    if not torch.isfinite(sigmas).all():
        raise OIRInputError(
            name,
            sigmas.tolist(),
            "contains NaN or inf",
            "choose the scheduler ddim_uniform (the paper's) or normal",
        )
    if float(sigmas[-1]) != 0.0:
        raise OIRInputError(
            name,
            float(sigmas[-1]),
            "the schedule must end at sigma 0",
            "choose one of ComfyUI's schedulers (ddim_uniform, the paper's, or normal), which end at 0",
        )
    if not (sigmas[:-1] > sigmas[1:]).all():
        raise OIRInputError(
            name,
            sigmas.tolist(),
            "must be strictly descending",
            "choose the scheduler ddim_uniform (the paper's) or normal, or change steps (some schedules "
            "repeat a level at some step counts)",
        )
    return sigmas


def invert(
    host: Host,
    latent: Tensor,
    sigmas: Tensor,
    convention: InversionConvention = "official",
    clean_sigma: float | None = None,
    max_batch: int | None = None,
    on_level: LevelCallback | None = None,
    source: dict[str, Any] | None = None,
) -> InversionTrajectory:
    """Invert a clean latent with the original prompt, CFG off, keeping all ``T+1`` latents.

    OIR step 1 (paper §3.1): ``x_0 = latent * start_scale``, ``x_{k+1} = step(x_k)`` on the
    ascending schedule, conditional branch only (the host's ``"original"`` role).

    Args:
        latent: ``[*latent_shape]`` or ``[1, *latent_shape]`` clean latent in model space (for SD,
            the VAE latent times its scale factor: the official code's ``z0``).
        sigmas: ``[T+1]`` descending schedule ending at 0.
        convention: ``"official"`` (default for noise-/v-prediction; needs ``clean_sigma``),
            ``"official_x0"`` (same inversion, denoising ends at sigma 0) or ``"euler"`` (flow models).
        clean_sigma: for the official conventions, the discrete model's t = 0 level (``sigma_min``).
    """
    sigmas = validate_schedule(sigmas)
    if convention not in INVERSION_CONVENTIONS:
        raise OIRInputError(
            "inversion_convention", convention, "unknown convention", f"use one of {INVERSION_CONVENTIONS}"
        )
    if convention in OFFICIAL_FAMILY and not clean_sigma:
        raise OIRInputError(
            "inversion_convention",
            convention,
            "the official convention needs the model's t = 0 noise level (a discrete noise schedule)",
            "use 'euler' for flow or continuous-time models",
        )
    if latent.ndim >= 2 and latent.shape[0] == 1:
        latent = latent[0]
    if not torch.isfinite(latent).all():
        raise OIRInputError(
            "latent",
            "latent with NaN/inf",
            "the input latent is not finite",
            "connect VAE Encode of the source image (a NaN/inf latent comes from a broken VAE or image: "
            "try another VAE, or fp32 with ComfyUI --fp32-vae)",
        )
    level_sigmas = sigmas.flip(0).to(latent.device)
    steps = sigmas.numel() - 1
    start_sigma = clean_sigma if convention in OFFICIAL_FAMILY else None
    latent = latent * start_scale(convention, start_sigma)
    stats = CallStats()
    stage = Stage(
        role="original",
        sigmas=ascending_walk(sigmas.flip(0), 0, steps, start_sigma),
        rows=1,
        latent_shape=tuple(latent.shape),
        label="inversion",
        total_rows=steps,
    )

    def body(denoiser, host_max_batch):  # type: ignore[no-untyped-def]
        return invert_levels(
            denoiser,
            latent.unsqueeze(0),
            level_sigmas,
            0,
            steps,
            convention,
            start_sigma,
            max_batch=max_batch or host_max_batch,
            stats=stats,
            on_level=on_level,
        )

    latents = host.run(stage, body)
    return InversionTrajectory(
        latents=torch.cat(latents, dim=0),
        sigmas=sigmas,
        convention=convention,
        clean_sigma=start_sigma,
        stats=stats,
        source=dict(source or {}),
    )


def check_trajectory_source(
    trajectory: Any, expected: dict[str, Any], input_name: str = "trajectory"
) -> None:
    """Refuse a trajectory made by another model, parameterisation or latent layout.

    Every key present in both ``trajectory.source`` and ``expected`` must agree (floats to 1e-4
    relative), e.g. ``model_sampling``, ``latent_channels``, ``sigma_max``.
    """
    if not isinstance(trajectory, InversionTrajectory):
        raise OIRInputError(
            input_name,
            type(trajectory).__name__,
            "is not an OIR trajectory",
            "connect OIR DDIM Inversion's output",
        )
    for key in sorted(set(trajectory.source) & set(expected)):
        made, now = trajectory.source[key], expected[key]
        same = (
            abs(float(made) - float(now)) <= 1e-4 * max(1.0, abs(float(now)))
            if isinstance(made, float) or isinstance(now, float)
            else made == now
        )
        if not same:
            raise OIRInputError(
                input_name,
                f"{key}={made!r}",
                f"the trajectory was made with {key}={made!r} but this node's model has {key}={now!r}",
                "invert the image with the same model (LoRA and patches may differ) and re-run the graph",
            )
