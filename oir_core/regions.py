"""The reassembly's regions from masks, on NumPy arrays: one rule for the engine and ``oir-edit``.

ARCHITECTURE.md §4.5-4.6. :func:`oir_core.masks.region_masks` (the nodes) and the ``oir-edit``
client's check before it queues anything both call :func:`exclusive_regions`, so a mask the client
accepts is a mask the search accepts. NumPy only (no torch): the client answers at once.

Bringing a mask to a coarser grid picks one pixel per cell exactly as PyTorch's
``F.interpolate`` does (``mode="nearest"`` for ``official``, ``"nearest-exact"`` for ``centered``;
a test compares with it over many sizes): :func:`sample_points`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import OIRInputError
from .options import MASK_GEOMETRIES, OVERLAP_RULES

__all__ = ["exclusive_regions", "grid_inside", "inside", "sample_points"]


def sample_points(size_in: int, size_out: int, exact: bool) -> np.ndarray:
    """Source index of each of ``size_out`` cells along one axis of ``size_in`` pixels: ``[size_out]``.

    PyTorch's CPU kernels (``UpSample.h``): ``scale = float(size_in) / size_out`` in float32; cell
    ``i`` takes pixel ``floor(i * scale)`` (``nearest``: its top-left corner) or
    ``floor((i + 0.5) * scale)`` (``nearest-exact``: its centre), clipped to the last pixel; equal
    sizes and exact doubling map directly.
    """
    cells = np.arange(size_out)
    if size_out == size_in:
        return cells
    if size_out == 2 * size_in and not exact:
        return cells >> 1
    scale = np.float32(size_in) / np.float32(size_out)
    if exact:
        points = np.floor(((cells + 0.5) * np.float64(scale)).astype(np.float32))
    else:
        points = np.floor(cells.astype(np.float32) * scale)
    return np.minimum(points.astype(np.int64), size_in - 1)


def inside(mask: np.ndarray, geometry: str) -> np.ndarray:
    """Which pixels of a ``[H, W]`` mask (0..1) belong to the object: boolean ``[H, W]``.

    ``official``: the OIR code's reading of a mask file, ``np.where(png >= 1, 1, 0)`` (any value at or
    above 1/255); ``centered``: values above one half.
    """
    if geometry == "official":
        return np.round(mask.astype(np.float32) * 255.0) >= 1.0
    if geometry == "centered":
        return mask > 0.5
    raise OIRInputError("mask_geometry", geometry, "unknown mask geometry", f"use one of {MASK_GEOMETRIES}")


def grid_inside(mask: np.ndarray, grid_hw: tuple[int, int], geometry: str) -> np.ndarray:
    """A ``[H, W]`` mask (0..1, any resolution) as a boolean ``[h, w]`` mask on a grid.

    Reading and sampling commute (sampling only picks pixels), so the object's pixels are found
    first and one pixel per cell is then taken (:func:`sample_points`).
    """
    exact = geometry == "centered"
    rows = sample_points(mask.shape[0], grid_hw[0], exact)
    cols = sample_points(mask.shape[1], grid_hw[1], exact)
    return inside(mask, geometry)[np.ix_(rows, cols)]


def exclusive_regions(
    masks: Sequence[np.ndarray],
    grid_hw: tuple[int, int],
    overlap: str,
    labels: Sequence[str],
    geometry: str,
) -> np.ndarray:
    """Mutually exclusive pair regions on the latent grid: boolean ``[K, h, w]`` (paper §3.3).

    ``later_wins`` gives a cell claimed by several pairs to the last of them, so the regions
    partition the objects; ``error`` refuses overlaps. The background is the cells no pair claims.

    Args:
        masks: ``K`` masks ``[H, W]`` (any resolution, values 0..1).
        grid_hw: ``(h, w)`` of the latent grid.
        overlap: one of :data:`oir_core.options.OVERLAP_RULES`.
        labels: how each mask is named in errors.
        geometry: one of :data:`oir_core.options.MASK_GEOMETRIES`.

    Raises:
        OIRInputError: a mask is empty on the grid, masks overlap under ``error``, or a pair is
            wholly covered by later pairs under ``later_wins``.
    """
    if overlap not in OVERLAP_RULES:
        raise OIRInputError("overlap_rule", overlap, "unknown rule", f"use one of {OVERLAP_RULES}")
    claimed = []
    for label, mask in zip(labels, masks):
        grid = grid_inside(mask, grid_hw, geometry)
        if not grid.any():
            raise OIRInputError(
                label,
                f"mask with {int((mask > 0.5).sum())} pixels above 0.5",
                f"empty at the {grid_hw[1]}x{grid_hw[0]} latent grid",
                "paint the object's region (at least one latent cell, about 8x8 pixels)",
            )
        claimed.append(grid)
    regions = np.stack(claimed)
    if overlap == "error":
        shared = regions.sum(0) > 1
        if shared.any():
            raise OIRInputError(
                "edit_pairs",
                f"{int(shared.sum())} overlapping latent cells",
                "the masks of several edit pairs overlap",
                "make the masks disjoint or use the 'later_wins' overlap rule",
            )
    exclusive = regions.copy()
    for k in range(len(claimed) - 2, -1, -1):
        exclusive[k] = regions[k] & ~regions[k + 1 :].any(0)
        if not exclusive[k].any():
            raise OIRInputError(
                labels[k],
                "mask covered by later pairs",
                "every cell of this pair is claimed by a later pair under 'later_wins'",
                "shrink the later masks or reorder the edit pairs",
            )
    return exclusive
