"""Picture files that LoadImage alone would misread, for the bad-input catalogue (core and CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TEMPLATES = (
    "oir_two_object_edit",
    "oir_single_object_search",
    "oir_lora_controlnet_edit",
    "oir_sdxl_two_object_edit",
    "oir_flux_two_object_edit",
    "oir_phrase_mask_edit",
)
"""Every shipped template (``example_workflows/<name>.json`` and ``oir_cli/workflows/<name>.api.json``)."""

SIZE = (123, 89)
"""Width and height: neither a multiple of 8 (padded to 128 x 96)."""


def grey16_photo_and_alpha_mask(folder: Path, seed: int) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """A 16-bit grey photo and an RGBA mask whose object is only in its alpha channel.

    Returns:
        ``(photo, mask, grey [89, 123] uint8, object [89, 123] uint8)``: the files and the 8-bit
        values a person sees in them.
    """
    width, height = SIZE
    grey = np.random.default_rng(seed).integers(0, 256, size=(height, width), dtype=np.uint8)
    photo = folder / "grey16.png"
    Image.fromarray(grey.astype(np.uint16) * 257).save(photo)
    shape = np.zeros((height, width), np.uint8)
    shape[8:56, 4:60] = 255
    mask = folder / "alpha_mask.png"
    Image.fromarray(np.dstack([np.full((height, width, 3), 255, np.uint8), shape]), mode="RGBA").save(mask)
    return photo, mask, grey, shape


def oir_bench_multi_object(reassembly_step: int) -> dict[str, object]:
    """The official ``multi_object.yaml`` schema, one case (``multi_object_009``): a template per pair
    (``guided_prompt``), the changes, mask paths relative to the OIR repository, R and r."""
    return {
        "multi_object_009": {
            "image_path": "OIR-Bench/multi_object/dataset/multi_object_009.png",
            "origin_prompt": "a bowl of dumplings on the left and chopsticks on the right",
            "target_prompt": "a bowl of fry rice on the left and knife on the right",
            "guided_prompt": [
                ["a bowl of ", " on the left and chopsticks on the right"],
                ["a bowl of dumplings on the left and ", " on the right"],
            ],
            "origin_change": ["dumplings", "chopsticks"],
            "prompt_change": ["fry rice", "knife"],
            "prompt_change_mask": [
                "OIR-Bench/multi_object/mask/multi_object_009/dumplings.png",
                "OIR-Bench/multi_object/mask/multi_object_009/chopsticks.png",
            ],
            "reassembly_step": reassembly_step,
            "reinversion_steps": reassembly_step,
            "generation_image_path": "multi_object_edit_results/",
        }
    }
