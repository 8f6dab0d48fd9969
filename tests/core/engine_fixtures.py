"""Shared builders for the engine tests: analytic hosts, a tiny nonlinear denoiser, call recorders."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from oir_core.analytic import GaussianModel, sd_discrete_sigmas
from oir_core.inversion import InversionTrajectory

SD_CLEAN_SIGMA = float(sd_discrete_sigmas()[0])
LATENT_SHAPE = (4, 8, 8)


def prompt_means(prompts: int, shape: tuple[int, ...] = LATENT_SHAPE, seed: int = 0) -> Tensor:
    """``[P, *shape]`` means that differ per prompt and per position."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(prompts, *shape, generator=generator) * 0.6


def clean_latent(model: GaussianModel, prompt: int = 0, seed: int = 1) -> Tensor:
    """A draw ``x0 ~ N(mu_prompt, s^2)``."""
    generator = torch.Generator().manual_seed(seed)
    return model.means[prompt] + model.std * torch.randn(model.means.shape[1:], generator=generator)


class TinyConditionedNet(nn.Module):
    """A small nonlinear denoiser whose output depends on x, sigma and the row's prompt id."""

    def __init__(self, channels: int = 4, prompts: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.Embedding(prompts, 16)
        self.inp = nn.Conv2d(channels, 16, 3, padding=1)
        self.out = nn.Conv2d(16, channels, 3, padding=1)

    @torch.no_grad()
    def forward(self, x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
        ids = torch.zeros(x.shape[0], dtype=torch.long) if cond_ids is None else cond_ids
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1)
        scale = 1.0 / torch.sqrt(1.0 + sigma**2)
        hidden = torch.tanh(self.inp(x * scale.reshape(-1, 1, 1, 1)) + self.embed(ids)[:, :, None, None])
        eps = self.out(hidden * torch.log1p(sigma).reshape(-1, 1, 1, 1))
        return x - sigma.reshape(-1, 1, 1, 1) * eps


@dataclass
class CallRecorder:
    """Wraps a denoiser and records every call's batch size, sigma and ids."""

    inner: object
    calls: list[dict] = field(default_factory=list)

    def __call__(self, x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
        self.calls.append(
            {
                "rows": x.shape[0],
                "sigma": float(sigma),
                "ids": None if cond_ids is None else cond_ids.tolist(),
            }
        )
        return self.inner(x, sigma, cond_ids)  # type: ignore[operator]


def serial_denoise(
    denoiser, x: Tensor, level_sigmas: Tensor, start: int, end: int, cond_id: int | None
) -> Tensor:  # type: ignore[no-untyped-def]
    """Reference: one row, one level at a time, DDIM eta=0 written out independently of the engine."""
    return walk_by_hand(denoiser, x, level_sigmas, list(range(start, end - 1, -1)), cond_id)


def walk_by_hand(denoiser, x: Tensor, level_sigmas: Tensor, levels: list[int], cond_id: int | None) -> Tensor:  # type: ignore[no-untyped-def]
    """Reference: one row ``[*latent_shape]`` walked over ``levels`` (descending), one DDIM eta=0
    step (the PF-ODE's Euler step, ARCHITECTURE.md §3) per pair of levels, independently of the engine."""
    ids = None if cond_id is None else torch.tensor([cond_id])
    x = x.unsqueeze(0)
    for level, next_level in itertools.pairwise(levels):
        sigma = level_sigmas[level]
        sigma_next = level_sigmas[next_level]
        x0_hat = denoiser(x, sigma, ids)
        x = x0_hat if float(sigma_next) == 0.0 else x + (x - x0_hat) / sigma * (sigma_next - sigma)
    return x[0]


def relative_path_error(model: GaussianModel, trajectory: InversionTrajectory, x0: Tensor) -> float:
    """Largest error of any inverted latent against the exact path through the level-0 state,
    relative to the path's std (the official conventions start at sigma_min, euler at 0)."""
    worst = 0.0
    start_sigma = float(trajectory.level_sigmas[0])
    for level, sigma in enumerate(trajectory.level_sigmas.tolist()):
        exact = model.exact_path(trajectory.latents[0], start_sigma, sigma, model.means[0])
        error = (trajectory.latents[level] - exact).abs().max().item() / float(model.std_path(sigma))
        worst = max(worst, error)
    return worst
