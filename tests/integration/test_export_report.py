"""``oir-edit export`` and ``oir-edit report`` against a real ComfyUI with the tiny test models.

- An exported job, handled the way a serverless worker handles it (every picture it carries
  uploaded under its name, the workflow queued on ``/prompt``), gives the same edited pixels and
  the same region scores as ``oir-edit`` on the same spec, and its workflow is the one
  ``oir-edit`` queued.
- ``oir-edit report`` on a real batch folder: ``metrics.csv`` matches the background metrics
  computed here from the files by their definitions, ``report.json``'s ``final_clip_score`` per
  pair is the official S_e of the saved ``edited.png`` recomputed here with transformers' CLIP
  (``official_metric.py``), the page shows it with the batch average, and the page opens offline
  in Chromium with every picture loaded.
"""

from __future__ import annotations

import base64
import copy
import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml
from comfy_server import (
    TEST_LOADER,
    TINY_CHECKPOINT,
    TINY_SCORER,
    TestServer,
    shared_test_server,
    write_test_images,
)
from official_metric import reference_region_score
from PIL import Image
from report_browser import open_page
from test_cli import TINY_FLAGS, oir_edit, server_flags

from oir_cli.filling import nodes_of

PROMPT = "a dog sitting next to a gift"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_images(tmp_path_factory.mktemp("export_images"))


def _picture_names_only(workflow: dict[str, Any]) -> dict[str, Any]:
    """The workflow with each loaded picture named by its file name alone (no upload subfolder)."""
    plain = copy.deepcopy(workflow)
    for node in plain.values():
        if node["class_type"] in ("LoadImage", "LoadImageMask"):
            node["inputs"]["image"] = node["inputs"]["image"].rsplit("/", 1)[-1]
    return plain


def test_exported_job_run_like_a_worker_gives_the_same_edit(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    spec = tmp_path / "edit.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "image": str(images["image"]),
                "prompt": PROMPT,
                "edits": [f"dog=cat:{images['dog']}", f"gift=cake:{images['gift']}"],
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "run"
    run = oir_edit(*server_flags(server), *TINY_FLAGS, "--spec", str(spec), "--out", str(out), "-q")
    assert run.returncode == 0, run.stderr
    job_path = tmp_path / "job.json"
    export = oir_edit(
        "export", str(spec), "--out", str(job_path), "--server", server.url, "--model-loader", TEST_LOADER,
        "--checkpoint", TINY_CHECKPOINT, *TINY_FLAGS,
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    job = json.loads(job_path.read_text(encoding="utf-8"))["input"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # the prompt oir-edit queued (its default scorer from the server included), pictures at the top level
    assert _picture_names_only(report["workflow"]) == job["workflow"]

    for picture in job["images"]:  # what worker-comfyui does with each entry
        answer = requests.post(
            f"{server.url}/upload/image",
            files={"image": (picture["name"], base64.b64decode(picture["image"]), "image/png")},
            data={"overwrite": "true"},
            timeout=60,
        )
        answer.raise_for_status()
        assert answer.json()["name"] == picture["name"] and not answer.json()["subfolder"]
    entry = server.run(job["workflow"])
    assert entry["status"]["status_str"] == "success"
    cached = [
        n for kind, data in entry["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]
    ]
    assert nodes_of(job["workflow"], "OIRObjectReassembly")[0] not in cached  # the edit really ran again
    saved = entry["outputs"][nodes_of(job["workflow"], "SaveImage")[0]]["images"][0]
    worker_pixels = np.asarray(Image.open(io.BytesIO(server.client.view(saved))).convert("RGB"))
    assert np.array_equal(worker_pixels, np.asarray(Image.open(out / "edited.png").convert("RGB")))
    # the job scores its final image in the same run, as oir-edit's prompt did
    (region,) = nodes_of(job["workflow"], "OIREditRegionScore")
    worker_scores = [row["clip_score"] for row in entry["outputs"][region]["oir_region_scores"]]
    assert worker_scores == [pair["final_clip_score"] for pair in report["pairs"]]


def _background_reference(source: Path, masks: list[Path], edited: Path) -> tuple[float, float]:
    """MSE and PSNR outside every mask by PIE-Bench's definition, from the files (white = object)."""
    photo = np.asarray(Image.open(source).convert("RGB"), dtype=np.float64) / 255
    result = np.asarray(Image.open(edited).convert("RGB"), dtype=np.float64) / 255
    inside = np.zeros(photo.shape[:2], dtype=bool)
    for mask in masks:
        inside |= np.asarray(Image.open(mask).convert("L")) > 127
    outside = (~inside)[..., None]
    mse = float(np.mean((photo * outside - result * outside) ** 2))
    return mse, 10 * math.log10(1 / mse)


def test_report_of_a_real_batch(server: TestServer, images: dict[str, Path], tmp_path: Path) -> None:
    batch = tmp_path / "specs"
    batch.mkdir()
    cases = {
        "both": [f"dog=cat:{images['dog']}", f"gift=cake:{images['gift']}"],
        "broken": [f"cow=dog:{images['dog']}"],  # not in the prompt: fails before the server
    }
    for name, edits in cases.items():
        spec = {"image": str(images["image"]), "prompt": PROMPT, "edits": edits}
        (batch / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    out = tmp_path / "results"
    flags = [*server_flags(server), *TINY_FLAGS, "--scorer", TINY_SCORER]
    ran = oir_edit("batch", str(batch), "--out", str(out), *flags, "-q")
    assert ran.returncode == 1, ran.stderr  # the broken case
    reported = oir_edit("report", str(out))
    assert reported.returncode == 0, reported.stderr
    assert "2 cases, 1 measured" in reported.stderr

    with (out / "metrics.csv").open(encoding="utf-8") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    assert rows["broken"]["status"] == "failed" and "'cow'" in rows["broken"]["note"]
    for name, masks in (("both", [images["dog"], images["gift"]]),):
        row = rows[name]
        report = json.loads((out / name / "report.json").read_text(encoding="utf-8"))
        assert row["chosen_steps"] == " ".join(str(s) for s in report["chosen_steps"])
        mse, psnr = _background_reference(images["image"], masks, out / name / "edited.png")
        assert float(row["mse"]) == pytest.approx(mse, rel=1e-4)
        assert float(row["psnr_db"]) == pytest.approx(psnr, rel=1e-4)
        assert 0 < float(row["ssim"]) < 1 and row["note"] == ""
        # the final image's CLIP score per pair, computed by ComfyUI in the edit's own run ...
        recorded = [pair["final_clip_score"] for pair in report["pairs"]]
        region = nodes_of(report["workflow"], "OIREditRegionScore")
        assert len(region) == 1 and len(recorded) == len(masks)
        # ... is the official S_e of the saved picture, recomputed here from the files
        edited = np.asarray(Image.open(out / name / "edited.png").convert("RGB"))
        scorer_folder = server.root / "models" / "oir_clip" / TINY_SCORER
        expected = [
            reference_region_score(scorer_folder, edited, np.asarray(Image.open(mask).convert("L")), target)
            for mask, target in zip(masks, ["cat", "cake"])
        ]
        assert recorded == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert [float(v) for v in row["final_clip_scores"].split()] == pytest.approx(recorded, rel=1e-7)
        assert float(row["final_clip_score"]) == pytest.approx(np.mean(recorded), rel=1e-7)
        page = (out / "report.html").read_text(encoding="utf-8")
        assert f"<td class='clip-mean'>{np.mean(recorded):.4f}</td>" in page  # one case: its mean
        assert [f"<span class='clip'>{v:.4f}</span>" in page for v in recorded] == [True, True]

    facts = open_page(out / "report.html")
    assert facts["broken"] == [] and facts["images"] == 2 + 2  # source, the two masks, edited
    assert facts["svgs"] == 2 + 2  # one score curve per pair, one histogram per pair position
    assert facts["requests"] == [] and facts["outside_links"] == []
