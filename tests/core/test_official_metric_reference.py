"""The ``official`` search metric reproduces the OIR code's S_e, S_ne and chosen steps, and OIR Edit
Region Score's engine function gives the official S_e of a finished image.

The reference (``official_metric.py``) follows ``utils/optimal_candidate_selection.py`` and
``models/mask_clip.py`` of the official code, built from the libraries, never from this pack's
functions; each score min-max normalised, summed, first argmax.

Masks have edges off the patch grid, images are square and not; an 8-bit candidate reaches the
pack as ``k / 255`` floats, the way ComfyUI hands images over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_clip
import torch
from official_metric import reference_region_score, reference_scores

from oir_core.clip_backends import load_clip
from oir_core.clip_scorer import ClipScorer
from oir_core.metric import score_table
from oir_core.search import edited_region_scores

IMAGE = 32
PATCH = 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tiny_clip.make_transformers_clip(
        tmp_path_factory.mktemp("official_metric") / "clip", image_size=IMAGE, patch_size=PATCH, seed=4
    )
    return path


def reference_choice(editing: list[float], fidelity: list[float]) -> int:
    """``optimal_candidate_selection``: min-max each list, sum, first maximum; step = index + 1."""

    def normalise(values: list[float]) -> list[float]:
        low, high = min(values), max(values)
        return [(v - low) / (high - low) for v in values]

    metric = [a + b for a, b in zip(normalise(fidelity), normalise(editing))]
    return metric.index(max(metric)) + 1


def off_grid_mask(height: int, width: int, seed: int) -> np.ndarray:
    """An 8-bit mask with edges off the patch grid and a soft rim (values 1..254 on the edge)."""
    rng = np.random.default_rng(seed)
    top, left = int(rng.integers(1, height // 3)), int(rng.integers(1, width // 3))
    bottom, right = (
        top + int(rng.integers(height // 3, height // 2)),
        left + int(rng.integers(width // 3, width // 2)),
    )
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = 255
    mask[top - 1, left:right] = 3  # a faint antialiased rim still counts as inside (>= 1)
    return mask


@pytest.mark.parametrize(("height", "width", "seed"), [(64, 64, 0), (48, 80, 1), (80, 48, 2), (56, 56, 3)])
def test_official_metric_equals_the_official_code(folder: Path, height: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    original = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    # Candidates drift away from the original, as deeper inversion steps do.
    candidates = [
        np.clip(original.astype(np.int16) + rng.integers(-8 * k, 8 * k + 1, original.shape), 0, 255).astype(
            np.uint8
        )
        for k in range(1, 9)
    ]
    mask_png = off_grid_mask(height, width, seed)
    editing, fidelity = reference_scores(folder, original, candidates, mask_png, "a cat")

    model = load_clip(folder, backend="transformers", device="cpu")
    scorer = ClipScorer(model, attention_mode="official", fidelity_space="official", mask_geometry="official")
    as_float = torch.from_numpy(np.stack(candidates)).float() / 255.0
    ours_e, ours_f = scorer.score(
        as_float,
        torch.from_numpy(original).float() / 255.0,
        torch.from_numpy(mask_png).float() / 255.0,
        "a cat",
    )
    torch.testing.assert_close(
        ours_e.double(), torch.tensor(editing, dtype=torch.float64), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        ours_f.double(), torch.tensor(fidelity, dtype=torch.float64), rtol=1e-5, atol=1e-7
    )
    steps = list(range(1, len(candidates) + 1))
    assert score_table(steps, ours_e, ours_f).chosen_step == reference_choice(editing, fidelity)


def test_centered_geometry_is_a_different_choice(folder: Path) -> None:
    """The pack's own geometry keeps the region on the object; on an off-grid mask it gives other S_e."""
    rng = np.random.default_rng(7)
    original = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    candidates = torch.from_numpy(np.stack([original, 255 - original])).float() / 255.0
    mask = torch.from_numpy(off_grid_mask(48, 80, 1)).float() / 255.0
    model = load_clip(folder, backend="transformers", device="cpu")
    official = ClipScorer(model, mask_geometry="official").editing_scores(candidates, mask, "a cat")
    centered = ClipScorer(model, mask_geometry="centered").editing_scores(candidates, mask, "a cat")
    assert (official - centered).abs().max() > 1e-4


@pytest.mark.parametrize(("height", "width", "seed"), [(64, 64, 5), (48, 80, 6)])
def test_edit_region_score_is_the_official_editing_score_of_the_saved_image(
    folder: Path, height: int, width: int, seed: int
) -> None:
    """OIR Edit Region Score's engine function on a decoded (float32) image, per pair, equals the
    official S_e of the 8-bit picture ComfyUI's SaveImage writes from it
    (``clip(255. * x, 0, 255).astype(uint8)`` on the float32 array)."""
    rng = np.random.default_rng(200 + seed)
    decoded = rng.random((height, width, 3), dtype=np.float32)
    # values on 8-bit levels and just below them, where truncation and rounding part ways
    levels = rng.integers(0, 256, (height, width, 3)).astype(np.float32) / np.float32(255)
    decoded = np.where(rng.random(decoded.shape) < 0.3, levels, decoded)
    decoded = np.where(rng.random(decoded.shape) < 0.1, np.nextafter(levels, np.float32(0)), decoded)
    saved = np.clip(255.0 * decoded, 0, 255).astype(np.uint8)  # what SaveImage writes
    masks = [off_grid_mask(height, width, seed), off_grid_mask(height, width, seed + 10)]
    texts = ["a cat", "a birthday cake"]
    expected = [reference_region_score(folder, saved, mask, text) for mask, text in zip(masks, texts)]

    model = load_clip(folder, backend="transformers", device="cpu")
    scorer = ClipScorer(model, attention_mode="official", fidelity_space="official", mask_geometry="official")
    ours = edited_region_scores(
        scorer,
        torch.from_numpy(decoded)[None],
        [torch.from_numpy(mask).float() / 255.0 for mask in masks],
        texts,
    )
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert abs(ours[0] - ours[1]) > 1e-4  # each pair is scored with its own mask and phrase
