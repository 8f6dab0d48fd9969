"""Inversion against the exact ODE path of the Gaussian analytic model (ARCHITECTURE.md §7)."""

from __future__ import annotations

import itertools

import pytest
import torch
from engine_fixtures import (
    SD_CLEAN_SIGMA,
    TinyConditionedNet,
    clean_latent,
    prompt_means,
    relative_path_error,
)

from oir_core import FunctionHost, OIRInputError, invert
from oir_core.analytic import GaussianModel, ddim_uniform_schedule, flow_schedule
from oir_core.sampling import lockstep_denoise


def _host(model: GaussianModel) -> FunctionHost:
    return FunctionHost(original=model.denoiser(0), guided=model.denoiser(0), target=model.denoiser(0))


def _round_trip_error(model: GaussianModel, steps: int, schedule, convention: str) -> float:
    x0 = clean_latent(model)
    trajectory = invert(_host(model), x0, schedule(steps), convention, clean_sigma=SD_CLEAN_SIGMA)
    back = lockstep_denoise(model.denoiser(0), trajectory.level_sigmas, trajectory.latents[-1:], [steps], 0)
    return (trajectory.to_clean(back)[0] - x0).abs().max().item()


@pytest.mark.parametrize("convention", ["official", "official_x0", "euler"])
def test_vp_inversion_follows_exact_path_and_converges(convention: str) -> None:
    model = GaussianModel(prompt_means(1), std=0.5, parameterization="vp")
    x0 = clean_latent(model)
    errors = []
    for steps in (10, 20, 50, 100):
        trajectory = invert(
            _host(model), x0, ddim_uniform_schedule(steps), convention, clean_sigma=SD_CLEAN_SIGMA
        )
        assert trajectory.latents.shape == (steps + 1, *x0.shape)
        # The official code's z0 is the DDPM-normalised sample at the t = 0 level (sigma_min).
        scale = (1 + SD_CLEAN_SIGMA**2) ** 0.5 if convention.startswith("official") else 1.0
        torch.testing.assert_close(trajectory.latents[0], x0 * scale, rtol=0, atol=0)
        torch.testing.assert_close(trajectory.source_latent(), x0, rtol=1e-7, atol=1e-7)
        errors.append(relative_path_error(model, trajectory, x0))
    # First-order solver: the error shrinks steadily with the step count and ends small.
    assert all(later < earlier * 0.75 for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1, errors


def test_flow_inversion_follows_exact_path_and_converges() -> None:
    model = GaussianModel(prompt_means(1), std=0.5, parameterization="flow")
    x0 = clean_latent(model)
    errors = []
    for steps in (10, 20, 50, 100):
        trajectory = invert(_host(model), x0, flow_schedule(steps), "euler")
        assert float(trajectory.level_sigmas[-1]) == pytest.approx(1.0)
        errors.append(relative_path_error(model, trajectory, x0))
    assert all(later < earlier * 0.75 for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1, errors


def test_round_trip_error_falls_with_steps_and_official_beats_euler() -> None:
    model = GaussianModel(prompt_means(1), std=0.5, parameterization="vp")
    official = [_round_trip_error(model, n, ddim_uniform_schedule, "official") for n in (10, 20, 50)]
    euler = [_round_trip_error(model, n, ddim_uniform_schedule, "euler") for n in (10, 20, 50)]
    assert official[0] > official[1] > official[2]
    assert euler[0] > euler[1] > euler[2]
    # ARCHITECTURE.md §3: the official convention reconstructs clearly better at every step count.
    assert all(o < 0.8 * e for o, e in zip(official, euler)), (official, euler)
    assert official[2] < 0.15


def test_flow_round_trip_error_falls_with_steps() -> None:
    model = GaussianModel(prompt_means(1), std=0.5, parameterization="flow")
    errors = [_round_trip_error(model, n, flow_schedule, "euler") for n in (10, 20, 50, 100)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1, errors


def test_official_step_feeds_next_level_and_rescaled_latent() -> None:
    """The official step evaluates the model at the *next* level on x * sqrt(alpha(a)/alpha(b)), and
    the very first call sees the clean latent z0 itself after the host's input scaling
    (c_in = 1/sqrt(1 + sigma^2)), exactly as the official code feeds z0 to its first UNet call."""
    seen: list[tuple[float, torch.Tensor]] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        seen.append((float(sigma), x.clone()))
        return torch.zeros_like(x)

    schedule = ddim_uniform_schedule(4)
    latent = torch.ones(1, 2, 2)
    host = FunctionHost(original=spy, guided=spy, target=spy)
    trajectory = invert(host, latent, schedule, "official", clean_sigma=SD_CLEAN_SIGMA)
    levels = trajectory.level_sigmas.tolist()
    assert levels[0] == pytest.approx(SD_CLEAN_SIGMA)
    assert [s for s, _ in seen] == pytest.approx(schedule.flip(0)[1:].tolist())
    a, b = SD_CLEAN_SIGMA, float(schedule.flip(0)[1])
    first_input = seen[0][1].flatten()[0].item()
    assert first_input / (1 + b * b) ** 0.5 == pytest.approx(1.0, rel=1e-6)  # c_in * x' == z0
    # With D = 0 the network's eps is x'/b, so x_1 = x_0 + (b - a) * x'/b with x_0 = z0 sqrt(1 + a^2).
    expected_x1 = (1 + a * a) ** 0.5 + (b - a) * first_input / b
    assert trajectory.latents[1].flatten()[0].item() == pytest.approx(expected_x1, rel=1e-5)


def test_euler_inversion_starts_at_small_positive_sigma() -> None:
    seen: list[float] = []

    def spy(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        seen.append(float(sigma))
        return x * 0.5

    schedule = ddim_uniform_schedule(5)
    invert(FunctionHost(original=spy, guided=spy, target=spy), torch.ones(1, 2, 2), schedule, "euler")
    first_positive = float(schedule[-2])
    assert seen[0] == pytest.approx(min(1e-4, first_positive / 2))
    assert seen[1:] == pytest.approx(schedule.flip(0)[1:-1].tolist())


def test_inversion_is_deterministic_and_does_not_mutate_input() -> None:
    net = TinyConditionedNet()
    host = FunctionHost(original=net, guided=net, target=net)
    latent = torch.randn(4, 8, 8)
    before = latent.clone()
    first = invert(host, latent, ddim_uniform_schedule(6), "official", clean_sigma=SD_CLEAN_SIGMA)
    second = invert(host, latent, ddim_uniform_schedule(6), "official", clean_sigma=SD_CLEAN_SIGMA)
    assert torch.equal(latent, before)
    assert torch.equal(first.latents, second.latents)
    assert first.stats.levels == 6 and first.stats.calls == 6 and first.stats.rows == 6


def test_inversion_reports_the_original_role_stage() -> None:
    model = GaussianModel(prompt_means(1))
    host = _host(model)
    invert(host, clean_latent(model), ddim_uniform_schedule(5), "official", clean_sigma=SD_CLEAN_SIGMA)
    (stage,) = host.stages
    assert stage.role == "original" and stage.rows == 1 and stage.latent_shape == (4, 8, 8)
    assert stage.sigmas[0].item() == pytest.approx(SD_CLEAN_SIGMA)
    assert (stage.sigmas[1:] > stage.sigmas[:-1]).all()


@pytest.mark.parametrize(
    ("sigmas", "problem"),
    [
        (torch.tensor([1.0, 0.0]), "at least 2 steps"),
        (torch.tensor([2.0, 1.0, 0.5]), "end at sigma 0"),
        (torch.tensor([2.0, 2.0, 0.0]), "strictly descending"),
        (torch.tensor([float("nan"), 1.0, 0.0]), "NaN"),
    ],
)
def test_bad_schedules_are_refused(sigmas: torch.Tensor, problem: str) -> None:
    model = GaussianModel(prompt_means(1))
    with pytest.raises(OIRInputError, match=problem):
        invert(_host(model), clean_latent(model), sigmas, "euler")


def test_official_convention_needs_a_discrete_clean_level() -> None:
    model = GaussianModel(prompt_means(1), parameterization="flow")
    with pytest.raises(OIRInputError, match="euler"):
        invert(_host(model), clean_latent(model), flow_schedule(5), "official", clean_sigma=None)


def test_trajectory_source_mismatch_is_refused() -> None:
    from oir_core.inversion import check_trajectory_source

    model = GaussianModel(prompt_means(1))
    trajectory = invert(
        _host(model),
        clean_latent(model),
        ddim_uniform_schedule(5),
        "euler",
        source={"latent_channels": 4, "sigma_max": 14.6, "model_sampling": "EPS"},
    )
    check_trajectory_source(trajectory, {"latent_channels": 4, "sigma_max": 14.6000001, "other": 1})
    with pytest.raises(OIRInputError, match="latent_channels=4"):
        check_trajectory_source(trajectory, {"latent_channels": 16})
    with pytest.raises(OIRInputError, match="model_sampling"):
        check_trajectory_source(trajectory, {"model_sampling": "CONST"})
    with pytest.raises(OIRInputError, match="not an OIR trajectory"):
        check_trajectory_source({"samples": 1}, {})


def _karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: the schedule ComfyUI's ``karras`` scheduler builds, then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(high + ramp * (low - high)) ** rho, torch.zeros(1, dtype=torch.float64)]).float()


def test_auto_convention_is_official_only_where_its_premise_holds() -> None:
    from oir_core.inversion import choose_convention

    ddim = ddim_uniform_schedule(10)
    karras = _karras(10, SD_CLEAN_SIGMA, 14.6)
    vp = {"flow": False, "discrete_vp": True, "clean_sigma": SD_CLEAN_SIGMA}
    assert choose_convention("auto", sigmas=ddim, **vp) == "official"
    assert choose_convention("auto", sigmas=karras, **vp) == "euler"  # first level = sigma_min
    edm = {"flow": False, "discrete_vp": False, "clean_sigma": 0.002}
    assert choose_convention("auto", sigmas=_karras(10, 0.002, 80.0), **edm) == "euler"
    assert (
        choose_convention("auto", sigmas=flow_schedule(10), flow=True, discrete_vp=False, clean_sigma=0.0)
        == "euler"
    )
    assert choose_convention("official_x0", sigmas=ddim, **vp) == "official_x0"
    with pytest.raises(OIRInputError, match="karras"):
        choose_convention("official", sigmas=karras, **vp)
    with pytest.raises(OIRInputError, match="sigma_data"):
        choose_convention("official", sigmas=_karras(10, 0.002, 80.0), **edm)
    with pytest.raises(OIRInputError, match="unknown convention"):
        choose_convention("ddim", sigmas=ddim, **vp)


def test_euler_inversion_on_a_karras_schedule_follows_the_exact_path() -> None:
    """The convention auto picks for schedules that start at sigma_min (and for EDM-style models,
    whose sampling is the same x = x0 + sigma * n in sigma space) converges to the exact ODE path."""
    model = GaussianModel(prompt_means(1), std=0.5, parameterization="vp")
    x0 = clean_latent(model)
    errors = []
    for steps in (10, 20, 50, 100):
        trajectory = invert(_host(model), x0, _karras(steps, 0.002, 80.0), "euler")
        errors.append(relative_path_error(model, trajectory, x0))
    assert all(later < earlier * 0.8 for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1, errors
