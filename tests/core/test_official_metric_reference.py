"""The ``official`` search metric reproduces the OIR code's S_e, S_ne and chosen steps.

The reference follows ``utils/optimal_candidate_selection.py`` and ``models/mask_clip.py`` of the
official code, built from the libraries, never from this pack's functions:

- images go through CLIP's image processor on 8-bit arrays with PIL (transformers'
  ``PilBackend`` configured as the CLIP processor the official code used: bicubic shortest-side
  resize, centre crop, rescale, normalize);
- the mask file is read as ``np.where(png >= 1, 1, 0)``, resized ``nearest`` straight to the patch
  grid (``F.interpolate``), CLS forced in, and the 0/1 matrix of in-region token pairs is *added* to
  the attention logits of every layer through transformers' own ``CLIPEncoder``;
- S_ne: both images processed, multiplied by ``nearest(1 - M)`` at the processor's size, ``-mse``;
- each score min-max normalised, summed, first argmax.

Masks have edges off the patch grid, images are square and not; an 8-bit candidate reaches the
pack as ``k / 255`` floats, the way ComfyUI hands images over.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_clip
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from oir_core.clip_backends import load_clip
from oir_core.clip_scorer import ClipScorer
from oir_core.metric import score_table

IMAGE = 32
PATCH = 8


class OfficialClipProcessor(PilBackend):
    """CLIP's image processor on PIL (what transformers 4.26's ``CLIPImageProcessor`` was)."""

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": IMAGE}  # noqa: RUF012
    default_to_square = False
    crop_size = {"height": IMAGE, "width": IMAGE}  # noqa: RUF012
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tiny_clip.make_transformers_clip(
        tmp_path_factory.mktemp("official_metric") / "clip", image_size=IMAGE, patch_size=PATCH, seed=4
    )
    return path


def reference_attention_mask(mask: np.ndarray) -> torch.Tensor:
    """``change_mask_to_attention_mask``: nearest to the patch grid, > 0.5, CLS in, pairs both in."""
    grid = IMAGE // PATCH
    m = torch.from_numpy(mask).float()[None, None]
    m = (F.interpolate(m, size=(grid, grid), mode="nearest") > 0.5).squeeze(1).flatten(1)
    m = torch.cat([torch.ones_like(m[:, :1]), m], dim=1)[0]
    length = grid * grid + 1
    attention = torch.zeros(1, 1, length, length)
    for i in range(length):
        for j in range(length):
            if m[i] and m[j]:
                attention[:, :, i, j] = 1
    return attention


def reference_scores(
    folder: Path, original: np.ndarray, candidates: list[np.ndarray], mask_png: np.ndarray, text: str
) -> tuple[list[float], list[float]]:
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    processor = OfficialClipProcessor()
    mask = np.where(mask_png >= 1, 1, 0)
    with torch.no_grad():
        tokens = tokenizer([text], padding=True, return_tensors="pt")
        text_features = model.get_text_features(**tokens)
        text_features = (
            text_features if isinstance(text_features, torch.Tensor) else text_features.pooler_output
        )
        attention = reference_attention_mask(mask)
        vision = model.vision_model
        editing = []
        for candidate in candidates:
            pixels = processor(images=[candidate], return_tensors="pt")["pixel_values"]
            hidden = vision.pre_layrnorm(vision.embeddings(pixels))
            hidden = vision.encoder(inputs_embeds=hidden, attention_mask=attention).last_hidden_state
            features = model.visual_projection(vision.post_layernorm(hidden[:, 0]))
            editing.append(torch.cosine_similarity(text_features, features).item())
        source = processor(images=[original], return_tensors="pt")["pixel_values"]
        keep = torch.from_numpy(1 - mask).float()[None, None].repeat(1, 3, 1, 1)
        keep = F.interpolate(keep, size=source.shape[-2:], mode="nearest") > 0.5
        fidelity = []
        for candidate in candidates:
            pixels = processor(images=[candidate], return_tensors="pt")["pixel_values"]
            fidelity.append(-F.mse_loss(source * keep, pixels * keep).item())
    return editing, fidelity


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
