"""Mask utilities: shapes, resizing to a grid, aspect checks, exclusive regions."""

from __future__ import annotations

import pytest
import torch

from oir_core import OIRInputError, region_masks, resize_mask
from oir_core.masks import as_single_mask, check_mask_aspect


@pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16), (1, 1, 16, 16)])
def test_single_mask_accepts_comfy_shapes(shape: tuple[int, ...]) -> None:
    assert as_single_mask(torch.rand(shape)).shape == (16, 16)


def test_mask_batches_and_bad_values_are_refused() -> None:
    with pytest.raises(OIRInputError, match="one mask"):
        as_single_mask(torch.rand(2, 16, 16), "mask of edit pair 1")
    with pytest.raises(OIRInputError, match="NaN"):
        as_single_mask(torch.full((4, 4), float("nan")))


def test_values_are_clamped_to_unit_range() -> None:
    mask = as_single_mask(torch.tensor([[-1.0, 2.0]]))
    assert mask.tolist() == [[0.0, 1.0]]


def test_resize_is_centre_aligned_nearest_and_binary() -> None:
    mask = torch.zeros(64, 64)
    mask[8:16, 8:16] = 1.0  # exactly latent cell (1, 1) at 8x
    small = resize_mask(mask, (8, 8))
    expected = torch.zeros(8, 8)
    expected[1, 1] = 1.0
    assert torch.equal(small, expected)
    soft = resize_mask(torch.full((4, 4), 0.4), (2, 2), threshold=None)
    assert torch.allclose(soft, torch.full((2, 2), 0.4))
    assert resize_mask(torch.full((4, 4), 0.4), (2, 2)).sum() == 0


def test_upscaling_a_small_mask_keeps_its_region() -> None:
    mask = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    big = resize_mask(mask, (8, 8))
    assert big[:4, :4].eq(1).all() and big.sum() == 16


def test_aspect_mismatch_is_refused_but_resolution_change_is_fine() -> None:
    check_mask_aspect(torch.zeros(256, 384), (512, 768))
    with pytest.raises(OIRInputError, match="aspect ratio"):
        check_mask_aspect(torch.zeros(64, 64), (512, 768), "mask of edit pair 1")


def test_regions_partition_the_grid() -> None:
    first = torch.zeros(32, 32)
    first[:16] = 1
    second = torch.zeros(32, 32)
    second[8:24, 8:24] = 1
    third = torch.zeros(32, 32)
    third[28:, 28:] = 1
    regions, background = region_masks([first, second, third], (8, 8))
    assert regions.shape == (3, 8, 8)
    assert torch.equal(regions.sum(0) + background, torch.ones(8, 8))
    assert regions[1, 2:6, 2:6].eq(1).all()  # the later pair keeps its whole square
    assert regions[0, 2:4, 2:6].eq(0).all()


def test_a_pair_fully_covered_by_a_later_one_is_refused() -> None:
    small = torch.zeros(32, 32)
    small[:8, :8] = 1
    with pytest.raises(OIRInputError, match="claimed by a later pair"):
        region_masks([small, torch.ones(32, 32)], (8, 8))


def test_unknown_overlap_rule_is_refused() -> None:
    with pytest.raises(OIRInputError, match="overlap_rule"):
        region_masks([torch.ones(4, 4)], (2, 2), overlap="blend")  # type: ignore[arg-type]
