"""Benchmark 1: lockstep parallel vs serial candidate generation (ARCHITECTURE.md §4.3).

Both variants produce every candidate ``c_{k,t}`` (each pair ``k``, each step ``t = 1..T``) from
the same inversion with the same model:

- **serial**: one guider call chain per candidate (``host.run`` → for ComfyUI one
  ``CFGGuider.sample``), denoising that one row ``t`` levels down to 0: ``K·T`` chains and
  ``K·T(T+1)/2`` sequential model calls of one row each;
- **lockstep** (``oir_core.candidates.generate_candidates``): one chain, ``T`` levels; at level
  ``s`` one batch holds every candidate with ``t >= s``.

The work (rows) is identical; what changes is the number of sequential calls and the batch sizes.
Reported: max abs difference of the candidates, wall-clock ratio (best of interleaved repeats),
and model-call counts, for the analytic Gaussian model through ``FunctionHost`` (``T = 50``) and
for a ComfyUI SD1.5-architecture UNet through ``ComfyHost`` (tiny by default; ``--full-size``).

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_parallel.py``
"""

from __future__ import annotations

from typing import Any

import benchlib
import torch
from benchlib import Metric, Report, fmt_ratio, triangular
from torch import Tensor

from oir_core.analytic import GaussianModel, ddim_uniform_schedule
from oir_core.candidates import exhaustive_steps, generate_candidates
from oir_core.host import FunctionHost, Stage
from oir_core.inversion import InversionTrajectory, invert
from oir_core.sampling import walked_levels


def serial_candidates(host: Any, trajectory: InversionTrajectory, pairs: int) -> Tensor:
    """Every candidate on its own: one ``host.run`` per (pair, step), one row per model call.

    The denoising loop is written out here (not the engine's lockstep walker), so the comparison
    also checks the walker against an independent implementation. Returns ``[K*T, *latent_shape]``
    in the engine's order (pair-major, then step).
    """
    level_sigmas = trajectory.level_sigmas.to(trajectory.latents.device)
    out = []
    for pair in range(pairs):
        ids = torch.tensor([pair], dtype=torch.long, device=trajectory.latents.device)
        for t in exhaustive_steps(trajectory.steps):
            stage = Stage(
                role="guided",
                sigmas=trajectory.level_sigmas[walked_levels([t], 0)],
                rows=1,
                latent_shape=trajectory.latent_shape,
                label="serial candidate",
            )

            def body(denoise: Any, _max_batch: int | None, t: int = t, ids: Tensor = ids) -> Tensor:
                x = trajectory.latents[t : t + 1].clone()
                for level in range(t, 0, -1):
                    sigma, sigma_next = level_sigmas[level], level_sigmas[level - 1]
                    x0_hat = denoise(x, sigma, ids)
                    x = (
                        x0_hat.clone()
                        if float(sigma_next) == 0.0
                        else x + (x - x0_hat) * ((sigma_next - sigma) / sigma)
                    )
                return x

            out.append(host.run(stage, body))
    return torch.cat(out, dim=0)


def lockstep_candidates(host: Any, trajectory: InversionTrajectory, pairs: int) -> Tensor:
    """The engine's exhaustive lockstep search: ``[K*T, *latent_shape]``, pair-major."""
    starts = [exhaustive_steps(trajectory.steps)] * pairs
    return generate_candidates(host, trajectory, starts).latents


VARIANTS = (("serial", serial_candidates), ("lockstep", lockstep_candidates))


def run_variants(
    measure: Any, repeats: int, device: str
) -> tuple[dict[str, benchlib.Timing], dict[str, Tensor], dict[str, dict[str, int]]]:
    """Run serial and lockstep ``repeats`` times, interleaved; keep timings, last results and counts."""
    samples: dict[str, list[float]] = {name: [] for name, _ in VARIANTS}
    results: dict[str, Tensor] = {}
    counts: dict[str, dict[str, int]] = {}
    for _ in range(max(1, repeats)):
        for name, fn in VARIANTS:
            seconds, (results[name], counts[name]) = benchlib.timed(
                lambda name=name, fn=fn: measure(name, fn), device
            )
            samples[name].append(seconds)
    return {name: benchlib.Timing(values) for name, values in samples.items()}, results, counts


class RunCounter:
    """Counts ``host.run`` calls (guider call chains) of a host it wraps."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.runs = 0

    def run(self, stage: Stage, body: Any) -> Any:
        self.runs += 1
        return self.host.run(stage, body)


def analytic_part(report: Report, steps: int, pairs: int, cfg: float, repeats: int, device: str) -> None:
    """The analytic Gaussian model through ``FunctionHost`` at the paper's ``T``."""
    shape = (4, 8, 8)
    generator = torch.Generator().manual_seed(0)
    means = (torch.randn(pairs + 1, *shape, generator=generator) * 0.6).to(device)
    model = GaussianModel(means)
    guided = benchlib.CallCounter(model.cfg_denoiser(negative=0, cfg=cfg, id_offset=1))
    inner = FunctionHost(original=model.denoiser(0), guided=guided, target=model.denoiser(0))
    host = RunCounter(inner)
    clean = means[0] + model.std * torch.randn(shape, generator=generator).to(device)
    trajectory = invert(
        inner, clean, ddim_uniform_schedule(steps), "official_x0", clean_sigma=benchlib.sd_clean_sigma()
    )

    def measure(name: str, fn: Any) -> tuple[Tensor, dict[str, int]]:
        guided.reset()
        host.runs = 0
        latents = fn(host, trajectory, pairs)
        return latents, {"chains": host.runs, "calls": guided.calls, "rows": guided.rows}

    timings, results, counts = run_variants(measure, repeats, device)
    diff = float((results["serial"] - results["lockstep"]).abs().max())
    speedup = timings["serial"].best / timings["lockstep"].best
    s, p = counts["serial"], counts["lockstep"]
    print(f"[analytic, FunctionHost] T={steps}, K={pairs}, cfg={cfg}, latent {shape}")
    for name in ("serial", "lockstep"):
        c = counts[name]
        print(
            f"  {name:8s}: best {timings[name].best * 1e3:8.1f} ms (median {timings[name].median * 1e3:.1f}),"
            f" chains {c['chains']}, sequential model calls {c['calls']}, rows {c['rows']}"
        )
    print(f"  max |serial - lockstep| = {diff:.3g}; wall ratio serial/lockstep = {speedup:.2f}")
    report.add(
        Metric(
            f"1. candidates lockstep vs serial, analytic (T={steps}, K={pairs}): max abs diff",
            f"{diff:.2g}",
            "≤ 1e-5",
            diff <= 1e-5,
        ),
        Metric(
            f"1. sequential model calls serial → lockstep, analytic (T={steps}, K={pairs})",
            f"{s['calls']} → {p['calls']} (rows {s['rows']} = {p['rows']})",
            f"K·T(T+1)/2 = {pairs * triangular(steps)} → T = {steps}, same rows",
            s["calls"] == pairs * triangular(steps) and p["calls"] == steps and s["rows"] == p["rows"],
        ),
        Metric(
            f"1. wall speed-up lockstep vs serial, analytic (T={steps}, K={pairs})",
            fmt_ratio(speedup),
            "> 1×",
            speedup > 1.0,
        ),
    )


def comfy_part(
    report: Report,
    steps: int,
    pairs: int,
    cfg: float,
    repeats: int,
    latent: int,
    full_size: bool,
    device: str,
) -> None:
    """The ComfyUI UNet through ``ComfyHost`` (every call through ``CFGGuider``)."""
    reason = benchlib.comfy_unavailable_reason()
    if reason is not None:
        report.skip(f"ComfyUI part: {reason}")
        return
    benchlib.setup_comfy(device)
    comfy_host = benchlib.pack("nodes.comfy_host")
    model, counter = benchlib.counted(benchlib.build_unet(full_size, 0, device))
    shape = benchlib.FULL_SIZE_LATENT if full_size else (4, latent, latent)
    conds = [benchlib.conditioning(seed, full_size) for seed in range(pairs + 1)]
    host = comfy_host.ComfyHost(model, conds[0], None, conds[1:], None, cfg=cfg)
    sigmas = comfy_host.get_sigmas(model, "ddim_uniform", steps)
    clean = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    trajectory = invert(host, clean, sigmas, "official_x0", clean_sigma=comfy_host.clean_sigma(model))
    runs = RunCounter(host)

    def measure(name: str, fn: Any) -> tuple[Tensor, dict[str, int]]:
        counter.reset()
        runs.runs = 0
        latents = fn(runs, trajectory, pairs)
        return latents, {"chains": runs.runs, "forwards": counter.forwards, "unet_rows": counter.rows}

    timings, results, counts = run_variants(measure, repeats, device)
    diff = float((results["serial"] - results["lockstep"]).abs().max())
    scale = float(results["serial"].abs().max())
    speedup = timings["serial"].best / timings["lockstep"].best
    label = "full-size SD1.5 UNet" if full_size else "tiny SD1.5-arch UNet"
    print(f"[ComfyUI, ComfyHost] {label}, T={steps}, K={pairs}, cfg={cfg}, latent {tuple(shape)}")
    for name in ("serial", "lockstep"):
        c = counts[name]
        print(
            f"  {name:8s}: best {timings[name].best:7.2f} s (median {timings[name].median:.2f}),"
            f" guider chains {c['chains']}, UNet forwards {c['forwards']}, UNet rows {c['unet_rows']}"
        )
    print(f"  max |serial - lockstep| = {diff:.3g} (max |latent| {scale:.3g}); wall ratio = {speedup:.2f}")
    s, p = counts["serial"], counts["lockstep"]
    report.add(
        Metric(
            f"1. candidates lockstep vs serial, {label} via ComfyHost (T={steps}, K={pairs}): max abs diff",
            f"{diff:.2g} = {diff / scale:.1g} of max abs latent ({scale:.2g})",
            "≤ 1e-4 relative (fp32 rounding)",
            diff <= 1e-4 * scale,
            "fp32 conv/GEMM kernels reduce in a batch-dependent order; CFG 7.5 amplifies that rounding "
            "over up to T steps (the analytic model, free of such kernels, agrees exactly).",
        ),
        Metric(
            f"1. guider chains / UNet forwards serial → lockstep, {label} (T={steps}, K={pairs})",
            f"{s['chains']} / {s['forwards']} → {p['chains']} / {p['forwards']}"
            f" (UNet rows {s['unet_rows']} = {p['unet_rows']})",
            f"K·T / K·T(T+1)/2 → 1 / T (T={steps}, K={pairs}: "
            f"{pairs * steps} / {pairs * triangular(steps)} → 1 / {steps})",
            p["chains"] == 1 and p["forwards"] == steps and s["unet_rows"] == p["unet_rows"],
            "GuidedCFGGuider gives the rows of all pairs one row-wise positive (their embeddings stacked "
            "per row), so each level is one UNet forward holding every pair's cond and uncond rows.",
        ),
        Metric(
            f"1. wall speed-up lockstep vs serial, {label} via ComfyHost (T={steps}, K={pairs})",
            fmt_ratio(speedup),
            "> 1×",
            speedup > 1.0,
        ),
    )


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="T for the analytic model (paper: 50)")
    parser.add_argument("--comfy-steps", type=int, default=50, help="T for the ComfyUI UNet part")
    parser.add_argument("--pairs", type=int, default=2, help="edit pairs K")
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--latent", type=int, default=8, help="tiny UNet latent side (image = 8x)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (analytic)")
    parser.add_argument("--comfy-repeats", type=int, default=2, help="interleaved timing repeats (ComfyUI)")
    args = parser.parse_args()
    benchlib.apply_common(args)
    report = Report("bench_parallel", benchlib.machine_line(args.device))
    print(report.machine)
    analytic_part(report, args.steps, args.pairs, args.cfg, args.repeats, args.device)
    comfy_part(
        report,
        args.comfy_steps,
        args.pairs,
        args.cfg,
        args.comfy_repeats,
        args.latent,
        args.full_size,
        args.device,
    )
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
