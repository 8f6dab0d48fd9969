"""Benchmark 7: what a mask from words costs, next to the inversion of the same image.

**Measured** in one process, interleaved: OIR DDIM Inversion (``--steps`` levels, the paper's 50)
and OIR Phrase Mask with each method (``--draws`` noise draws, DiffEdit's 10) on the same latent,
through the real nodes inside ComfyUI. UNet rows and forwards are counted by a UNet function
wrapper (ComfyUI's hook around every forward); wall time is the median of ``--repeats`` runs.
The target: a mask costs at most the inversion's own model rows.

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_phrase_mask.py`` (``--full-size``
for the real SD1.5 architecture at 512², ``--device cuda`` on a GPU).
"""

from __future__ import annotations

import statistics
from typing import Any

import benchlib
import torch
from benchlib import Metric


def node(name: str) -> Any:
    module = benchlib.pack("nodes")
    return next(cls for cls in module.NODES if cls.define_schema().node_id == name)


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="inversion steps T (paper: 50)")
    parser.add_argument("--draws", type=int, default=10, help="noise draws of the mask (DiffEdit: 10)")
    parser.add_argument("--latent", type=int, default=32, help="tiny UNet latent side (image = 8x)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats")
    args = parser.parse_args()
    benchlib.apply_common(args)
    report = benchlib.comfy_report("bench_phrase_mask", args, "the phrase-mask benchmark")
    if report is None:
        return
    import tiny_models

    model, counter = benchlib.counted(benchlib.build_unet(args.full_size, args.seed, args.device))
    clip = tiny_models.build_tiny_clip(seed=3) if not args.full_size else None
    if clip is None:
        report.skip("--full-size has no matching text encoder here (the tiny CLIP is 64 wide)")
        report.emit(args.json_out)
        return
    side = args.latent
    latent = {"samples": torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(args.seed))}
    prompt = "a dog sitting next to a gift"
    original = tiny_models.encode_prompt(clip, prompt)
    inversion, mask = node("OIRDDIMInversion"), node("OIRPhraseMask")

    runs: dict[str, Any] = {
        "inversion": lambda: inversion.execute(
            model=model,
            latent=latent,
            original=original,
            steps=args.steps,
            scheduler="ddim_uniform",
            convention="auto",
        ),
    }
    for method in ("cross_attention", "noise_difference"):
        runs[method] = lambda method=method: mask.execute(
            model=model,
            clip=clip,
            latent=latent,
            original_prompt=prompt,
            source="dog",
            occurrence=0,
            target="cat",
            method=method,
            threshold=0.5,
            noise_strength=0.5,
            draws=args.draws,
            draw_seed=0,
        )
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    rows: dict[str, int] = {}
    forwards: dict[str, int] = {}
    for run in runs.values():  # warm-up
        run()
    for _ in range(args.repeats):
        for name, run in runs.items():
            counter.reset()
            elapsed, _ = benchlib.timed(run, args.device)
            seconds[name].append(elapsed)
            rows[name], forwards[name] = counter.rows, counter.forwards
    base_rows, base_time = rows["inversion"], statistics.median(seconds["inversion"])
    report.add(
        Metric(
            f"inversion, T={args.steps} (reference)",
            f"{base_rows} UNet rows in {forwards['inversion']} forwards, {base_time:.2f} s",
        )
    )
    for method in ("cross_attention", "noise_difference"):
        ratio = rows[method] / base_rows
        time_ratio = statistics.median(seconds[method]) / base_time
        report.add(
            Metric(
                f"phrase mask, {method}, {args.draws} draws, vs the inversion",
                f"{rows[method]} rows in {forwards[method]} forwards ({ratio:.2f}x the rows), "
                f"{time_ratio:.2f}x the time",
                "<= 1x the inversion's rows",
                rows[method] <= base_rows,
            )
        )
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
