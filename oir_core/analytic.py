"""Analytic reference models with exact denoisers and exact ODE paths (ARCHITECTURE.md §7).

With per-pixel Gaussian data ``x0 ~ N(mu, s^2)`` the ideal denoiser and the probability-flow ODE
path are known in closed form, so the engine can be checked exactly on CPU, and the benchmarks can
run the real search on cases whose score curves are meaningful. Means may depend on the prompt
(``cond_ids``) and on position, which lets tests follow guided prompts, CFG and mask routing.

Two parameterisations:

- ``"vp"`` (noise-/v-prediction models in k-diffusion space): ``x = x0 + sigma * n``.
- ``"flow"`` (rectified flow, SD3/Flux): ``x = (1 - sigma) * x0 + sigma * n``.

Both have ``E[x0 | x] = mu + g(sigma) * (x - m(sigma))`` and the exact path
``x(sigma) = m(sigma) + v(sigma) / v(sigma0) * (x(sigma0) - m(sigma0))`` with
``m = mu`` (vp) or ``(1 - sigma) mu`` (flow) and ``v = sqrt(s^2 + sigma^2)`` (vp) or
``sqrt((1 - sigma)^2 s^2 + sigma^2)`` (flow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Parameterization = Literal["vp", "flow"]


def _rows(value: Tensor | float, like: Tensor) -> Tensor:
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value if value.ndim == 0 else value.reshape(-1, *([1] * (like.ndim - 1)))


@dataclass
class GaussianModel:
    """Per-pixel Gaussian data with a prompt- and position-dependent mean.

    Attributes:
        means: ``[P, *latent_shape]``: the data mean for each prompt id ``0..P-1``.
        std: the data standard deviation ``s``.
        parameterization: ``"vp"`` or ``"flow"``.
    """

    means: Tensor
    std: float = 0.5
    parameterization: Parameterization = "vp"

    def mean_path(self, mu: Tensor, sigma: Tensor | float) -> Tensor:
        """``m(sigma)``: the mean of ``x`` at ``sigma``."""
        if self.parameterization == "vp":
            return mu
        return (1.0 - _rows(sigma, mu)) * mu

    def std_path(self, sigma: Tensor | float) -> Tensor:
        """``v(sigma)``: the standard deviation of ``x`` at ``sigma``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        s2 = self.std**2
        if self.parameterization == "vp":
            return torch.sqrt(s2 + sigma**2)
        return torch.sqrt((1.0 - sigma) ** 2 * s2 + sigma**2)

    def denoise_with_mean(self, x: Tensor, sigma: Tensor, mu: Tensor) -> Tensor:
        """Exact ``E[x0 | x]`` for data mean ``mu`` (``[B, ...]``) at ``sigma``."""
        s2 = self.std**2
        sig = _rows(sigma, x)
        if self.parameterization == "vp":
            gain = s2 / (s2 + sig**2)
            return mu + gain * (x - mu)
        gain = (1.0 - sig) * s2 / ((1.0 - sig) ** 2 * s2 + sig**2)
        return mu + gain * (x - (1.0 - sig) * mu)

    def prompt_means(self, cond_ids: Tensor | None, batch: int, prompt: int) -> Tensor:
        """``[B, ...]`` the mean of each row: by ``cond_ids`` when given, else the fixed ``prompt``."""
        if cond_ids is None:
            return self.means[prompt].expand(batch, *self.means.shape[1:])
        return self.means.index_select(0, cond_ids.to(self.means.device))

    def denoiser(self, prompt: int = 0, id_offset: int = 0):  # type: ignore[no-untyped-def]
        """A CFG-free denoiser for one prompt, or by ``cond_ids + id_offset`` when rows carry ids."""

        def denoise(x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
            ids = None if cond_ids is None else cond_ids + id_offset
            return self.denoise_with_mean(x, sigma, self.prompt_means(ids, x.shape[0], prompt))

        return denoise

    def cfg_denoiser(self, negative: int, cfg: float, positive: int | None = None, id_offset: int = 0):  # type: ignore[no-untyped-def]
        """``D_neg + cfg * (D_pos - D_neg)``; the positive prompt is ``cond_ids + id_offset`` per row,
        or ``positive`` when rows carry no ids."""

        def denoise(x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
            neg = self.denoise_with_mean(x, sigma, self.prompt_means(None, x.shape[0], negative))
            ids = None if cond_ids is None else cond_ids + id_offset
            pos = self.denoise_with_mean(x, sigma, self.prompt_means(ids, x.shape[0], positive or 0))
            return neg + cfg * (pos - neg)

        return denoise

    def exact_path(self, x_from: Tensor, sigma_from: float, sigma_to: float, mu: Tensor) -> Tensor:
        """The exact PF-ODE solution carried from ``sigma_from`` to ``sigma_to`` for data mean ``mu``.

        CFG with a Gaussian pair is again Gaussian with ``mu = mu_neg + cfg (mu_pos - mu_neg)``.
        """
        ratio = float(self.std_path(sigma_to) / self.std_path(sigma_from))
        return self.mean_path(mu, sigma_to) + ratio * (x_from - self.mean_path(mu, sigma_from))


def sd_discrete_sigmas(timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Tensor:
    """``[1000]`` Stable Diffusion's scaled-linear sigmas, ``sigma_t = sqrt((1 - abar_t) / abar_t)``."""
    betas = torch.linspace(math.sqrt(beta_start), math.sqrt(beta_end), timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt()


def ddim_uniform_schedule(steps: int, discrete_sigmas: Tensor | None = None) -> Tensor:
    """``[steps+1]`` descending DDIM schedule (timesteps ``..., 21, 1`` for 50 steps) ending at 0.

    The same levels as ComfyUI's ``ddim_uniform`` scheduler and diffusers' DDIM with
    ``steps_offset = 1``.
    """
    table = sd_discrete_sigmas() if discrete_sigmas is None else discrete_sigmas
    stride = max(len(table) // steps, 1)
    levels = [float(table[t]) for t in range(1, len(table), stride)][:steps]
    return torch.tensor([*levels[::-1], 0.0], dtype=torch.float32)


def flow_schedule(steps: int, shift: float = 3.0) -> Tensor:
    """``[steps+1]`` descending rectified-flow schedule from 1 to 0 with SD3's time shift."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift * t / (1.0 + (shift - 1.0) * t)
    return sigmas.float()
