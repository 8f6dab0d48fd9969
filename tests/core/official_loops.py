"""The official OIR code's loops in DDPM space, written from its definitions: a test reference only.

What the official code (aim-uofa/OIR: ``sampler/ddim_inversion.py``, ``utils/basic_utils.py``,
``utils/candidate_images_generation.py``, ``utils/oir.py``) does, on ``alphas_cumprod`` of SD's
scaled-linear betas with ``set_alpha_to_one=False`` and DDIM timesteps ``1000 - 1000/T + 1, ..., 1``:

- ``next_step`` (inversion): the noise predicted at the *next* timestep ``t`` on the current latent
  moves it from ``t - 1000/T`` (``alphas_cumprod[0]`` below 0) up to ``t``;
- ``prev_step`` (denoising): from ``t`` down to ``t - 1000/T`` (``alphas_cumprod[0]`` below 0);
- CFG with the original prompt as the unconditional branch;
- candidate ``t`` = ``x_t`` denoised over the last ``t`` timesteps; candidate 1 = the source latent;
- reassembly: each pair stops at the reassembly level, the masked merge, ``reinversion`` of ``r``
  levels with the original prompt, the target-prompt denoise of the last ``R + r`` timesteps.

Never imports this pack. ``eps(z [B,C,h,w], t: int, prompts) -> [B,C,h,w]`` is the noise predictor,
``prompts`` one prompt per row (whatever the caller uses to name a prompt). As in the official
``diffusion_step``, CFG evaluates the unconditional and the conditional rows in one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

TRAIN_STEPS = 1000
Eps = Callable[[Tensor, int, Sequence[Any]], Tensor]


def sd_alphas_cumprod() -> Tensor:
    """SD's ``scaled_linear`` schedule (beta 0.00085 .. 0.012) as float64 ``[1000]``."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, TRAIN_STEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


class OfficialLoops:
    def __init__(self, eps: Eps, steps: int, cfg: float, alphas_cumprod: Tensor | None = None) -> None:
        self.eps = eps
        self.steps = steps
        self.cfg = cfg
        self.acp = sd_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.stride = TRAIN_STEPS // steps
        self.timesteps = list(range(TRAIN_STEPS - self.stride + 1, 0, -self.stride))

    def _alpha(self, timestep: int) -> Tensor:
        return self.acp[timestep] if timestep >= 0 else self.acp[0]

    def next_step(self, eps: Tensor, t: int, z: Tensor) -> Tensor:
        a_t, a_next = self._alpha(min(t - self.stride, TRAIN_STEPS - 1)), self.acp[t]
        x0 = (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        return a_next**0.5 * x0 + (1 - a_next) ** 0.5 * eps

    def prev_step(self, eps: Tensor, t: int, z: Tensor) -> Tensor:
        a_t, a_prev = self.acp[t], self._alpha(t - self.stride)
        x0 = (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps

    def cfg_eps(self, z: Tensor, t: int, positive: Any, negative: Any) -> Tensor:
        rows = z.shape[0]
        both = self.eps(torch.cat([z, z]), t, [negative] * rows + [positive] * rows)
        uncond, cond = both.chunk(2)
        return uncond + self.cfg * (cond - uncond)

    def inversion(self, z0: Tensor, original: Any) -> list[Tensor]:
        """``ddim_loop``: every latent ``x_0 .. x_T``."""
        latents, z = [z0], z0
        for i in range(self.steps):
            t = self.timesteps[self.steps - i - 1]
            z = self.next_step(self.eps(z, t, [original] * z.shape[0]), t, z)
            latents.append(z)
        return latents

    def candidate(self, latents: Sequence[Tensor], step: int, guided: Any, original: Any) -> Tensor:
        if step == 1:
            return latents[0]  # ``edited_latents[0] = all_latents[0]``
        z = latents[step]
        for t in self.timesteps[-step:]:
            z = self.prev_step(self.cfg_eps(z, t, guided, original), t, z)
        return z

    def reassembly(
        self,
        latents: Sequence[Tensor],
        chosen: Sequence[int],
        masks: Tensor,
        guided: Sequence[Any],
        original: Any,
        target: Any,
        reassembly: int,
        reinversion: int,
        keep: Tensor | None = None,
    ) -> Tensor:
        """``oir`` + ``reinversion_and_denoise``; ``masks: [K, h, w]`` already on the latent grid.

        ``keep`` (``[h, w]``, not the official code: this pack's ``preserve`` background, written
        from its definition): after every re-inversion and denoising step the latent becomes
        ``keep * latents[level] + (1 - keep) * z`` at the level the step reached.
        """

        def kept(level: int, z: Tensor) -> Tensor:
            return z if keep is None else keep * latents[level] + (1 - keep) * z

        pair_latents = []
        for step, prompt in zip(chosen, guided):
            z = latents[step]
            timesteps = self.timesteps[-step:]
            stop = len(timesteps) - reassembly
            for i, t in enumerate(timesteps):
                z = self.prev_step(self.cfg_eps(z, t, prompt, original), t, z)
                if i == stop - 1:
                    break
            pair_latents.append(z)
        background = 1.0 - masks.sum(0)
        z = background * latents[reassembly] + sum(m * p for m, p in zip(masks, pair_latents))
        for i in range(reassembly, reassembly + reinversion):
            t = self.timesteps[self.steps - i - 1]
            z = kept(i + 1, self.next_step(self.eps(z, t, [original] * z.shape[0]), t, z))
        for level, t in enumerate(self.timesteps[-(reassembly + reinversion) :]):
            z = kept(
                reassembly + reinversion - level - 1,
                self.prev_step(self.cfg_eps(z, t, target, original), t, z),
            )
        return z
