"""Benchmark 5: peak activation memory of the search with and without chunking, and the real loading
path of full-size SD1.5 and SDXL UNets on simulated 8 / 12 GiB cards.

**Measured.** Each variant runs in its own subprocess (fresh allocator, no cross-talk): build the
ComfyUI UNet, warm it up with one small call, then run the exhaustive lockstep search of ``K``
pairs through ``ComfyHost``, either unchunked (every candidate of a level in one call: ``K·T`` rows
at level 1) or with ``max_batch`` rows per call. Peak activation memory:

- CPU: the process's peak RSS during the search minus its RSS just before (Linux: the peak counter
  ``VmHWM`` is reset through ``/proc/self/clear_refs`` before the search; elsewhere
  ``ru_maxrss`` is used, which can only under-report);
- CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the search.

**Real loading path, simulated card.** For the exhaustive search of two pairs at ``T = 50``, a
full-size fp16 SD1.5 UNet at 512² on an 8 GiB card and SDXL at 1024² on a 12 GiB card go through
ComfyUI's own ``load_models_gpu`` (``tests/integration/simulated_gpu.py``): the fraction of the
weights loaded, the chunk ``ComfyHost`` then picks and the calls it makes; and, for contrast, the
loaded fraction when ComfyUI is asked to reserve for the whole level. With the estimate ComfyUI
uses on NVIDIA GPUs (PyTorch attention) and with the sub-quadratic-attention one.

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_memory.py``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib
import torch
from benchlib import Metric, Report, fmt_bytes, fmt_pct

from oir_core.candidates import exhaustive_steps, generate_candidates
from oir_core.inversion import InversionTrajectory


def status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in KiB, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
    except OSError:
        return False
    return True


def child(args: Any) -> None:
    """One variant in this process; prints one JSON line."""
    benchlib.setup_comfy(args.device)
    comfy_host = benchlib.pack("nodes.comfy_host")
    model = benchlib.build_unet(args.full_size, 0, args.device)
    shape = benchlib.FULL_SIZE_LATENT if args.full_size else (4, args.latent, args.latent)
    conds = [benchlib.conditioning(seed, args.full_size) for seed in range(args.pairs + 1)]
    # chunk 0 = unchunked: every candidate of a level in one call (beyond the default row cap).
    max_batch = args.chunk if args.chunk > 0 else args.pairs * args.steps
    host = comfy_host.ComfyHost(model, conds[0], None, conds[1:], None, cfg=7.5, max_batch=max_batch)
    sigmas = comfy_host.get_sigmas(model, "ddim_uniform", args.steps)
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((args.steps + 1, *shape), generator=generator) * sigmas.flip(0).view(
        -1, 1, 1, 1
    ).clamp(min=1.0)
    trajectory = InversionTrajectory(latents, sigmas, "official_x0", comfy_host.clean_sigma(model))
    generate_candidates(host, trajectory, [[1]] * args.pairs)  # warm-up: model load, one small call
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        rss_before = status_kib("VmRSS")
        method = "VmHWM" if rss_before is not None and reset_peak_rss() else "ru_maxrss"
        if method == "ru_maxrss":
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = generate_candidates(host, trajectory, [exhaustive_steps(args.steps)] * args.pairs)
    if cuda:
        torch.cuda.synchronize()
        peak, method = torch.cuda.max_memory_allocated() - before, "cuda.max_memory_allocated"
    else:
        after = (
            status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        )
        peak = (after - rss_before) * 1024
    torch.save(found.latents, args.save)
    print(
        json.dumps(
            {
                "peak_bytes": peak,
                "method": method,
                "chunk": host.last_max_batch,
                "peak_rows": found.stats.peak_rows,
                "calls": found.stats.calls,
            }
        )
    )


def run_child(args: Any, chunk: int, save: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--chunk",
        str(chunk),
        "--save",
        str(save),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--pairs",
        str(args.pairs),
        "--latent",
        str(args.latent),
    ] + (["--full-size"] if args.full_size else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"variant chunk={chunk} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


CARDS = (("sd15", 64, 4), ("sd15", 64, 8), ("sdxl", 128, 8), ("sdxl", 128, 12))
"""(family, latent side, card GiB): SD1.5 at 512² on an 8 GiB card, SDXL at 1024² on a 12 GiB card."""


def chunk_on_simulated_cards(report: Report, steps: int, pairs: int) -> None:
    """The real loading path on simulated cards: is the model fully loaded, which chunk, how many calls.

    ``ComfyHost.run`` of the first exhaustive level (``K·T`` rows) through ComfyUI's own
    ``load_models_gpu`` with a full-size fp16 UNet whose weights are never written
    (``tests/integration/simulated_gpu.py``), once with the memory estimate ComfyUI uses on NVIDIA
    GPUs (PyTorch attention) and once with the sub-quadratic-attention one.
    """
    import comfy.model_management
    import simulated_gpu
    import tiny_models

    from oir_core.host import Stage

    comfy_host = benchlib.pack("nodes.comfy_host")
    rows = pairs * steps  # level 1 of an exhaustive search holds every candidate
    per_level = [pairs * (steps - s + 1) for s in range(steps, 0, -1)]
    real_flag = comfy.model_management.pytorch_attention_flash_attention
    for family, side, gib in CARDS:
        patcher = tiny_models.build_full_size_unet(family, torch.float16, torch.device("cpu"))
        cond = tiny_models.full_size_conditioning(family)
        shape = (4, side, side)
        stage = Stage("guided", torch.linspace(14.6, 0.03, steps + 1), rows, shape)
        name = {"sd15": "SD1.5", "sdxl": "SDXL"}[family]
        for label, flag in (("NVIDIA, PyTorch attention", True), ("sub-quadratic attention", False)):
            comfy.model_management.pytorch_attention_flash_attention = lambda flag=flag: flag
            try:
                results = {}
                for reserve, max_batch in (("one row", None), ("whole level", rows)):
                    host = comfy_host.ComfyHost(
                        patcher, cond, None, [cond] * pairs, cond, 7.5, max_batch=max_batch
                    )
                    results[reserve] = simulated_gpu.run_stage_on_card(host, stage, patcher, gib * 2**30)
            finally:
                comfy.model_management.pytorch_attention_flash_attention = real_flag
            seen, whole = results["one row"], results["whole level"]
            calls = sum(math.ceil(r / seen.chunk) for r in per_level)
            print(
                f"full-size {name} fp16, {side * 8}², {gib} GiB card, {label}: weights "
                f"{fmt_bytes(patcher.model_size())}; reserving one row: loaded "
                f"{fmt_pct(seen.loaded_fraction)}, "
                f"free after load {fmt_bytes(seen.free_after_load)}, chunk {seen.chunk} rows, {calls} calls; "
                f"reserving the whole level ({rows} rows): loaded {fmt_pct(whole.loaded_fraction)}"
            )
            report.add(
                Metric(
                    f"5. real loading path, full-size {name} fp16 {side * 8}², {gib} GiB card ({label})",
                    f"weights {fmt_pct(seen.loaded_fraction)} loaded; {seen.chunk} candidate rows/call; "
                    f"{calls} calls for T={steps}, K={pairs} (reserving the whole level instead: "
                    f"{fmt_pct(whole.loaded_fraction)} loaded)",
                    "100 % loaded",
                    seen.loaded_fraction == 1.0,
                    "ComfyUI's own load_models_gpu on a simulated card (capacity minus what it loaded); the "
                    "CUDA context (~0.3-0.5 GiB) is not simulated. ComfyHost plans rows per call from the "
                    "card's total memory and the model's size, never the free memory.",
                )
            )


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="T of the measured search")
    parser.add_argument("--pairs", type=int, default=2, help="edit pairs K")
    parser.add_argument("--latent", type=int, default=32, help="tiny UNet latent side (image = 8x)")
    parser.add_argument("--chunk", type=int, default=2, help="max_batch of the chunked variant")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--save", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    benchlib.apply_common(args)
    if args.child:
        child(args)
        return
    report = Report("bench_memory", benchlib.machine_line(args.device))
    print(report.machine)
    reason = benchlib.comfy_unavailable_reason()
    if reason is not None:
        report.skip(f"memory benchmark needs ComfyUI: {reason}")
        report.emit(args.json_out)
        return
    with tempfile.TemporaryDirectory(prefix="oir-bench-mem-") as tmp:
        unchunked = run_child(args, 0, Path(tmp) / "unchunked.pt")
        chunked = run_child(args, args.chunk, Path(tmp) / "chunked.pt")
        diff = float(
            (torch.load(Path(tmp) / "unchunked.pt") - torch.load(Path(tmp) / "chunked.pt")).abs().max()
        )
    shape = benchlib.FULL_SIZE_LATENT if args.full_size else (4, args.latent, args.latent)
    for name, result in (("unchunked", unchunked), ("chunked", chunked)):
        print(
            f"{name:9s}: peak activation {fmt_bytes(result['peak_bytes'])} ({result['method']}), "
            f"chunk {result['chunk']}, largest call {result['peak_rows']} rows, {result['calls']} calls"
        )
    ratio = unchunked["peak_bytes"] / max(chunked["peak_bytes"], 1)
    print(f"max |unchunked - chunked| = {diff:.3g}; unchunked / chunked peak = {ratio:.1f}")
    label = "full-size SD1.5" if args.full_size else f"tiny UNet, latent {shape[-1]}²"
    report.add(
        Metric(
            f"5. peak activation memory, search T={args.steps}, K={args.pairs} ({label}): unchunked → "
            f"chunk {args.chunk}",
            f"{fmt_bytes(unchunked['peak_bytes'])} ({unchunked['peak_rows']} rows/call) → "
            f"{fmt_bytes(chunked['peak_bytes'])} ({chunked['peak_rows']} rows/call): {ratio:.1f}× less",
            "chunked < unchunked",
            chunked["peak_bytes"] < unchunked["peak_bytes"],
            f"measured with {chunked['method']}; candidates equal to {diff:.2g} (max abs).",
        )
    )
    benchlib.setup_comfy(args.device)
    chunk_on_simulated_cards(report, 50, 2)
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
