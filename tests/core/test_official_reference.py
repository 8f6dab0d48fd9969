"""The ``official`` convention reproduces the OIR code, checked against independent references.

The reference is the official pipeline written from its code's definitions, in DDPM space on
``alphas_cumprod`` (SD's scaled-linear betas, ``set_alpha_to_one=False``, DDIM timesteps
``1000 - 1000/T + 1, ..., 1``), never from this pack's functions:

- inversion: ``ddim_loop`` with ``next_step`` (the model sees ``z`` at the current latent but the
  *next* timestep, the first call at t = 1 on the VAE latent ``z0`` itself);
- candidates: ``x_t`` denoised over the last ``t`` timesteps with ``prev_step`` (landing at
  ``alphas_cumprod[0]`` after timestep 1), CFG with the original prompt as the unconditional branch;
  candidate step 1 is the source latent (``edited_latents[0] = all_latents[0]``);
- reassembly: each pair stops at the reassembly level, the masked merge, ``reinversion`` with the
  original prompt, the final denoise of the last ``R + r`` timesteps with the target prompt.

A second reference is diffusers' ``DDIMInverseScheduler`` / ``DDIMScheduler`` with the official
scheduler settings. The engine runs in sigma space through a host that does what ComfyUI's discrete
EPS model sampling does (``c_in = 1/sqrt(1 + sigma^2)``, the nearest discrete timestep,
``x0 = x - sigma * eps``). Comparisons are in DDPM space, ``z = x / sqrt(1 + sigma^2)``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from official_loops import TRAIN_STEPS, OfficialLoops, sd_alphas_cumprod
from torch import Tensor

from oir_core import FunctionHost, generate_candidates, invert, reassemble
from oir_core.candidates import exhaustive_steps

STEPS = 10
CFG = 7.5
SHAPE = (4, 8, 8)
DTYPE = torch.float64


ACP = sd_alphas_cumprod()
OFFICIAL_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}
"""The official code's DDIM scheduler settings (SD's betas, final alpha = alphas_cumprod[0])."""


class EpsNet:
    """A deterministic nonlinear noise predictor ``eps(z, t, prompt)`` in DDPM space."""

    def __init__(self, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        channels = SHAPE[0]
        self.mix = torch.randn(channels, channels, generator=generator, dtype=DTYPE) * 0.5
        self.prompts = torch.randn(8, channels, generator=generator, dtype=DTYPE) * 0.7

    def __call__(self, z: Tensor, t: Tensor | int, prompt: Tensor | int | list[int]) -> Tensor:
        """``z [B,C,h,w]``; ``t``: ``[B]`` or one integer timestep; ``prompt``: prompt ids, one or per row."""
        t = torch.as_tensor(t).expand(z.shape[0])
        prompt = torch.as_tensor(prompt).expand(z.shape[0])
        gain = (1.0 + t.to(DTYPE) / TRAIN_STEPS).reshape(-1, 1, 1, 1)
        mixed = torch.einsum("dc,bchw->bdhw", self.mix, z)
        bias = self.prompts[prompt][:, :, None, None]
        return torch.tanh(mixed * gain + bias) * 0.8 + 0.1 * z


# --------------------------------------------------------------------------------------------------
# The engine's side: a host doing what ComfyUI's discrete EPS model sampling does


SIGMA_TABLE = ((1 - ACP) / ACP).sqrt().float()  # ComfyUI keeps its sigma table in float32
LOG_SIGMAS = SIGMA_TABLE.log()


def discrete_timestep(sigma: Tensor) -> Tensor:
    """The nearest discrete timestep in log-sigma (ComfyUI's ``ModelSamplingDiscrete.timestep``)."""
    distance = sigma.float().log().reshape(-1, 1) - LOG_SIGMAS.reshape(1, -1)
    return distance.abs().argmin(dim=1)


def eps_denoiser(net: EpsNet, prompt_of_row):  # type: ignore[no-untyped-def]
    def denoise(x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
        sigmas = torch.as_tensor(sigma, dtype=DTYPE).reshape(-1).expand(x.shape[0])
        scale = (1.0 + sigmas**2).sqrt().reshape(-1, 1, 1, 1)
        times = discrete_timestep(sigmas)
        return x - sigmas.reshape(-1, 1, 1, 1) * net(x / scale, times, prompt_of_row(cond_ids, x.shape[0]))

    return denoise


def cfg_denoiser(net: EpsNet, positive_of_row, negative: int):  # type: ignore[no-untyped-def]
    conditional = eps_denoiser(net, positive_of_row)
    unconditional = eps_denoiser(net, lambda ids, n: torch.full((n,), negative))

    def denoise(x: Tensor, sigma: Tensor, cond_ids: Tensor | None) -> Tensor:
        uncond = unconditional(x, sigma, cond_ids)
        return uncond + CFG * (conditional(x, sigma, cond_ids) - uncond)

    return denoise


ORIGINAL, GUIDED, TARGET = 0, (1, 2), 3


def engine_host(net: EpsNet) -> FunctionHost:
    guided = torch.tensor(GUIDED)
    return FunctionHost(
        original=eps_denoiser(net, lambda ids, n: torch.full((n,), ORIGINAL)),
        guided=cfg_denoiser(net, lambda ids, n: guided[ids], ORIGINAL),
        target=cfg_denoiser(net, lambda ids, n: torch.full((n,), TARGET), ORIGINAL),
    )


def comfy_schedule() -> Tensor:
    """ComfyUI's ``ddim_uniform`` sigmas for ``STEPS``: the DDIM timesteps' sigmas, then 0."""
    return torch.cat([SIGMA_TABLE[OfficialLoops(EpsNet(), STEPS, CFG).timesteps], torch.zeros(1)])


def to_ddpm(x: Tensor, sigma: float) -> Tensor:
    return x / math.sqrt(1.0 + sigma**2)


def relative(a: Tensor, b: Tensor) -> float:
    return float((a.to(DTYPE) - b.to(DTYPE)).abs().max() / b.to(DTYPE).abs().max())


@pytest.fixture(scope="module")
def setting() -> dict:
    net = EpsNet()
    z0 = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(5), dtype=DTYPE)
    host = engine_host(net)
    trajectory = invert(host, z0, comfy_schedule(), "official", clean_sigma=float(SIGMA_TABLE[0]))
    loops = OfficialLoops(net, STEPS, CFG, ACP)
    reference = loops.inversion(z0, ORIGINAL)
    return {
        "net": net,
        "z0": z0,
        "host": host,
        "trajectory": trajectory,
        "loops": loops,
        "reference": reference,
    }


# --------------------------------------------------------------------------------------------------
# The tests


def test_inversion_trajectory_is_the_official_ddim_loop(setting: dict) -> None:
    reference, trajectory = setting["reference"], setting["trajectory"]
    for level, sigma in enumerate(trajectory.level_sigmas.tolist()):
        ours = to_ddpm(trajectory.latents[level], sigma)
        assert relative(ours, reference[level][0]) < 1e-5, f"level {level}"


def test_inversion_matches_diffusers_ddim_inverse_scheduler(setting: dict) -> None:
    from diffusers import DDIMInverseScheduler

    scheduler = DDIMInverseScheduler(**OFFICIAL_SCHEDULER)
    scheduler.set_timesteps(STEPS)
    assert [int(t) for t in scheduler.timesteps] == setting["loops"].timesteps[::-1]
    net, trajectory = setting["net"], setting["trajectory"]
    z = setting["z0"]
    for level, t in enumerate(scheduler.timesteps, start=1):
        eps = net(z, torch.full((1,), int(t)), torch.full((1,), ORIGINAL))
        z = scheduler.step(eps, t, z).prev_sample
        ours = to_ddpm(trajectory.latents[level], float(trajectory.level_sigmas[level]))
        assert relative(ours, z[0]) < 1e-5, f"level {level}"


def test_candidates_are_the_official_candidates(setting: dict) -> None:
    loops, trajectory = setting["loops"], setting["trajectory"]
    result = generate_candidates(setting["host"], trajectory, [exhaustive_steps(STEPS)] * 2)
    for index, (pair, step) in enumerate(zip(result.pair_ids, result.steps)):
        expected = loops.candidate(setting["reference"], step, GUIDED[pair], ORIGINAL)[0]
        assert relative(result.latents[index], expected) < 1e-5, f"pair {pair} step {step}"
    # Step 1 is the source itself: no model rows are spent on it.
    assert result.stats.rows == 2 * (STEPS * (STEPS + 1) // 2 - 1)


def test_candidates_match_diffusers_ddim_scheduler(setting: dict) -> None:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**OFFICIAL_SCHEDULER)
    scheduler.set_timesteps(STEPS)
    assert [int(t) for t in scheduler.timesteps] == setting["loops"].timesteps
    trajectory = setting["trajectory"]
    steps = [2, 5, STEPS]
    result = generate_candidates(setting["host"], trajectory, [steps])
    for index, step in enumerate(steps):
        z = to_ddpm(trajectory.latents[step], float(trajectory.level_sigmas[step]))[None]
        for t in scheduler.timesteps[-step:]:
            eps = setting["loops"].cfg_eps(z, int(t), GUIDED[0], ORIGINAL)
            z = scheduler.step(eps, t, z, eta=0.0).prev_sample
        assert relative(result.latents[index], z[0]) < 1e-5, f"step {step}"


@pytest.mark.parametrize(("chosen", "reassembly", "reinversion"), [((7, 4), 3, 3), ((10, 6), 2, 5)])
def test_reassembly_is_the_official_reassembly(
    setting: dict, chosen: tuple[int, int], reassembly: int, reinversion: int
) -> None:
    trajectory = setting["trajectory"]
    masks = torch.zeros(2, *SHAPE[1:], dtype=DTYPE)
    masks[0, 1:5, 0:3] = 1.0
    masks[1, 3:7, 5:8] = 1.0
    result = reassemble(
        setting["host"], trajectory, list(chosen), list(masks), reassembly, reinversion, overlap="error"
    )
    expected = setting["loops"].reassembly(
        setting["reference"], list(chosen), masks, list(GUIDED), ORIGINAL, TARGET, reassembly, reinversion
    )
    assert relative(result.latent, expected[0]) < 1e-5


def test_preserve_is_the_official_loops_with_the_inversion_kept_outside(setting: dict) -> None:
    """``background='preserve'`` (not in the official code): the official loops in DDPM space with
    the inversion's own latent put back outside the regions after every re-inversion and denoising
    step; outside the regions the result is the source latent ``z0`` itself."""
    trajectory = setting["trajectory"]
    masks = torch.zeros(2, *SHAPE[1:], dtype=DTYPE)
    masks[0, 1:5, 0:3] = 1.0
    masks[1, 3:7, 5:8] = 1.0
    result = reassemble(
        setting["host"], trajectory, [7, 4], list(masks), 3, 3, overlap="error", background_mode="preserve"
    )
    keep = 1.0 - masks.sum(0)
    expected = setting["loops"].reassembly(
        setting["reference"], [7, 4], masks, list(GUIDED), ORIGINAL, TARGET, 3, 3, keep=keep
    )
    assert relative(result.latent, expected[0]) < 1e-5
    outside = keep.bool().expand_as(result.latent)
    assert relative(result.latent[outside], setting["z0"][0][outside]) < 1e-12
    official = setting["loops"].reassembly(
        setting["reference"], [7, 4], masks, list(GUIDED), ORIGINAL, TARGET, 3, 3
    )
    assert relative(official[0], expected[0]) > 1e-3


def change_all_masks_shape(masks: Tensor, latent_hw: tuple[int, int]) -> Tensor:
    """The official reassembly's masks: the mask files read as ``>= 1``, ``nearest`` to the latent, > 0.5."""
    binary = (masks * 255).round() >= 1
    return (F.interpolate(binary[:, None].float(), size=latent_hw, mode="nearest") > 0.5)[:, 0].to(DTYPE)


def test_reassembly_reads_full_resolution_masks_as_the_official_code(setting: dict) -> None:
    """Masks at image resolution (8x the latent) with edges off the latent grid and a faint rim."""
    trajectory = setting["trajectory"]
    masks = torch.zeros(2, 64, 64, dtype=DTYPE)
    masks[0, 5:37, 3:27] = 1.0
    masks[0, 4, 3:27] = 2 / 255  # an antialiased rim still counts as inside
    masks[1, 35:61, 38:63] = 1.0
    result = reassemble(setting["host"], trajectory, [7, 4], list(masks), 3, 3, overlap="error")
    official_masks = change_all_masks_shape(masks, SHAPE[1:])
    expected = setting["loops"].reassembly(
        setting["reference"], [7, 4], official_masks, list(GUIDED), ORIGINAL, TARGET, 3, 3
    )
    assert relative(result.latent, expected[0]) < 1e-5
    centered = reassemble(
        setting["host"], trajectory, [7, 4], list(masks), 3, 3, overlap="error", mask_geometry="centered"
    )
    assert relative(centered.latent, expected[0]) > 1e-3  # the pack's centred sampling is another choice


def test_official_x0_differs_only_by_where_denoising_lands(setting: dict) -> None:
    """``official_x0`` keeps the official inversion and ends at sigma 0: its candidates are the
    model's clean estimate at the last step, the official ones add ``sqrt(1 - abar_0) eps_hat``."""
    z0, host = setting["z0"], setting["host"]
    trajectory = invert(host, z0, comfy_schedule(), "official_x0", clean_sigma=float(SIGMA_TABLE[0]))
    torch.testing.assert_close(trajectory.latents, setting["trajectory"].latents, rtol=0, atol=0)
    official = generate_candidates(host, setting["trajectory"], [[1, 4]])
    landing = generate_candidates(host, trajectory, [[1, 4]])
    assert relative(landing.latents[1], official.latents[1]) > 1e-3  # the ends differ
    assert relative(landing.latents[0], official.latents[0]) > 1e-3  # step 1 is denoised, not the source
    assert landing.stats.rows == 1 + 4 and official.stats.rows == 4
