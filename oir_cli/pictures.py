"""Image and mask files read as a person sees them (torch-free: Pillow and NumPy only).

ComfyUI's ``LoadImage`` converts whatever Pillow opens with ``convert("RGB")``, which clips a 16-bit
grayscale PNG to white and drops transparency; ``LoadImageMask`` reads one channel. ``oir-edit``
therefore reads every file itself, by the rules below, and uploads 8-bit PNGs that ComfyUI reads
exactly (ARCHITECTURE.md §8):

- **Pictures** (the source image, ControlNet hints): 16-bit modes (``I;16*``) are scaled by
  255/65535; ``I`` (32-bit integers) likewise when any value exceeds 255, else taken as 8-bit;
  ``F`` (floats) as 0..1 when no value exceeds 1, else as 0..255 (clipped); palette, CMYK, YCbCr,
  LAB and HSV through Pillow's conversion to RGB; transparency (an alpha channel, or a palette's
  transparent entry) is composited over white, as a viewer on a white page shows it.
- **Masks**: the alpha channel when the file has a non-trivial one (some pixel below 255),
  otherwise the luminance (ITU-R 601 grey, what a person calls white or black). The object is where
  that value is above 127. A mask whose region is the whole image while another of its channels
  (red, luminance, alpha) marks less is refused: it is almost always the object painted into the
  other channel.
- **Sizes** that are not a multiple of the VAE's factor 8 are padded at the right and bottom
  (pictures by repeating the edge pixels, masks with background) and the edited image is cropped
  back to the input's size, so ``edited.png`` has the input's size and ``report.json`` says so.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from oir_core.options import LATENT_FACTOR

MASK_THRESHOLD = 127
"""A mask pixel belongs to the object when its 8-bit value is above this (above one half)."""

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class PictureError(ValueError):
    """A picture or mask file that cannot be read as intended (one line, names the file and the fix)."""


def open_file(path: Path, what: str) -> Image.Image:
    """The file opened with Pillow and turned upright by its EXIF orientation."""
    if not path.is_file():
        raise PictureError(f"{what} {path} {_not_a_file(path)}")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise PictureError(f"{what} {path} is not a readable image ({error})") from None


def _not_a_file(path: Path) -> str:
    """Why ``path`` cannot be read as a picture file, in words (the fix included)."""
    if not path.exists():
        return "does not exist"
    if path.is_dir():
        return "is a directory: give the picture file inside it"
    return "is not a regular file (a device, pipe or socket): give a picture file"


def _grey_as_8bit(image: Image.Image) -> Image.Image:
    """``I;16*``, ``I`` and ``F`` images as 8-bit ``L`` by the module's rules."""
    values = np.asarray(image).astype(np.float64)
    if image.mode in _SIXTEEN_BIT:
        values = values * (255.0 / 65535.0)
    elif image.mode == "I":
        if values.size and values.max() > 255:
            values = values * (255.0 / 65535.0)
    elif image.mode == "F":
        if values.size and np.nanmax(values) <= 1.0:
            values = values * 255.0
    values = np.nan_to_num(values, nan=0.0)
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info)


def as_seen(image: Image.Image) -> Image.Image:
    """The picture a person sees, as 8-bit RGB (transparency over white)."""
    if image.mode in (*_SIXTEEN_BIT, "I", "F"):
        image = _grey_as_8bit(image)
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def alpha_channel(image: Image.Image) -> np.ndarray | None:
    """``[H, W]`` uint8 alpha of a file with transparency, ``None`` without."""
    if not _has_transparency(image):
        return None
    return np.asarray(image.convert("RGBA").getchannel("A"))


def luminance(image: Image.Image) -> np.ndarray:
    """``[H, W]`` uint8 grey of the colours (ignoring transparency), ITU-R 601 weights."""
    if image.mode in (*_SIXTEEN_BIT, "I", "F"):
        return np.asarray(_grey_as_8bit(image))
    return np.asarray(image.convert("RGBA").convert("RGB").convert("L"))


def red_channel(image: Image.Image) -> np.ndarray:
    """``[H, W]`` uint8 red (what ComfyUI's LoadImageMask reads with channel 'red')."""
    if image.mode in (*_SIXTEEN_BIT, "I", "F"):
        return np.asarray(_grey_as_8bit(image))
    return np.asarray(image.convert("RGBA").getchannel("R"))


@dataclass(frozen=True)
class MaskReading:
    """A mask file read by the module's rule."""

    values: np.ndarray
    """``[H, W]`` uint8, the object where above :data:`MASK_THRESHOLD`."""
    rule: str
    """``"alpha"`` or ``"luminance"``."""

    @property
    def pixels(self) -> int:
        return int((self.values > MASK_THRESHOLD).sum())


def read_mask(image: Image.Image, label: str) -> MaskReading:
    """Read a mask by the module's rule; refuse a whole-image reading another channel contradicts.

    Raises:
        PictureError: the mask is empty, or reads as the whole image while another channel
            marks a smaller region.
    """
    alpha = alpha_channel(image)
    grey = luminance(image)
    if alpha is not None and bool((alpha < 255).any()):
        reading = MaskReading(alpha, "alpha")
    else:
        reading = MaskReading(grey, "luminance")
    total = reading.values.size
    if reading.pixels == 0:
        where = "opaque" if reading.rule == "alpha" else "white"
        raise PictureError(
            f"{label} is empty by its {reading.rule}: paint the object {where} (value above one half) on "
            f"{'transparent' if reading.rule == 'alpha' else 'black'}"
        )
    if reading.pixels == total:
        others = {"red": red_channel(image), "luminance": grey}
        if alpha is not None:
            others["alpha"] = alpha
        for name, values in others.items():
            covered = int((values > MASK_THRESHOLD).sum())
            if name != reading.rule and covered < total:
                raise PictureError(
                    f"{label} reads as the whole image by its {reading.rule} (the rule: alpha when the file "
                    f"has transparency, else luminance), but its {name} marks only {covered} of {total} "
                    "pixels: paint the object white on black (or opaque on transparent) and save again"
                )
    return reading


def padded_size(width: int, height: int, factor: int = LATENT_FACTOR) -> tuple[int, int]:
    """``(width, height)`` rounded up to multiples of ``factor``."""
    return (-(-width // factor) * factor, -(-height // factor) * factor)


def pad_picture(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Pad an RGB picture at the right and bottom to ``size`` by repeating its edge pixels."""
    if image.size == size:
        return image
    values = np.asarray(image)
    extra_w, extra_h = size[0] - image.size[0], size[1] - image.size[1]
    return Image.fromarray(np.pad(values, ((0, extra_h), (0, extra_w), (0, 0)), mode="edge"), mode="RGB")


def mask_on_grid(values: np.ndarray, image_size: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """An ``L`` mask on the image's pixel grid (nearest resize when its resolution differs), padded
    at the right and bottom to ``size`` with background (0)."""
    mask = Image.fromarray(values, mode="L")
    if mask.size != image_size:
        mask = mask.resize(image_size, Image.NEAREST)
    extra_w, extra_h = size[0] - image_size[0], size[1] - image_size[1]
    return Image.fromarray(np.pad(np.asarray(mask), ((0, extra_h), (0, extra_w))), mode="L")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def crop_png(data: bytes, size: tuple[int, int]) -> bytes:
    """A PNG cropped to its top-left ``size`` (undoing :func:`pad_picture`); unchanged if already so."""
    with Image.open(io.BytesIO(data)) as opened:
        if opened.size == size:
            return data
        opened.load()
        return png_bytes(opened.crop((0, 0, *size)))
