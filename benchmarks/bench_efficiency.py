"""Benchmark 2: model efficiency of the lockstep search (target ≥ 95 % of the best batched throughput).

Two measurements of the same ComfyUI UNet on the same machine, both through ``ComfyHost`` (every
call through ComfyUI's ``CFGGuider``, CFG on):

1. **search**: the engine's exhaustive lockstep search (``generate_candidates``, ``K`` pairs, every
   step ``1..T``); achieved throughput = candidate rows / wall time.
2. **model alone**: one ``host.run`` whose body calls the denoiser on a fixed batch of ``B``
   candidate rows again and again, for ``B = 1, 2, 4, …, K·T``; the best rows/s over ``B`` is the
   reference.

Efficiency = (1) / best of (2). The script also explains the gap: from the measured per-call time
at each batch size it predicts the search's time from its actual sequence of UNet forwards (the
"batch-profile bound": the lockstep holds only the candidates with ``t >= s`` at level ``s``, so
early levels run small batches; all pairs share one UNet forward per level and chunk, cond and
uncond included) and runs the search once more with the chunk capped at the curve's best batch
size. The shipped search
uses ``ComfyHost``'s defaults: the rows per call planned from the model, the latent and the
device's total memory (``plan_call_rows``; this tiny model runs a whole level per call).

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_efficiency.py``
"""

from __future__ import annotations

import time

import benchlib
import torch
from benchlib import Metric, fmt_pct

from oir_core.candidates import exhaustive_steps, generate_candidates
from oir_core.inversion import invert


def interpolate(curve: dict[int, float], batch: int) -> float:
    """Seconds per call at ``batch``, linear between the measured batch sizes (affine beyond)."""
    sizes = sorted(curve)
    if batch in curve:
        return curve[batch]
    lo = max([b for b in sizes if b < batch], default=sizes[0])
    hi = min([b for b in sizes if b > batch], default=sizes[-1])
    if lo == hi:
        lo, hi = sizes[-2], sizes[-1]
    slope = (curve[hi] - curve[lo]) / (hi - lo)
    return curve[lo] + slope * (batch - lo)


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="T (paper: 50)")
    parser.add_argument("--pairs", type=int, default=2, help="edit pairs K")
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--latent", type=int, default=8, help="tiny UNet latent side (image = 8x)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved passes (curve + both searches); best kept"
    )
    parser.add_argument(
        "--min-seconds", type=float, default=0.4, help="time per batch size and pass, at least"
    )
    args = parser.parse_args()
    benchlib.apply_common(args)
    report = benchlib.comfy_report("bench_efficiency", args, "efficiency benchmark")
    if report is None:
        return
    comfy_host = benchlib.pack("nodes.comfy_host")
    model, counter = benchlib.counted(benchlib.build_unet(args.full_size, 0, args.device))
    shape = benchlib.FULL_SIZE_LATENT if args.full_size else (4, args.latent, args.latent)
    conds = [benchlib.conditioning(seed, args.full_size) for seed in range(args.pairs + 1)]
    host = comfy_host.ComfyHost(model, conds[0], None, conds[1:], None, cfg=args.cfg)
    sigmas = comfy_host.get_sigmas(model, "ddim_uniform", args.steps)
    clean = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    trajectory = invert(host, clean, sigmas, "official_x0", clean_sigma=comfy_host.clean_sigma(model))
    starts = [exhaustive_steps(args.steps)] * args.pairs

    # 1 + 2, interleaved so a load spike from another process hits every measurement alike: each
    # repeat times one pass over the batch sizes (the model alone, same host path), the search as
    # shipped (chunk = largest that fits memory) and the search with the chunk capped at the best
    # batch size seen so far (what a throughput-aware chunk choice would give). Best of repeats.
    top = args.pairs * args.steps
    sizes = sorted({b for g in benchlib.geometric_batches(top) for b in (g, g + g // 2) if b <= top})
    sigma = float(sigmas[len(sigmas) // 2])
    curve: dict[int, float] = {}
    times: dict[str, list[float]] = {"shipped": [], "capped": []}
    stats, batches, chunk, caps = None, [], None, []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        for batch in sizes:
            seconds = benchlib.batch_time(host, batch, shape, sigma, args.min_seconds, args.device)
            curve[batch] = min(curve.get(batch, float("inf")), seconds)
        print(
            f"  pass {repeat + 1}: model alone at {len(sizes)} batch sizes "
            f"({time.perf_counter() - start:.0f} s)"
        )
        best_batch = max(curve, key=lambda b: b / curve[b])
        caps.append(best_batch)
        capped = comfy_host.ComfyHost(
            model, conds[0], None, conds[1:], None, cfg=args.cfg, max_batch=best_batch
        )
        for name, search_host in (("shipped", host), ("capped", capped)):
            counter.reset()
            seconds, found = benchlib.timed(
                lambda h=search_host: generate_candidates(h, trajectory, starts), args.device
            )
            times[name].append(seconds)
            if name == "shipped":
                stats, batches, chunk = found.stats, list(counter.batches), host.last_max_batch
                model_calls = host.last_model_calls
    assert stats is not None
    for batch in sizes:
        print(
            f"  model alone, batch {batch:4d}: {curve[batch] * 1e3:8.1f} ms/call"
            f" → {batch / curve[batch]:8.1f} rows/s (best of {args.repeats} passes)"
        )
    best_batch = max(curve, key=lambda b: b / curve[b])
    best_rate = best_batch / curve[best_batch]
    print(f"  best: {best_rate:.1f} rows/s at batch {best_batch}")
    search_seconds = min(times["shipped"])
    search_rate = stats.rows / search_seconds
    capped_rate = stats.rows / min(times["capped"])
    print(
        f"search: T={args.steps}, K={args.pairs}, latent {shape}: {stats.rows} candidate rows, "
        f"{stats.levels} levels, {stats.calls} denoiser calls (chunk {chunk}), {len(batches)} UNet forwards; "
        f"best {search_seconds:.2f} s of {[round(t, 2) for t in times['shipped']]} → {search_rate:.1f} rows/s"
    )
    print(
        f"search with max_batch = best batch so far {caps}: best {min(times['capped']):.2f} s of "
        f"{[round(t, 2) for t in times['capped']]} → {capped_rate:.1f} rows/s"
    )

    # 3. Where the gap comes from: the search's own forwards, priced with the measured curve.
    # Each UNet forward holds cond + uncond rows of every pair: candidate rows = batch / 2 (CFG).
    branches = 2
    profile_seconds = sum(interpolate(curve, b // branches) for b in batches)
    profile_rate = stats.rows / profile_seconds
    efficiency = search_rate / best_rate
    print(
        f"efficiency {fmt_pct(efficiency)}; batch-profile bound {fmt_pct(profile_rate / best_rate)} "
        f"(search's own UNet forwards priced at the measured per-call times); "
        f"engine/host overhead beyond that {fmt_pct(1 - search_rate / profile_rate)} of the search's time; "
        f"{len(batches)} UNet forwards for {stats.levels} levels and {model_calls} model calls"
    )
    label = "full-size SD1.5 UNet" if args.full_size else f"tiny UNet, latent {shape[-1]}²"
    report.add(
        Metric(
            f"2. search efficiency: rows/s vs best batched rows/s ({label}, T={args.steps}, K={args.pairs}, "
            f"chunk {chunk}, planned split)",
            f"{fmt_pct(efficiency)} ({search_rate:.0f} vs {best_rate:.0f} rows/s @ batch {best_batch})",
            "≥ 95 %",
            efficiency >= 0.95,
            "on a shared CPU, repeated runs of this script spread by about ±4 points; the "
            "decomposition below prices the search's forwards with separately timed calls, so the "
            "bounds carry the same noise.",
        ),
        Metric(
            "2. … bound set by the lockstep's batch profile (measured per-call times)",
            fmt_pct(profile_rate / best_rate),
            "-",
            None,
            "level s holds only candidates with t ≥ s, so early levels are small batches.",
        ),
        Metric(
            "2. … UNet forwards of the search (all pairs, cond and uncond, share each one)",
            f"{len(batches)} for {stats.levels} levels in {model_calls} model calls",
            "one per model call",
            len(batches) == model_calls,
        ),
        Metric(
            f"2. … search with the chunk capped at the best batch ({'/'.join(map(str, sorted(set(caps))))})",
            fmt_pct(capped_rate / best_rate),
            "≥ 95 %",
            capped_rate / best_rate >= 0.95,
            "on CPUs the fastest batch can be much smaller than what fits memory (cache-bound).",
        ),
    )
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
