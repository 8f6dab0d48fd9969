"""Background fidelity of an edit: PSNR, MSE, SSIM of source vs edit outside every mask (scikit-image).

The definitions are PIE-Bench's (Ju et al., *PnP Inversion*, ICLR 2024; its
``evaluation/matrics_calculator.py``): both pictures as floats in 0..1, multiplied by the
background mask (1 outside every edited object, 0 inside), then compared over the whole picture
(data range 1). So masked pixels count as equal, and the numbers are those PIE-Bench's table
reports (it prints MSE x 10^4 and SSIM x 10^2). SSIM is Wang et al.'s (Gaussian window, sigma 1.5,
population covariances), which is what PIE-Bench's torchmetrics computes.

The masks are read by ``oir-edit``'s own rule (``oir_cli/pictures.py``: alpha when the file has
transparency, else luminance, above one half is the object) and resized to the picture by nearest
neighbour, as they were uploaded. scikit-image is the optional ``report`` extra
(``pip install 'oir-edit[report]'``), imported only here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import pictures
from .specs import SpecError

__all__ = ["BackgroundFidelity", "background_fidelity", "background_mask", "read_object_mask"]

SSIM_SIGMA = 1.5
"""Gaussian window of SSIM (Wang et al. 2004; torchmetrics' default, which PIE-Bench uses)."""


@dataclass(frozen=True)
class BackgroundFidelity:
    """Source vs edit outside every mask (PIE-Bench's definitions, module docstring)."""

    psnr: float
    """dB, data range 1; ``inf`` when the background is unchanged."""
    mse: float
    """Mean squared error over every pixel and channel, values in 0..1 (masked pixels count as 0)."""
    ssim: float
    """Mean SSIM over the picture and its channels."""
    background_fraction: float
    """Share of the picture outside every mask (what the numbers describe)."""


def read_object_mask(path: Path, size: tuple[int, int], label: str) -> np.ndarray:
    """``[H, W]`` bool: the object of a mask file, on a ``size = (width, height)`` picture.

    Raises:
        SpecError: the file is missing, unreadable or empty by ``oir-edit``'s mask rule.
    """
    try:
        reading = pictures.read_mask(pictures.open_file(path, label), f"{label} {path}")
    except pictures.PictureError as error:
        raise SpecError(str(error)) from None
    on_picture = pictures.mask_on_grid(reading.values, size, size)  # nearest resize, no padding
    return np.asarray(on_picture) > pictures.MASK_THRESHOLD


def background_mask(objects: Sequence[np.ndarray]) -> np.ndarray:
    """``[H, W]`` float32: 1 outside every object mask (``[H, W]`` bool each), 0 inside any."""
    inside = np.zeros(objects[0].shape, dtype=bool)
    for mask in objects:
        inside |= mask
    return (~inside).astype(np.float32)


def background_fidelity(source: np.ndarray, edited: np.ndarray, background: np.ndarray) -> BackgroundFidelity:
    """PSNR, MSE and SSIM of ``edited`` against ``source`` on ``background``.

    Args:
        source, edited: ``[H, W, 3]`` uint8 pictures of the same size.
        background: ``[H, W]`` float 0..1, 1 where the pixel is background (:func:`background_mask`).

    Raises:
        SpecError: sizes differ, or scikit-image is not installed.
    """
    try:
        from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity
    except ImportError:
        raise SpecError(
            "oir-edit report needs scikit-image for PSNR/SSIM/MSE: pip install 'oir-edit[report]'"
        ) from None
    if source.shape != edited.shape or source.shape[:2] != background.shape:
        raise SpecError(
            f"source {source.shape[1]}x{source.shape[0]}, edit {edited.shape[1]}x{edited.shape[0]} and "
            f"masks {background.shape[1]}x{background.shape[0]} differ in size: not an edit of this source"
        )
    weight = background[..., None]
    reference = source.astype(np.float32) / 255.0 * weight
    result = edited.astype(np.float32) / 255.0 * weight
    mse = float(mean_squared_error(reference, result))
    psnr = math.inf if mse == 0.0 else float(peak_signal_noise_ratio(reference, result, data_range=1.0))
    ssim = float(
        structural_similarity(
            reference,
            result,
            data_range=1.0,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
        )
    )
    return BackgroundFidelity(psnr, mse, ssim, float(background.mean()))
