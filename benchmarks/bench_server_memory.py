"""Benchmark 10: a ComfyUI server's memory over many consecutive OIR edits.

**Measured.** One ComfyUI server, started the way the integration tests start one
(``tests/integration/comfy_server.py``: the pack, the test node pack with the tiny models and the
tiny CLIP scorer; ``--cpu`` unless ``--device cuda``; ComfyUI's default node cache). ``--edits``
(30) consecutive edits through ``oir-edit``'s runner (``tests/integration/edit_series.py``), each
different from the others: picture size and content, masks, prompt (one or two objects), steps,
cfg, the exhaustive or the coarse-to-fine search, the ``official`` or the ``preserve`` background.
After each edit: the server process's RSS (``psutil``) and the pack's live objects (the test node
pack's ``GET /oir_test/live_objects``: a garbage collection, then the objects of the pack's classes
and the tensors reachable from them). Then ``POST /free`` (``unload_models``, ``free_memory``: the
"Free model and node cache" button) and the live objects again.

Printed: the curve (edit, RSS, live trajectories / candidate caches / scorers, tensors they hold),
RSS(last) / RSS(edit 5), and the live objects after ``/free`` (target: none). ComfyUI 0.33's
default node cache keeps earlier prompts' outputs until the machine's free RAM runs low, so the
pack's objects grow with the edits until ``/free``: that is ComfyUI's cache, and the count shows it.

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_server_memory.py`` (about 4 min on 2
CPU cores for 30 edits).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Metric, fmt_pct


def fmt_bytes(value: float) -> str:
    """MiB with one decimal (the curve's changes are a few MiB on a ~1 GiB process)."""
    return f"{value / 2**20:.1f} MiB"


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=30, help="consecutive edits on the one server")
    parser.add_argument(
        "--reference", type=int, default=5, help="the edit whose RSS the last one is compared with"
    )
    args = parser.parse_args()
    benchlib.apply_common(args)
    report = benchlib.comfy_report("bench_server_memory", args, "the server memory benchmark")
    if report is None:
        return
    if args.full_size:
        report.skip("--full-size: the series uses the test server's tiny models only")
    import comfy_server
    import edit_series

    reference = max(1, min(args.reference, args.edits))
    with tempfile.TemporaryDirectory(prefix="oir-bench-server-") as tmp:
        root = Path(tmp)
        server = comfy_server.start_test_server(root / "server", controlnet=False, cpu=args.device == "cpu")
        try:
            assert server.server.process is not None
            pid = server.server.process.pid
            start_rss = edit_series.server_rss(pid)
            client = server.client
            print(f"server pid {pid}, RSS after start {fmt_bytes(start_rss)}")
            print(
                "edit | steps | search | background | pairs | size | RSS | trajectories | candidate caches | "
                "scorers | held tensors (bytes)"
            )
            curve: list[dict[str, Any]] = []

            def on_edit(result: Any) -> None:
                live = client.get_json("/oir_test/live_objects")
                spec = result.edit.spec
                width, height = result.edit.size
                row = {"rss": result.rss, "live": live}
                curve.append(row)
                counts = live["counts"]
                print(
                    f"{result.edit.index + 1:>4} | {spec['steps']:>5} | {spec['search_mode']:<14} | "
                    f"{spec['background']:<8} | {len(spec['edits'])} | {width}x{height} | "
                    f"{fmt_bytes(result.rss)} | {counts['trajectories']} | {counts['candidate_caches']} | "
                    f"{counts['scorers']} | {live['held_tensors']} ({fmt_bytes(live['held_bytes'])})",
                    flush=True,
                )

            edits = edit_series.series(root / "inputs", args.edits, comfy_server.TINY_CHECKPOINT)
            edit_series.run_series(server.url, pid, edits, root / "out", comfy_server.TEST_LOADER, on_edit)
            freed = edit_series.free_and_count(client)
            freed_rss = edit_series.server_rss(pid)
        finally:
            server.stop()
    last, ref = curve[-1], curve[reference - 1]
    ratio = last["rss"] / ref["rss"]
    rss_values = [row["rss"] for row in curve[reference - 1 :]]
    counts = freed["counts"]
    print(
        f"RSS: start {fmt_bytes(start_rss)}, edit {reference} {fmt_bytes(ref['rss'])}, edit {len(curve)} "
        f"{fmt_bytes(last['rss'])}, max from edit {reference} on {fmt_bytes(max(rss_values))}, after /free "
        f"{fmt_bytes(freed_rss)}"
    )
    print(f"RSS(edit {len(curve)}) / RSS(edit {reference}) = {ratio:.4f}")
    print(
        f"after POST /free: {counts}, pack objects {freed['by_class']}, "
        f"held tensors {freed['held_tensors']}, "
        f"module-level tensors {freed['module_tensors']}, loaded models {freed['loaded_models']}, "
        f"gc-tracked tensors {freed['gc_tensors']} (before /free {last['live']['gc_tensors']})"
    )
    report.add(
        Metric(
            f"server RSS, edit {len(curve)} / edit {reference} ({len(curve)} varied edits)",
            f"{ratio:.3f} ({fmt_pct(ratio - 1)})",
            "<= 1.05",
            ratio <= 1.05,
            detail=f"{fmt_bytes(ref['rss'])} -> {fmt_bytes(last['rss'])}",
        ),
        Metric(
            "pack objects alive before POST /free (trajectories / candidate caches / scorers)",
            "{trajectories} / {candidate_caches} / {scorers}".format(**last["live"]["counts"]),
            detail="held by ComfyUI's node cache",
        ),
        Metric(
            "OIR trajectories, candidate caches, scorers alive after POST /free",
            "{trajectories} / {candidate_caches} / {scorers}".format(**counts),
            "0 / 0 / 0",
            not any(counts.values()),
        ),
        Metric(
            "tensors held by pack objects or module globals after POST /free",
            str(freed["held_tensors"] + freed["module_tensors"]),
            "0",
            freed["held_tensors"] + freed["module_tensors"] == 0,
        ),
    )
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
