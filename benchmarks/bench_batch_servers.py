"""9. ``oir-edit batch`` over 1, 2 and 4 ComfyUI servers: cases per minute and scheduling overhead.

Starts ``--servers`` (default 4) local CPU ComfyUI servers with the pack and the tiny test models
(``tests/integration/comfy_server.py``), then runs the same number of fresh cases (each its own
random 64x64 picture, so nothing is served from ComfyUI's cache) through the real ``oir-edit batch``
command against the first 1, 2 and 4 of them. Per run it prints:

- wall time and cases/min (from ``batch_report.json``'s ``wall_s``: checks included, Python start
  excluded), and the speed-up over one server;
- the scheduling gap per case on the client: a server's thread finishing one case (report written)
  and starting its next (``attempts`` in ``batch_report.json``);
- the server's idle time between cases: ComfyUI's own ``execution_success`` of one prompt to the
  ``execution_start`` of the next on the same server (``/history`` timestamps), which adds the
  outputs' download, the next case's checks, uploads and queuing to the gap above.

Each server gets ``--server-threads`` torch threads (``OMP_NUM_THREADS``, default 1): N servers on
a C-core machine cannot run more than C threads at once, so throughput stops growing at about
C / threads servers. It never asserts.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import benchlib

CONSOLE = Path(sys.executable).parent / "oir-edit"


def write_cases(folder: Path, count: int, seed: int) -> Path:
    """``count`` tiny two-object cases with their own pictures (distinct per ``seed``)."""
    import numpy as np
    import yaml
    from PIL import Image

    for index in range(count):
        case = folder / f"case{index:03d}"
        case.mkdir(parents=True)
        rng = np.random.default_rng(seed * 1000 + index)
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(case / "image.png")
        for name, (top, bottom, left, right) in {"dog": (8, 40, 4, 28), "gift": (24, 56, 36, 60)}.items():
            mask = np.zeros((64, 64), dtype="uint8")
            mask[top:bottom, left:right] = 255
            Image.fromarray(mask, mode="L").save(case / f"{name}.png")
        spec = {
            "image": "image.png",
            "prompt": "a dog sitting next to a gift",
            "edits": ["dog=cat:dog.png", "gift=cake:gift.png"],
            "checkpoint": "tiny-sd15",
            "steps": 5,
            "reassembly_step": 2,
            "reinversion_steps": 2,
        }
        (case / f"case{index:03d}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return folder


def run_batch(specs: Path, out: Path, urls: list[str]) -> dict[str, Any]:
    listed = out.with_name(out.name + "_servers.txt")  # --servers: the scheduler even for one server
    listed.write_text("\n".join(urls) + "\n", encoding="utf-8")
    command = [str(CONSOLE), "batch", str(specs), "--out", str(out), "--servers", str(listed)]
    command += ["--model-loader", "OIRTestTinyCheckpointLoader", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"oir-edit batch failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads((out / "batch_report.json").read_text(encoding="utf-8"))


def client_gaps(report: dict[str, Any]) -> list[float]:
    """Per server: next attempt's start minus the previous attempt's end (seconds)."""
    by_server: dict[str, list[tuple[float, float]]] = {}
    for case in report["cases"]:
        for attempt in case["attempts"]:
            start = attempt["started_s"]
            by_server.setdefault(attempt["server"], []).append((start, start + attempt["seconds"]))
    gaps = []
    for spans in by_server.values():
        spans.sort()
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return gaps


def server_gaps(report: dict[str, Any], out: Path, clients: dict[str, Any]) -> list[float]:
    """Per server: ComfyUI's ``execution_start`` of a prompt minus the previous ``execution_success``."""
    by_server: dict[str, list[tuple[float, float]]] = {}
    for case in report["cases"]:
        prompt = json.loads((out / case["name"] / "report.json").read_text(encoding="utf-8"))["prompt_id"]
        entry = clients[case["server"]].history(prompt)
        stamps = {kind: data.get("timestamp") for kind, data in entry["status"]["messages"]}
        by_server.setdefault(case["server"], []).append(
            (stamps["execution_start"] / 1000, stamps["execution_success"] / 1000)
        )
    gaps = []
    for spans in by_server.values():
        spans.sort()
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return gaps


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"mean {1000 * statistics.fmean(values):.0f} ms, max {1000 * max(values):.0f} ms ({len(values)} gaps)"
    )


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8, help="cases per batch (default 8)")
    parser.add_argument("--servers", type=int, default=4, help="servers started (runs use 1, 2, 4, ...)")
    parser.add_argument("--server-threads", type=int, default=1, help="torch threads per server")
    args = parser.parse_args()
    benchlib.apply_common(args)
    report = benchlib.comfy_report("bench_batch_servers", args, "starts ComfyUI servers")
    if report is None:
        return
    from comfy_server import start_test_server

    threads = str(args.server_threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    counts = [n for n in (1, 2, 4, 8, 16) if n <= args.servers]
    with TemporaryDirectory(prefix="bench-batch-servers-") as tmp:
        root = Path(tmp)
        clock = time.monotonic()
        with ThreadPoolExecutor(args.servers) as pool:
            futures = [
                pool.submit(start_test_server, root / f"server{i}", controlnet=False, env=env)
                for i in range(args.servers)
            ]
        try:
            servers = [future.result() for future in futures]
        except BaseException:  # one failed to start: stop the others before leaving
            for future in futures:
                if future.exception() is None:
                    future.result().stop()
            raise
        print(
            f"{args.servers} servers started in {time.monotonic() - clock:.1f} s "
            f"({threads} torch thread(s) each)"
        )
        try:
            urls = [s.url for s in servers]
            clients = {s.url: s.client for s in servers}
            run_batch(
                write_cases(root / "warm", args.servers, seed=0), root / "warm_out", urls
            )  # load models
            rows = []
            for n in counts:
                specs = write_cases(root / f"specs{n}", args.cases, seed=n)
                out = root / f"out{n}"
                summary = run_batch(specs, out, urls[:n])
                wall = summary["wall_s"]
                rows.append((n, wall, client_gaps(summary), server_gaps(summary, out, clients)))
                per_server = {u: s["cases_done"] for u, s in ((x["url"], x) for x in summary["servers"])}
                print(
                    f"{n} server(s): {args.cases} cases in {wall:.1f} s = "
                    f"{60 * args.cases / wall:.1f} cases/min "
                    f"(x{rows[0][1] / wall:.2f} vs 1 server); cases per server {list(per_server.values())}"
                )
                print(f"    scheduling gap on the client: {_ms(rows[-1][2])}")
                print(f"    server idle between its cases: {_ms(rows[-1][3])}")
                print(f"    load avg {os.getloadavg()[0]:.1f}")
        finally:
            for server in servers:
                server.stop()
    base = rows[0][1]
    for n, wall, gaps, idle in rows:
        report.add(benchlib.Metric(f"{n} server(s): cases/min", f"{60 * args.cases / wall:.1f}"))
        report.add(benchlib.Metric(f"{n} server(s): speed-up vs 1", f"x{base / wall:.2f}"))
        if gaps:
            report.add(
                benchlib.Metric(
                    f"{n} server(s): client gap per case", f"{1000 * statistics.fmean(gaps):.0f} ms"
                )
            )
        if idle:
            report.add(
                benchlib.Metric(
                    f"{n} server(s): server idle per case", f"{1000 * statistics.fmean(idle):.0f} ms"
                )
            )
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
