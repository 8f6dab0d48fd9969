"""Picture and mask files read as a person sees them (``oir_cli/pictures.py``).

Every expected picture is built independently with NumPy from the 8-bit values the file was made
from (or the compositing formula), never by the code under test.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from oir_cli import pictures

RNG = np.random.default_rng(5)
RGB = RNG.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
GREY = RNG.integers(0, 256, size=(24, 40), dtype=np.uint8)


def saved(image: Image.Image, path: Path) -> Image.Image:
    """Write ``image`` (PNG, TIFF for modes PNG cannot hold) and read it back as a file on disk would be."""
    image.save(path)
    return pictures.open_file(path, "test")


def seen(image: Image.Image) -> np.ndarray:
    return np.asarray(pictures.as_seen(image))


def grey_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    # ComfyUI's LoadImage turns this into an all-white picture (convert("RGB") clips I;16).
    sixteen = Image.fromarray(GREY.astype(np.uint16) * 257)
    loaded = saved(sixteen, tmp_path / "grey16.png")
    assert loaded.mode.startswith("I")
    assert np.array_equal(seen(loaded), grey_rgb(GREY))


def test_thirty_two_bit_integers_and_floats(tmp_path: Path) -> None:
    as_8bit = Image.fromarray(GREY.astype(np.int32), mode="I")
    assert np.array_equal(seen(as_8bit), grey_rgb(GREY))  # no value above 255: read as 8-bit
    as_16bit = Image.fromarray(GREY.astype(np.int32) * 257, mode="I")
    assert np.array_equal(seen(as_16bit), grey_rgb(GREY))
    unit = Image.fromarray(GREY.astype(np.float32) / 255.0, mode="F")
    loaded = saved(unit, tmp_path / "unit.tif")
    assert np.array_equal(seen(loaded), grey_rgb(GREY))
    wide = Image.fromarray(GREY.astype(np.float32), mode="F")
    assert np.array_equal(seen(wide), grey_rgb(GREY))


def test_palette_cmyk_and_ycbcr_read_as_their_colours(tmp_path: Path) -> None:
    few = RGB // 64 * 64  # at most 64 colours: a palette holds them exactly
    palette = saved(Image.fromarray(few).quantize(colors=256, dither=Image.Dither.NONE), tmp_path / "p.png")
    assert palette.mode == "P" and np.array_equal(seen(palette), few)
    cmyk = np.concatenate([255 - RGB, np.zeros((*RGB.shape[:2], 1), np.uint8)], axis=2)  # K = 0
    loaded = saved(Image.fromarray(cmyk, mode="CMYK"), tmp_path / "c.tif")
    assert loaded.mode == "CMYK" and np.array_equal(seen(loaded), RGB)


def test_transparency_is_composited_over_white(tmp_path: Path) -> None:
    alpha = RNG.integers(0, 256, size=RGB.shape[:2], dtype=np.uint8)
    rgba = saved(Image.fromarray(np.dstack([RGB, alpha]), mode="RGBA"), tmp_path / "a.png")
    a = alpha[..., None].astype(np.float64) / 255.0
    expected = RGB * a + 255.0 * (1.0 - a)
    assert np.abs(seen(rgba).astype(np.float64) - expected).max() <= 1.0
    la = saved(Image.fromarray(np.dstack([GREY, alpha]), mode="LA"), tmp_path / "la.png")
    expected_la = GREY[..., None] * a + 255.0 * (1.0 - a)
    assert np.abs(seen(la).astype(np.float64) - np.repeat(expected_la, 3, axis=2)).max() <= 1.0


def object_shape() -> np.ndarray:
    shape = np.zeros((24, 40), dtype=np.uint8)
    shape[6:18, 10:30] = 255
    return shape


def test_mask_object_in_the_alpha_channel_only(tmp_path: Path) -> None:
    white = np.full((24, 40, 3), 255, np.uint8)
    mask = saved(Image.fromarray(np.dstack([white, object_shape()]), mode="RGBA"), tmp_path / "m.png")
    reading = pictures.read_mask(mask, "mask")
    assert reading.rule == "alpha" and np.array_equal(reading.values > 127, object_shape() > 127)


def test_mask_without_transparency_is_read_by_luminance(tmp_path: Path) -> None:
    grey = saved(Image.fromarray(object_shape(), mode="L"), tmp_path / "g.png")
    reading = pictures.read_mask(grey, "mask")
    assert reading.rule == "luminance" and reading.pixels == int((object_shape() > 127).sum())
    opaque = np.dstack([grey_rgb(object_shape()), np.full((24, 40), 255, np.uint8)])  # alpha all 255
    reading = pictures.read_mask(Image.fromarray(opaque, mode="RGBA"), "mask")
    assert reading.rule == "luminance" and reading.pixels == int((object_shape() > 127).sum())


def test_whole_image_mask_contradicted_by_another_channel_is_refused() -> None:
    # A green object on white: luminance > 0.5 everywhere (green's luma is 0.587); red, 0 on the
    # object, marks only the background (720 of 960 pixels).
    picture = np.full((24, 40, 3), 255, np.uint8)
    picture[object_shape() > 0] = (0, 255, 0)
    with pytest.raises(
        pictures.PictureError, match=r"whole image by its luminance.*red marks only 720 of 960"
    ):
        pictures.read_mask(Image.fromarray(picture), "mask")
    # Alpha 200 everywhere (non-trivial, so the rule reads it) while the colours hold the object.
    faint = np.dstack([grey_rgb(object_shape()), np.full((24, 40), 200, np.uint8)])
    with pytest.raises(pictures.PictureError, match="whole image by its alpha"):
        pictures.read_mask(Image.fromarray(faint, mode="RGBA"), "mask")
    # A truly whole-image mask (every channel agrees) is taken as it is.
    assert pictures.read_mask(Image.new("L", (40, 24), 255), "mask").pixels == 960


def test_empty_mask_is_refused() -> None:
    with pytest.raises(pictures.PictureError, match="empty by its luminance"):
        pictures.read_mask(Image.new("L", (40, 24), 100), "mask")
    clear = np.dstack([np.full((24, 40, 3), 255, np.uint8), np.zeros((24, 40), np.uint8)])
    with pytest.raises(pictures.PictureError, match="empty by its alpha"):
        pictures.read_mask(Image.fromarray(clear, mode="RGBA"), "mask")


def test_padding_to_the_latent_factor_and_cropping_back() -> None:
    assert pictures.padded_size(131, 97) == (136, 104)
    assert pictures.padded_size(128, 96) == (128, 96)
    picture = Image.fromarray(RGB[:, :37])  # 37 x 24
    padded = np.asarray(pictures.pad_picture(picture, (40, 24)))
    assert padded.shape == (24, 40, 3)
    assert np.array_equal(padded[:, :37], RGB[:, :37])
    assert np.array_equal(padded[:, 37:], np.repeat(RGB[:, 36:37], 3, axis=1))  # the edge repeated
    data = pictures.png_bytes(Image.fromarray(padded))
    cropped = Image.open(io.BytesIO(pictures.crop_png(data, (37, 24))))
    assert np.array_equal(np.asarray(cropped), RGB[:, :37])


def test_mask_brought_to_the_image_grid_then_padded_with_background() -> None:
    double = np.kron(object_shape(), np.ones((2, 2), np.uint8))  # the same mask at twice the size
    grid = np.asarray(pictures.mask_on_grid(double, (40, 24), (48, 32)))
    assert grid.shape == (32, 48)
    assert np.array_equal(grid[:24, :40], object_shape()) and not grid[24:].any() and not grid[:, 40:].any()
