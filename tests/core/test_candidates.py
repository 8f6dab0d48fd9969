"""Lockstep parallel candidates == serial candidates, chunked == unchunked, exact call accounting."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import (
    SD_CLEAN_SIGMA,
    CallRecorder,
    TinyConditionedNet,
    clean_latent,
    prompt_means,
    serial_denoise,
)

from oir_core import (
    FunctionHost,
    OIRInputError,
    OIRInterrupted,
    exhaustive_steps,
    generate_candidates,
    invert,
)
from oir_core.analytic import GaussianModel, ddim_uniform_schedule
from oir_core.sampling import SubSchedule


def _net_host(max_batch: int | None = None) -> tuple[FunctionHost, TinyConditionedNet]:
    net = TinyConditionedNet()
    return FunctionHost(original=net, guided=net, target=net, max_batch=max_batch), net


def _trajectory(host: FunctionHost, steps: int):  # type: ignore[no-untyped-def]
    latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(3))
    return invert(host, latent, ddim_uniform_schedule(steps), "official_x0", clean_sigma=SD_CLEAN_SIGMA)


def test_lockstep_candidates_equal_serial_candidates() -> None:
    host, net = _net_host()
    steps, pairs = 12, 3
    trajectory = _trajectory(host, steps)
    result = generate_candidates(host, trajectory, [exhaustive_steps(steps)] * pairs)
    assert result.latents.shape == (pairs * steps, 4, 8, 8)
    for index, (pair, step) in enumerate(zip(result.pair_ids, result.steps)):
        expected = serial_denoise(net, trajectory.latents[step], trajectory.level_sigmas, step, 0, pair)
        torch.testing.assert_close(result.latents[index], expected, atol=2e-5, rtol=1e-5)


def test_candidates_depend_on_their_pair_prompt() -> None:
    host, _ = _net_host()
    trajectory = _trajectory(host, 6)
    result = generate_candidates(host, trajectory, [[6], [6]])
    assert (result.latents[0] - result.latents[1]).abs().max() > 1e-3


@pytest.mark.parametrize("max_batch", [1, 5, 7])
def test_chunked_equals_unchunked(max_batch: int) -> None:
    host, _ = _net_host()
    trajectory = _trajectory(host, 10)
    starts = [exhaustive_steps(10), [2, 5, 9]]
    full = generate_candidates(host, trajectory, starts)
    chunked = generate_candidates(host, trajectory, starts, max_batch=max_batch)
    torch.testing.assert_close(chunked.latents, full.latents, atol=2e-5, rtol=1e-5)
    assert chunked.stats.rows == full.stats.rows
    assert chunked.stats.levels == full.stats.levels == 10
    assert chunked.stats.peak_rows <= max_batch


@pytest.mark.parametrize(("steps", "pairs"), [(10, 1), (50, 2), (20, 4)])
def test_exhaustive_search_counts_are_exact(steps: int, pairs: int) -> None:
    model = GaussianModel(prompt_means(pairs + 1))
    recorder = CallRecorder(model.cfg_denoiser(negative=0, cfg=7.5, id_offset=1))
    host = FunctionHost(original=model.denoiser(0), guided=recorder, target=model.denoiser(0))
    trajectory = invert(
        host, clean_latent(model), ddim_uniform_schedule(steps), "official_x0", clean_sigma=SD_CLEAN_SIGMA
    )
    result = generate_candidates(host, trajectory, [exhaustive_steps(steps)] * pairs)
    expected_rows = pairs * steps * (steps + 1) // 2
    assert result.stats.rows == expected_rows == sum(call["rows"] for call in recorder.calls)
    assert result.stats.levels == steps == len(recorder.calls) == result.stats.calls
    # Every call is an ordinary batch at one sigma, walking the schedule downwards.
    sigmas = [call["sigma"] for call in recorder.calls]
    assert sigmas == pytest.approx(trajectory.sigmas[:-1].tolist())
    # At level s the batch holds every candidate with t >= s, for every pair.
    for call, level in zip(recorder.calls, range(steps, 0, -1)):
        assert call["rows"] == pairs * (steps - level + 1)
        assert sorted(set(call["ids"])) == list(range(pairs))


def test_chunked_call_count_is_exact() -> None:
    model = GaussianModel(prompt_means(3))
    recorder = CallRecorder(model.cfg_denoiser(negative=0, cfg=3.0, id_offset=1))
    host = FunctionHost(original=model.denoiser(0), guided=recorder, target=model.denoiser(0), max_batch=4)
    trajectory = invert(host, clean_latent(model), ddim_uniform_schedule(8), "euler")
    result = generate_candidates(host, trajectory, [exhaustive_steps(8)] * 2)
    expected_calls = sum(-(-2 * (8 - level + 1) // 4) for level in range(8, 0, -1))
    assert result.stats.calls == expected_calls == len(recorder.calls)
    assert max(call["rows"] for call in recorder.calls) == 4


def _guided_path_error(steps: int) -> float:
    pairs, cfg = 2, 2.0
    model = GaussianModel(prompt_means(pairs + 1), std=0.5)
    host = FunctionHost(
        original=model.denoiser(0),
        guided=model.cfg_denoiser(negative=0, cfg=cfg, id_offset=1),
        target=model.denoiser(0),
    )
    trajectory = invert(
        host, clean_latent(model), ddim_uniform_schedule(steps), "official_x0", clean_sigma=SD_CLEAN_SIGMA
    )
    chosen = [steps // 5, steps * 3 // 5]
    result = generate_candidates(host, trajectory, [chosen, chosen])
    worst = 0.0
    for index, (pair, step) in enumerate(zip(result.pair_ids, result.steps)):
        effective_mean = model.means[0] + cfg * (model.means[pair + 1] - model.means[0])
        sigma = float(trajectory.level_sigmas[step])
        exact = model.exact_path(trajectory.latents[step], sigma, 0.0, effective_mean)
        worst = max(worst, (result.latents[index] - exact).abs().max().item())
    return worst


def test_candidates_follow_the_exact_guided_cfg_path() -> None:
    """On the Gaussian model a candidate is the exact ODE path of the CFG-effective mean, to O(1/T)."""
    coarse, fine = _guided_path_error(50), _guided_path_error(200)
    assert fine < coarse / 2.5, (coarse, fine)
    assert fine < 0.1


def test_for_pair_returns_steps_in_order() -> None:
    host, _ = _net_host()
    trajectory = _trajectory(host, 6)
    result = generate_candidates(host, trajectory, [[5, 1, 3], [2]])
    steps, latents = result.for_pair(0)
    assert steps == [1, 3, 5]
    torch.testing.assert_close(latents[2], result.latents[result.steps.index(5)])
    assert result.for_pair(1)[0] == [2]


def test_progress_fires_per_level_and_can_abort() -> None:
    host, _ = _net_host()
    trajectory = _trajectory(host, 8)
    seen: list[tuple[int, int]] = []
    generate_candidates(host, trajectory, [exhaustive_steps(8)], on_level=lambda d, t: seen.append((d, t)))
    assert seen == [(d, 8) for d in range(1, 9)]

    recorder = CallRecorder(host.guided)
    host.guided = recorder

    def stop_after_three(done: int, total: int) -> bool:
        return done < 3

    with pytest.raises(OIRInterrupted):
        generate_candidates(host, trajectory, [exhaustive_steps(8)], on_level=stop_after_three)
    assert len(recorder.calls) == 3


def test_out_of_memory_halves_the_batch_and_matches_unchunked() -> None:
    host, net = _net_host()
    trajectory = _trajectory(host, 10)
    reference = generate_candidates(host, trajectory, [exhaustive_steps(10)] * 2)

    def limited(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        if x.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return net(x, sigma, cond_ids)

    host.guided = limited
    result = generate_candidates(host, trajectory, [exhaustive_steps(10)] * 2, max_batch=16)
    torch.testing.assert_close(result.latents, reference.latents, atol=2e-5, rtol=1e-5)
    assert result.stats.oom_retries >= 1
    assert result.stats.peak_rows <= 3
    assert result.stats.rows == reference.stats.rows


def test_other_errors_are_not_swallowed() -> None:
    host, _ = _net_host()
    trajectory = _trajectory(host, 4)

    def broken(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    host.guided = broken
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate_candidates(host, trajectory, [[4]])


@pytest.mark.parametrize(
    ("starts", "problem"),
    [
        ([], "no edit pairs"),
        ([[0, 1]], "must lie in"),
        ([[5]], "must lie in"),
        ([[2, 2]], "repeated"),
        ([[]], "no steps"),
    ],
)
def test_bad_start_steps_are_refused(starts: list[list[int]], problem: str) -> None:
    host, _ = _net_host()
    trajectory = _trajectory(host, 4)
    with pytest.raises(OIRInputError, match=problem):
        generate_candidates(host, trajectory, starts)


def test_strided_sub_schedule_walks_every_stride_th_level() -> None:
    model = GaussianModel(prompt_means(2))
    recorder = CallRecorder(model.cfg_denoiser(negative=0, cfg=1.5, id_offset=1))
    host = FunctionHost(original=model.denoiser(0), guided=recorder, target=model.denoiser(0))
    trajectory = invert(
        host, clean_latent(model), ddim_uniform_schedule(12), "official_x0", clean_sigma=SD_CLEAN_SIGMA
    )
    result = generate_candidates(host, trajectory, [[4, 8, 12]], schedule=SubSchedule(stride=4))
    assert result.stats.rows == 1 + 2 + 3
    assert [c["sigma"] for c in recorder.calls] == pytest.approx(trajectory.level_sigmas[[12, 8, 4]].tolist())
    assert not any(result.is_exact(i) for i in range(3))
    # A start between multiples first steps down to the next multiple; the tail walks every level.
    recorder.calls.clear()
    tailed = generate_candidates(host, trajectory, [[6, 2]], schedule=SubSchedule(stride=4, tail=2))
    assert tailed.stats.rows == 4 + 2
    levels = [6, 4, 2, 1]
    assert [c["sigma"] for c in recorder.calls] == pytest.approx(trajectory.level_sigmas[levels].tolist())
    assert [c["rows"] for c in recorder.calls] == [1, 1, 2, 2]
    assert tailed.steps == [2, 6] and [tailed.is_exact(i) for i in range(2)] == [True, False]
    full = generate_candidates(host, trajectory, [[2]])
    torch.testing.assert_close(tailed.latents[0], full.latents[0])


def test_non_finite_model_output_stops_with_a_clear_error() -> None:
    host, net = _net_host()
    trajectory = _trajectory(host, 6)

    def exploding(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        out = net(x, sigma, cond_ids)
        return out * float("inf") if float(sigma) < 1.0 else out

    host.guided = exploding
    with pytest.raises(OIRInputError, match="non-finite"):
        generate_candidates(host, trajectory, [exhaustive_steps(6)])
    host.original = exploding
    with pytest.raises(OIRInputError, match="during inversion"):
        _trajectory(host, 6)
    with pytest.raises(OIRInputError, match="latent"):
        invert(host, torch.full((4, 8, 8), float("nan")), ddim_uniform_schedule(4), "euler")
