"""``oir-edit report`` on batch folders built here: the background metrics by their definitions, and
a 500-case batch whose page stays small and opens offline in Chromium with every picture loaded.

A real batch from a real ComfyUI is reported in ``tests/integration/test_export_report.py``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from report_browser import open_page

from oir_cli import cli
from oir_cli.fidelity import background_fidelity, background_mask, read_object_mask

STEPS = 10


def _photo(seed: int, size: tuple[int, int]) -> np.ndarray:
    """``[H, W, 3]`` uint8: smooth colour gradients with a little noise (compresses like a photo)."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.random(3) * 6.28
    channels = [127 + 100 * np.sin(x / (20 + 9 * c) + y / (31 + 5 * c) + phase[c]) for c in range(3)]
    noisy = np.stack(channels, axis=-1) + rng.normal(0, 4, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def final_clip_scores(name: str) -> list[float]:
    """The two pairs' recorded CLIP scores of a case (distinct per case, so means are checkable)."""
    index = int(name.rsplit("_", 1)[-1]) if name[-1].isdigit() else 0
    return [0.2 + index / 10_000, 0.3 - index / 20_000]


def _report(name: str, image: Path, masks: list[Path], steps: list[int]) -> dict[str, Any]:
    """The fields of an ``oir-edit`` report.json that the report reads (as ``EditRunner.run`` writes them)."""
    pairs = [("dog", "cat"), ("gift", "cake")][: len(masks)]
    grid = list(range(1, STEPS + 1))
    return {
        "oir_edit_report": 1,
        "case": name,
        "status": "ok",
        "spec": {
            "image": str(image),
            "steps": STEPS,
            "edits": [{"source": s, "target": t, "mask": str(m)} for (s, t), m in zip(pairs, masks)],
        },
        "chosen_steps": steps,
        "pairs": [
            {"pair": k + 1, "source": s, "target": t, "chosen_step": step, "final_clip_score": score}
            for k, ((s, t), step, score) in enumerate(zip(pairs, steps, final_clip_scores(name)))
        ],
        "scores": [
            {
                "pair": k,
                "chosen": step,
                "table": {
                    "steps": grid,
                    "editing_norm": [t / STEPS for t in grid],
                    "fidelity_norm": [1 - t / STEPS for t in grid],
                    "combined": [1 - abs(t - step) / STEPS for t in grid],
                },
            }
            for k, step in enumerate(steps)
        ],
        "outputs": {"edited": ["edited.png"], "candidate_grids": [], "score_plots": []},
    }


def _batch(root: Path, cases: int, size: tuple[int, int]) -> tuple[Path, list[list[int]]]:
    """A finished batch folder as ``oir-edit batch`` leaves it, plus one failed case; returns it and
    each case's chosen steps."""
    width, height = size
    inputs, out = root / "inputs", root / "out"
    inputs.mkdir(parents=True)
    chosen, listed = [], []
    for index in range(cases):
        name = f"case_{index:03d}"
        photo = _photo(index, size)
        masks = []
        for k, (top, left) in enumerate([(height // 8, width // 8), (height // 2, width // 2)]):
            mask = np.zeros((height, width), dtype=np.uint8)
            mask[top : top + height // 3, left : left + width // 3] = 255
            masks.append(inputs / f"{name}_mask{k}.png")
            Image.fromarray(mask, mode="L").save(masks[-1])
        Image.fromarray(photo).save(inputs / f"{name}.png")
        edited = photo.copy()
        edited[np.asarray(Image.open(masks[0])) > 0] = (200, 30, 30)  # the edit inside mask 1
        edited[-4:, :] = 255 - edited[-4:, :]  # and a change of the background's last rows
        case_dir = out / name
        case_dir.mkdir(parents=True)
        Image.fromarray(edited).save(case_dir / "edited.png")
        steps = [1 + index % STEPS, 1 + (index * index) % STEPS]  # pair 2: an uneven spread
        (case_dir / "report.json").write_text(json.dumps(_report(name, inputs / f"{name}.png", masks, steps)))
        chosen.append(steps)
        listed.append({"name": name, "status": "done", "out_dir": str(case_dir), "error": None})
    listed.append(
        {"name": "broken", "status": "failed", "out_dir": str(out / "broken"), "error": "'cow' not found"}
    )
    (out / "batch_report.json").write_text(json.dumps({"cases": listed}))
    return out, chosen


def test_background_metrics_follow_their_definitions(tmp_path: Path) -> None:
    """Changes inside the masks do not count; a known change outside gives MSE = its mean square."""
    source = _photo(1, (64, 48))
    inside = np.zeros((48, 64), dtype=bool)
    inside[8:24, 8:40] = True
    background = background_mask([inside, np.zeros_like(inside)])
    edited = source.copy()
    edited[inside] = 0
    unchanged = background_fidelity(source, edited, background)
    assert unchanged.mse == 0.0 and math.isinf(unchanged.psnr) and unchanged.ssim == pytest.approx(1.0)
    assert unchanged.background_fraction == pytest.approx(1 - 16 * 32 / (48 * 64))

    shifted = edited.astype(np.int32)
    shifted[40:, :] = np.clip(shifted[40:, :] + 20, 0, 255)  # 8 rows of the background brighter
    expected_mse = float(np.mean(((shifted - source) / 255.0 * ~inside[..., None]) ** 2))
    changed = background_fidelity(source, shifted.astype(np.uint8), background)
    assert changed.mse == pytest.approx(expected_mse, rel=1e-5)
    assert changed.psnr == pytest.approx(10 * math.log10(1 / expected_mse), rel=1e-5)
    assert 0.0 < changed.ssim < 1.0


def test_masks_are_read_by_the_oir_edit_rule(tmp_path: Path) -> None:
    """An alpha mask at half the picture's resolution: its opaque part, resized by nearest neighbour."""
    alpha = np.zeros((24, 32), dtype=np.uint8)
    alpha[4:12, 8:16] = 255
    rgba = np.zeros((24, 32, 4), dtype=np.uint8)
    rgba[..., 3] = alpha  # black everywhere: only the alpha marks the object
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "mask.png")
    mask = read_object_mask(tmp_path / "mask.png", (64, 48), "mask")
    assert mask.shape == (48, 64) and mask.sum() == 16 * 16 and mask[8:24, 16:32].all()


def test_500_case_report_is_small_and_every_picture_loads_offline(tmp_path: Path) -> None:
    size = (160, 120)  # larger than the 128-pixel thumbnails, small enough to build 500 quickly
    out, chosen = _batch(tmp_path, 500, size)
    assert cli.main(["report", str(out), "-q"]) == 0
    with (out / "metrics.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 501 and rows[-1]["status"] == "failed" and "'cow' not found" in rows[-1]["note"]
    for index, (row, steps) in enumerate(zip(rows, chosen)):
        assert row["chosen_steps"] == f"{steps[0]} {steps[1]}" and row["note"] == ""
        assert float(row["mse"]) > 0 and math.isfinite(float(row["psnr_db"]))
        recorded = final_clip_scores(f"case_{index:03d}")
        assert [float(v) for v in row["final_clip_scores"].split()] == pytest.approx(recorded, rel=1e-7)
        assert float(row["final_clip_score"]) == pytest.approx(sum(recorded) / 2, rel=1e-7)
    assert rows[-1]["final_clip_score"] == rows[-1]["final_clip_scores"] == ""  # the failed case
    full_pictures = sum(p.stat().st_size for p in (tmp_path / "inputs").glob("case_???.png"))
    full_pictures += sum(p.stat().st_size for p in out.glob("*/edited.png"))
    page = out / "report.html"
    assert page.stat().st_size < full_pictures / 4  # thumbnails, not the pictures
    assert page.stat().st_size < 500 * 40_000  # a few MB for 500 cases
    facts = open_page(page)
    assert facts["broken"] == [] and facts["images"] == 500 * 4  # source, 2 masks, edited per case
    assert 0 < facts["largest_side"] <= 128
    assert facts["cases"] == 501 and facts["svgs"] == 500 * 2 + 2  # score curves, one histogram per pair
    assert facts["outside_links"] == [] and facts["requests"] == [] and facts["scripts"] == 0
    text = page.read_text(encoding="utf-8")
    batch_mean = np.mean([np.mean(final_clip_scores(f"case_{i:03d}")) for i in range(500)])
    assert f"<td class='clip-mean'>{batch_mean:.4f}</td>" in text  # the mean of the cases' means
    assert text.count("<span class='clip'>") == 500 * 2  # each pair's score on its case
    histograms = text.split('<svg class="histogram"')[1:]
    for k, histogram in enumerate(histograms):  # each pair's bars count every case's chosen step
        drawn = histogram.split("</svg>")[0]
        for step in range(1, STEPS + 1):
            count = sum(steps[k] == step for steps in chosen)
            assert (f"<title>step {step}: {count} case" in drawn) == (count > 0)


def test_a_report_without_final_clip_scores_is_left_out_of_the_clip_average(tmp_path: Path) -> None:
    """A report.json written before oir-edit scored final images: its CLIP cells stay empty, and the
    batch average is the other case's value alone."""
    out, _ = _batch(tmp_path, 2, (64, 48))
    older = out / "case_001" / "report.json"
    report = json.loads(older.read_text(encoding="utf-8"))
    for pair in report["pairs"]:
        del pair["final_clip_score"]
    older.write_text(json.dumps(report), encoding="utf-8")
    assert cli.main(["report", str(out), "-q"]) == 0
    with (out / "metrics.csv").open(encoding="utf-8") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    assert rows["case_001"]["final_clip_score"] == rows["case_001"]["final_clip_scores"] == ""
    assert rows["case_001"]["psnr_db"] != ""  # the background is still measured
    only = float(np.mean(final_clip_scores("case_000")))
    assert float(rows["case_000"]["final_clip_score"]) == pytest.approx(only, rel=1e-7)
    text = (out / "report.html").read_text(encoding="utf-8")
    assert "<tr><td>1</td>" in text and f"<td class='clip-mean'>{only:.4f}</td>" in text
