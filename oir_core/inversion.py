"""DDIM inversion of the source image (OIR step 1, DESIGN.md §4.1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .errors import OIRInputError
from .host import Host, Stage
from .sampling import (
    INVERSION_CONVENTIONS,
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
        latents: ``[T+1, *latent_shape]``; ``latents[k]`` sits at level ``k`` (``k = 0``: the clean
            latent, ``k = T``: the fully inverted one), in the host's model space.
        sigmas: ``[T+1]`` the host's *descending* schedule ending at 0, as given to :func:`invert`.
        convention: ``"official"`` or ``"euler"`` (see :func:`oir_core.sampling.inversion_step`).
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
    def level_sigmas(self) -> Tensor:
        """``[T+1]`` ascending; ``level_sigmas[k]`` is the noise level of ``latents[k]``."""
        return self.sigmas.flip(0)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.latents.shape[1:])

    def latent_at(self, level: int) -> Tensor:
        """``[*latent_shape]`` the inverted latent ``x_level``."""
        return self.latents[level]


def validate_schedule(sigmas: Tensor, name: str = "sigmas") -> Tensor:
    """Check a descending ``[T+1]`` schedule that ends at 0, as ComfyUI's schedulers produce."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).flatten().cpu()
    if sigmas.numel() < 3:
        raise OIRInputError(name, sigmas.tolist(), "needs at least 2 steps", "use steps >= 2")
    if not torch.isfinite(sigmas).all():
        raise OIRInputError(name, sigmas.tolist(), "contains NaN or inf", "use a standard scheduler")
    if float(sigmas[-1]) != 0.0:
        raise OIRInputError(
            name, float(sigmas[-1]), "the schedule must end at sigma 0", "use a scheduler that ends at 0"
        )
    if not (sigmas[:-1] > sigmas[1:]).all():
        raise OIRInputError(
            name, sigmas.tolist(), "must be strictly descending", "use a scheduler without repeated levels"
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

    OIR step 1 (paper §3.1; DESIGN.md §4.1): ``x_0 = latent``, ``x_{k+1} = step(x_k)`` on the
    ascending schedule, conditional branch only (the host's ``"original"`` role).

    Args:
        latent: ``[*latent_shape]`` or ``[1, *latent_shape]`` clean latent in model space.
        sigmas: ``[T+1]`` descending schedule ending at 0.
        convention: ``"official"`` (default for noise-/v-prediction; needs ``clean_sigma``) or
            ``"euler"`` (flow models).
        clean_sigma: for ``official``, the discrete model's t = 0 level (``sigma_min``).
    """
    sigmas = validate_schedule(sigmas)
    if convention not in INVERSION_CONVENTIONS:
        raise OIRInputError(
            "inversion_convention", convention, "unknown convention", f"use one of {INVERSION_CONVENTIONS}"
        )
    if convention == "official" and not clean_sigma:
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
            "latent", "latent with NaN/inf", "the input latent is not finite", "re-encode the image"
        )
    level_sigmas = sigmas.flip(0).to(latent.device)
    steps = sigmas.numel() - 1
    start_sigma = clean_sigma if convention == "official" else None
    stats = CallStats()
    stage = Stage(
        role="original",
        sigmas=ascending_walk(sigmas.flip(0), 0, steps, start_sigma),
        rows=1,
        latent_shape=tuple(latent.shape),
        label="inversion",
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
