"""Picture files that LoadImage alone would misread, for the bad-input catalogue (core and CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
