"""``oir-edit export`` without a server: the job's shape, its pictures and the refusals.

The round trip through a real ComfyUI (the job's pictures uploaded as a worker does, the same
edit as ``oir-edit``) is ``tests/integration/test_export_report.py``.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from oir_cli import cli

PROMPT = "a dog sitting next to a gift"


def _spec(folder: Path, size: tuple[int, int]) -> tuple[Path, np.ndarray, np.ndarray]:
    """A spec file with a random RGB photo and an L mask; returns it, the photo's and the mask's pixels."""
    width, height = size
    photo = (np.random.default_rng(3).random((height, width, 3)) * 255).astype(np.uint8)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[4 : height // 2, 6 : width // 2] = 255
    Image.fromarray(photo).save(folder / "photo.png")
    Image.fromarray(mask, mode="L").save(folder / "dog.png")
    spec = folder / "edit.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "image": "photo.png",
                "prompt": PROMPT,
                "edits": [{"source": "dog", "target": "cat", "mask": "dog.png"}],
            }
        ),
        encoding="utf-8",
    )
    return spec, photo, mask


def _pixels(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def test_job_is_a_worker_request_with_the_pictures_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, photo, mask = _spec(tmp_path, (70, 60))  # not multiples of 8: uploaded padded to 72x64
    job_path = tmp_path / "jobs" / "job.json"
    flags = ["--checkpoint", "sd15.safetensors", "--scorer", "clip-b16", "--steps", "20"]
    code = cli.main(["export", str(spec), "--out", str(job_path), *flags])
    assert code == 0
    assert "crop its top-left 70x60" in capsys.readouterr().err
    job = json.loads(job_path.read_text(encoding="utf-8"))
    assert list(job) == ["input"] and set(job["input"]) == {"workflow", "images"}
    images = {entry["name"]: entry["image"] for entry in job["input"]["images"]}
    assert len(images) == 2 and all("/" not in name for name in images)  # top-level input files
    workflow = job["input"]["workflow"]
    loaded = {
        node["class_type"]: node["inputs"]["image"]
        for node in workflow.values()
        if node["class_type"] in ("LoadImage", "LoadImageMask")
    }
    assert set(loaded.values()) == set(images)
    source = _pixels(images[loaded["LoadImage"]])
    assert source.shape == (64, 72, 3)
    assert np.array_equal(source[:60, :70], photo)  # the photo itself, padded by repeating its edges
    assert np.array_equal(source[60:, :70], np.repeat(photo[-1:], 4, axis=0))
    assert np.array_equal(_pixels(images[loaded["LoadImageMask"]])[:60, :70], mask)
    by_class = {node["class_type"]: node["inputs"] for node in workflow.values()}
    assert by_class["CheckpointLoaderSimple"]["ckpt_name"] == "sd15.safetensors"
    assert by_class["OIRLoadCLIPScorer"]["clip_name"] == "clip-b16"
    assert by_class["OIRDDIMInversion"]["steps"] == 20
    assert by_class["OIREditPair"]["source"] == "dog" and by_class["OIREditPair"]["target"] == "cat"


def test_refusals_are_one_line_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, _, _ = _spec(tmp_path, (64, 64))
    job_path = tmp_path / "job.json"
    assert cli.main(["export", str(spec), "--out", str(job_path), "--checkpoint", "sd15.safetensors"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--scorer" in err and "--server" in err
    assert cli.main(["export", str(spec), "--out", str(job_path), "--scorer", "clip"]) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert cli.main(["export", str(spec), "--out", str(tmp_path), "--checkpoint", "c", "--scorer", "s"]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not job_path.exists()
