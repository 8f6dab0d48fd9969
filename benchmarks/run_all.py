"""Run every OIR benchmark and print one markdown table (metric | measured | target).

Each benchmark runs in its own process (``python benchmarks/<name>.py --json-out …``), one after
the other, with its output streamed. The combined table, the machine line, the exact commands and
the notes are printed at the end and written to ``benchmarks/results/latest.md`` (``--out`` to
change, ``--no-write`` to skip); the machine line and the table also replace the marked block of
``docs/results.md`` (``--docs`` to change), so the reference page shows the last full run.

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/run_all.py`` (add ``--device cuda`` and
``--full-size`` on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import torch
from benchlib import Metric

SCRIPTS = (
    "bench_parallel.py",
    "bench_efficiency.py",
    "bench_coarse_to_fine.py",
    "bench_edit.py",
    "bench_memory.py",
    "bench_gpu.py",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--full-size", action="store_true", help="full-size SD1.5 UNet (for GPUs)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. 'bench_edit,bench_memory'")
    parser.add_argument("--out", default=str(benchlib.BENCH_DIR / "results" / "latest.md"))
    parser.add_argument("--docs", default=str(benchlib.BENCH_DIR.parent / "docs" / "results.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    wanted = {name.strip().removesuffix(".py") for name in args.only.split(",") if name.strip()}
    scripts = [s for s in SCRIPTS if not wanted or s.removesuffix(".py") in wanted]
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # so the machine line shows what the scripts use
    machine = benchlib.machine_line(args.device)
    print(machine, flush=True)
    metrics: list[Metric] = []
    skipped: list[str] = []
    commands: list[str] = []
    durations: list[str] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="oir-bench-") as tmp:
        for script in scripts:
            out = Path(tmp) / f"{script}.json"
            extra = ["--device", args.device, "--threads", str(args.threads)]
            extra += ["--full-size"] if args.full_size and script != "bench_gpu.py" else []
            # the GPU check always runs full size on CUDA; on a CPU it only proves itself (--tiny)
            extra += ["--tiny"] if script == "bench_gpu.py" and args.device == "cpu" else []
            command = [sys.executable, str(benchlib.BENCH_DIR / script), *extra]
            shown = " ".join(["python", f"benchmarks/{script}", *extra])
            commands.append(shown)
            print(f"\n=== {shown}", flush=True)
            start = time.perf_counter()
            done = subprocess.run([*command, "--json-out", str(out)], check=False, env=dict(os.environ))
            durations.append(f"{script}: {time.perf_counter() - start:.0f} s")
            if done.returncode != 0 or not out.exists():
                skipped.append(f"{script} failed (exit {done.returncode})")
                continue
            payload = json.loads(out.read_text(encoding="utf-8"))
            metrics.extend(Metric(**m) for m in payload["metrics"])
            skipped.extend(f"{script}: {reason}" for reason in payload["skipped"])
    total = time.perf_counter() - started
    run_command = " ".join(["python benchmarks/run_all.py", shlex.join(sys.argv[1:])]).strip()
    table = benchlib.markdown_table(metrics)
    notes = [f"- {m.name}: {m.detail}" for m in metrics if m.detail]
    text = "\n".join(
        [
            "# OIR benchmark results",
            "",
            f"Machine: {machine}",
            "",
            f"Command: `COMFYUI_PATH=/path/to/ComfyUI {run_command}`",
            "",
            table,
            "",
            *(["Notes:", "", *notes, ""] if notes else []),
            *(["Skipped:", "", *[f"- {s}" for s in skipped], ""] if skipped else []),
            "Per-script commands (each also takes `--json-out PATH`):",
            "",
            *[f"- `{c}`" for c in commands],
            "",
            f"Wall time: {total:.0f} s ({'; '.join(durations)}).",
            "",
        ]
    )
    print("\n" + text)
    if not args.no_write:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"written to {args.out}")
        if not wanted:  # a subset would replace the whole table with part of it
            docs = Path(args.docs)
            block = f"Machine: {machine}\n\n{table}"
            page = benchlib.replace_marked_block(docs.read_text(encoding="utf-8"), block)
            docs.write_text(page, encoding="utf-8")
            print(f"table written into {args.docs}")


if __name__ == "__main__":
    main()
