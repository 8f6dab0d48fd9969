"""The latent-grid rule on NumPy (``oir_core/regions.py``) against PyTorch's own ``F.interpolate``.

The engine (``oir_core.masks``) and ``oir-edit`` both use this rule; the reference for which pixel
each grid cell takes is PyTorch's nearest and nearest-exact resampling, not the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oir_core.errors import OIRInputError
from oir_core.regions import exclusive_regions, grid_inside, sample_points

SIZES = [*range(1, 41), 47, 63, 64, 65, 77, 96, 100, 127, 128, 129, 257, 512, 513, 1000, 1024]


@pytest.mark.parametrize("mode, exact", [("nearest", False), ("nearest-exact", True)])
def test_sample_points_pick_the_pixels_f_interpolate_picks(mode: str, exact: bool) -> None:
    mismatched = []
    for size_in in SIZES:
        ramp = torch.arange(size_in, dtype=torch.float64)[None, None, None, :]
        for size_out in sorted({1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 32, 33, 64, 100, 128, size_in * 2, size_in}):
            picked = F.interpolate(ramp, size=(1, size_out), mode=mode)[0, 0, 0].long().numpy()
            if not np.array_equal(sample_points(size_in, size_out, exact), picked):
                mismatched.append((size_in, size_out))
    assert mismatched == []


@pytest.mark.parametrize("geometry", ["official", "centered"])
def test_grid_inside_is_thresholding_then_f_interpolate(geometry: str) -> None:
    generator = torch.Generator().manual_seed(0)
    for height, width, grid in [(48, 64, (6, 8)), (89, 123, (11, 15)), (100, 70, (13, 9)), (8, 8, (8, 8))]:
        mask = torch.rand(height, width, generator=generator)
        mask[mask < 0.3] = 0.0  # zeros, faint values (below 1/255 and above) and strong ones
        mask[(mask > 0.3) & (mask < 0.31)] = 0.002
        if geometry == "official":  # the OIR code: png >= 1, then nearest
            reference = F.interpolate(
                (mask * 255).round().ge(1).double()[None, None], size=grid, mode="nearest"
            )
        else:  # nearest-exact of the soft mask, then > 0.5
            reference = F.interpolate(mask.double()[None, None], size=grid, mode="nearest-exact").gt(0.5)
        assert np.array_equal(grid_inside(mask.numpy(), grid, geometry), reference[0, 0].bool().numpy())


def test_later_pairs_win_and_a_fully_covered_pair_is_refused() -> None:
    left = np.zeros((16, 16), np.float32)
    left[:, :10] = 1.0
    right = np.zeros((16, 16), np.float32)
    right[:, 6:] = 1.0
    regions = exclusive_regions([left, right], (2, 2), "later_wins", ["a", "b"], "official")
    # cells sample pixels (0,0), (0,8), (8,0), (8,8): the shared column 8 goes to the later pair
    assert regions.tolist() == [[[True, False], [True, False]], [[False, True], [False, True]]]
    with pytest.raises(OIRInputError, match="overlap"):
        exclusive_regions([left, right], (2, 2), "error", ["a", "b"], "official")
    with pytest.raises(OIRInputError, match="covered by later pairs"):
        exclusive_regions([right, left + right], (2, 2), "later_wins", ["a", "b"], "official")
    speck = np.zeros((16, 16), np.float32)
    speck[3:5, 3:5] = 1.0  # between the grid's sample points
    with pytest.raises(OIRInputError, match="empty at the 2x2 latent grid"):
        exclusive_regions([speck], (2, 2), "later_wins", ["a"], "official")
