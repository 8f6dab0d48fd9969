"""The official OIR code's search scores, rebuilt from the libraries for tests (never from this pack).

It follows ``utils/optimal_candidate_selection.py`` and ``models/mask_clip.py`` of the official code:

- images go through CLIP's image processor on 8-bit arrays with PIL (transformers' ``PilBackend``
  configured as the CLIP processor the official code used: bicubic shortest-side resize, centre
  crop, rescale, normalize);
- the mask file is read as ``np.where(png >= 1, 1, 0)``, resized ``nearest`` straight to the patch
  grid (``F.interpolate``), CLS forced in, and the 0/1 matrix of in-region token pairs is *added* to
  the attention logits of every layer through transformers' own ``CLIPEncoder``;
- S_ne: both images processed, multiplied by ``nearest(1 - M)`` at the processor's size, ``-mse``.

The CLIP's input size and patch size come from the model folder's config. Used by
``test_official_metric_reference.py`` (the search metric) and by the integration tests that check
the final image's region score (``tests/integration/test_export_report.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPModel, CLIPTokenizer
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling


def official_processor(size: int) -> PilBackend:
    """CLIP's image processor on PIL (what transformers 4.26's ``CLIPImageProcessor`` was), ``size`` px."""

    class OfficialClipProcessor(PilBackend):
        resample = PILImageResampling.BICUBIC
        image_mean = OPENAI_CLIP_MEAN
        image_std = OPENAI_CLIP_STD
        default_to_square = False
        do_resize = True
        do_center_crop = True
        do_rescale = True
        do_normalize = True
        do_convert_rgb = True

    OfficialClipProcessor.size = {"shortest_edge": size}
    OfficialClipProcessor.crop_size = {"height": size, "width": size}
    return OfficialClipProcessor()


def reference_attention_mask(mask: np.ndarray, grid: int) -> torch.Tensor:
    """``change_mask_to_attention_mask``: nearest to the patch grid, > 0.5, CLS in, pairs both in."""
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
    """``(S_e, S_ne)`` per 8-bit ``[H, W, 3]`` candidate against ``original``, for ``mask_png`` (8-bit)."""
    model = CLIPModel.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    vision_config = model.config.vision_config
    processor = official_processor(vision_config.image_size)
    mask = np.where(mask_png >= 1, 1, 0)
    with torch.no_grad():
        tokens = tokenizer([text], padding=True, return_tensors="pt")
        text_features = model.get_text_features(**tokens)
        text_features = (
            text_features if isinstance(text_features, torch.Tensor) else text_features.pooler_output
        )
        attention = reference_attention_mask(mask, vision_config.image_size // vision_config.patch_size)
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


def reference_region_score(folder: Path, image: np.ndarray, mask_png: np.ndarray, text: str) -> float:
    """The official S_e of one 8-bit ``[H, W, 3]`` image inside ``mask_png``: the edited region's score."""
    editing, _ = reference_scores(folder, image, [image], mask_png, text)
    return editing[0]
