"""Many different edits on one ComfyUI server, and what its process holds afterwards.

Not a test module: ``test_many_edits.py`` (a short series, asserted loosely) and
``benchmarks/bench_server_memory.py`` (30 edits, the printed curve) share it. Each edit is a real
``oir-edit`` run (:class:`oir_cli.cli.EditRunner`, in this process) with its own picture (size and
content), masks, prompt, step count, search mode and background rule, so no node result of one edit
is a cached result of another. After each edit the server process's RSS (``psutil``) is read; after
``POST /free`` the test node pack's ``GET /oir_test/live_objects`` counts the pack's objects still
alive in the server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oir_cli.checks import validate_local
from oir_cli.cli import EditRunner
from oir_cli.client import ComfyClient
from oir_cli.specs import spec_from_mapping

SCENES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("a dog sitting next to a gift", (("dog", "cat"), ("gift", "cake"))),
    ("a red car parked by a tree", (("car", "bus"),)),
    ("a cup of tea beside a book", (("cup", "glass"), ("book", "phone"))),
    ("a horse standing in a field", (("horse", "cow"),)),
    ("an apple on a wooden table", (("apple", "orange"),)),
)
"""Prompts and their edits, in turn; every edit of a scene has its own mask (left / right half)."""

SIZES: tuple[tuple[int, int], ...] = ((64, 64), (96, 64), (64, 96), (80, 80))
"""Picture sizes (width, height) in turn: multiples of 8 and 16, a few latent grids."""


@dataclass(frozen=True)
class Edit:
    """One edit of the series: the spec mapping ``oir-edit`` reads, and what was varied."""

    index: int
    spec: dict[str, Any]
    size: tuple[int, int]


def series(folder: Path, count: int, checkpoint: str, steps: tuple[int, ...] = (3, 4, 5)) -> list[Edit]:
    """``count`` different edits, their pictures and masks written under ``folder``.

    Edit ``i`` takes scene ``i % 5``, size ``i % 4``, ``steps[i % len(steps)]`` steps, the
    exhaustive search on even ``i`` and coarse-to-fine (stride 2) on odd ones, and the
    ``preserve`` background (feather 1) every third edit; its picture is random with seed ``i``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    edits = []
    for index in range(count):
        prompt, pairs = SCENES[index % len(SCENES)]
        width, height = SIZES[index % len(SIZES)]
        rng = np.random.default_rng(100 + index)
        image = folder / f"photo_{index:02d}.png"
        Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8")).save(image)
        edit_args = []
        for k, (source, target) in enumerate(pairs):
            mask = np.zeros((height, width), dtype="uint8")
            top = int(rng.integers(0, height // 4))
            half = width // len(pairs)
            mask[top : top + height // 2, k * half + 4 : (k + 1) * half - 4] = 255
            path = folder / f"mask_{index:02d}_{source}.png"
            Image.fromarray(mask, mode="L").save(path)
            edit_args.append(f"{source}={target}:{path}")
        count_steps = steps[index % len(steps)]
        spec: dict[str, Any] = {
            "image": str(image),
            "prompt": prompt,
            "edits": edit_args,
            "checkpoint": checkpoint,
            "steps": count_steps,
            "reassembly_step": 1,
            "reinversion_steps": 1,
            "search_mode": "exhaustive" if index % 2 == 0 else "coarse_to_fine",
            "coarse_stride": 2,
            "refine_radius": 1,
            "background": "preserve" if index % 3 == 2 else "official",
            "feather": 1,
            "cfg": 3.0 + index % 4,
            "seed": index,
        }
        edits.append(Edit(index, spec, (width, height)))
    return edits


def server_rss(pid: int) -> int:
    """The resident set size of process ``pid`` in bytes (``psutil``, which ComfyUI requires)."""
    import psutil

    return int(psutil.Process(pid).memory_info().rss)


@dataclass
class EditResult:
    """What one edit of the series gave: its report and the server's RSS right after it."""

    edit: Edit
    report: dict[str, Any]
    rss: int


def run_series(
    url: str,
    pid: int,
    edits: list[Edit],
    out_root: Path,
    model_loader: str,
    on_edit: Callable[[EditResult], None] | None = None,
) -> list[EditResult]:
    """Run ``edits`` one after another on the server at ``url`` (process ``pid``), each into
    ``out_root/edit_NN``; the server's RSS is read after each."""
    runner = EditRunner(ComfyClient(url, timeout=60.0), model_loader=model_loader, stream=None, timeout=600.0)
    results = []
    for edit in edits:
        spec = spec_from_mapping(edit.spec, out_root, f"edit_{edit.index:02d}")
        report = runner.run(spec, validate_local(spec), out_root / spec.name)
        result = EditResult(edit, report, server_rss(pid))
        results.append(result)
        if on_edit is not None:
            on_edit(result)
    return results


def free_and_count(client: ComfyClient, deadline_s: float = 60.0) -> dict[str, Any]:
    """``POST /free`` (unload models, free memory), then the live pack objects once ComfyUI's worker
    has acted on it.

    ComfyUI's worker thread takes the flags between prompts (it is woken at once when idle), so the
    probe is read again until the counted kinds reach zero or ``deadline_s`` passes; the last answer
    is returned either way (a caller asserts on it).
    """
    client.post_json("/free", {"unload_models": True, "free_memory": True})
    deadline = time.monotonic() + deadline_s
    while True:
        live = client.get_json("/oir_test/live_objects")
        if not any(live["counts"].values()) or time.monotonic() > deadline:
            return live
        time.sleep(0.5)
