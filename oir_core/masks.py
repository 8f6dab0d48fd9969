"""Mask utilities: any ComfyUI MASK at any resolution to the image, latent or patch grid.

ARCHITECTURE.md §4.6: a MASK is ``[B,H,W]`` or ``[H,W]`` with values in 0..1, at any size (ComfyUI's
LoadImage gives a 64x64 zero mask for images without alpha). Masks are resized explicitly and
binarised at 0.5, like the official code (nearest resize, no dilation, no blur).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import OIRInputError
from .options import ASPECT_TOLERANCE
from .regions import exclusive_regions

OverlapRule = Literal["later_wins", "error"]

MaskGeometry = Literal["official", "centered"]
"""How a mask is read and brought to a coarser grid (the latent grid here; CLIP's patch grid in
:mod:`oir_core.clip_scorer`), one of :data:`oir_core.options.MASK_GEOMETRIES`:

- ``official``: the OIR code. Any value >= 1/255 is inside (it reads mask PNGs as
  ``np.where(png >= 1, 1, 0)``), then ``F.interpolate(mode="nearest")``: each cell takes the pixel at
  its top-left corner, > 0.5.
- ``centered``: values > 0.5 are inside, each cell takes the pixel at its centre
  (``nearest-exact``), so the region stays centred on the object at any scale.
"""


def as_mask_batch(mask: Tensor, input_name: str = "mask") -> Tensor:
    """Bring a ComfyUI MASK (``[H,W]`` or ``[B,H,W]``, 0..1, any size) to ``[B,H,W]`` float32.

    Raises:
        OIRInputError: wrong rank, empty spatial size or non-finite values.
    """
    if not isinstance(mask, Tensor) or mask.ndim not in (2, 3) or 0 in mask.shape:
        raise OIRInputError(
            input_name,
            getattr(mask, "shape", mask),
            "must be a mask [H,W] or [B,H,W]",
            "connect a MASK (values 0..1)",
        )
    m = mask.float()
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if not torch.isfinite(m).all():
        raise OIRInputError(
            input_name, tuple(mask.shape), "contains NaN or inf", "use a mask with values 0..1"
        )
    return m


def resize_mask_nearest(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of ``mask: [B,h,w]`` to ``[B,*size]``, values kept (no threshold).

    ``nearest-exact`` samples each output pixel at its *centre*, so the mask stays centred on the
    object at any scale factor (plain ``nearest`` shifts it up-left by up to one source pixel).
    """
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask.unsqueeze(1), size=size, mode="nearest-exact").squeeze(1)


def as_single_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """``[H, W]`` float mask in 0..1 from a ``[H,W]``, ``[1,H,W]`` or ``[1,1,H,W]`` tensor.

    Raises:
        OIRInputError: for a batch of several masks, a wrong rank, or NaN/inf values.
    """
    mask = torch.as_tensor(mask)
    while mask.ndim > 3 and mask.shape[0] == 1:
        mask = mask[0]
    batch = as_mask_batch(mask, name)
    if batch.shape[0] != 1:
        raise OIRInputError(
            name,
            f"batch of {batch.shape[0]} masks",
            "expected one mask [H,W] (a MASK batch of one)",
            "give one mask per edit pair; split batches with a mask-from-batch node",
        )
    return batch[0].clamp(0.0, 1.0)


def check_mask_aspect(mask: Tensor, image_hw: tuple[int, int], name: str = "mask") -> None:
    """Refuse a ``[H, W]`` mask whose aspect ratio differs from the image's (a mask of another image)."""
    mask_h, mask_w = mask.shape[-2:]
    image_h, image_w = image_hw
    mask_ratio = mask_w / mask_h
    image_ratio = image_w / image_h
    if abs(mask_ratio / image_ratio - 1.0) > ASPECT_TOLERANCE:
        raise OIRInputError(
            name,
            f"{mask_w}x{mask_h} mask",
            f"its aspect ratio differs from the {image_w}x{image_h} image",
            "paint or resize the mask on the same image (LoadImage without an alpha channel "
            "gives an empty 64x64 mask)",
        )


def resize_mask(mask: Tensor, size: tuple[int, int], threshold: float | None = 0.5) -> Tensor:
    """Resize a ``[H, W]`` mask to ``size = (h, w)`` with centre-aligned nearest sampling.

    Returns ``[h, w]`` float; binary ``mask > threshold`` unless ``threshold`` is ``None``.
    """
    resized = resize_mask_nearest(mask[None].float(), size)[0]
    if threshold is None:
        return resized
    return (resized > threshold).float()


def official_mask(mask: Tensor) -> Tensor:
    """``[..., h, w]`` -> 0/1: the official code's reading of a mask file (``np.where(png >= 1, 1, 0)``)."""
    return (torch.round(mask.float() * 255.0) >= 1.0).float()


def region_masks(
    masks: Sequence[Tensor],
    grid_hw: tuple[int, int],
    overlap: OverlapRule = "later_wins",
    names: Sequence[str] | None = None,
    geometry: MaskGeometry = "official",
) -> tuple[Tensor, Tensor]:
    """Binary, mutually exclusive region masks on a grid, plus the background (ARCHITECTURE.md §4.5).

    Overlap rule: ``"later_wins"`` gives a pixel claimed by several pairs to the last of them (the
    pair declared later in the chain), so the regions partition the image; ``"error"`` refuses
    overlaps. The background is everything no pair claims: ``M_bg = 1 - union(M_k)``.

    Args:
        masks: ``K`` masks ``[H, W]`` (any resolution, 0..1).
        grid_hw: ``(h, w)`` of the target grid (the latent).
        geometry: how each mask is read and resized (:data:`MaskGeometry`).

    Returns:
        ``([K, h, w], [h, w])`` float 0/1: the pair regions and the background; they sum to 1.

    Raises:
        OIRInputError: a mask is empty on the grid, or masks overlap with ``overlap="error"``.
    """
    labels = list(names) if names is not None else [f"mask of edit pair {k + 1}" for k in range(len(masks))]
    singles = [as_single_mask(mask, label) for label, mask in zip(labels, masks)]
    exclusive = exclusive_regions(
        [m.detach().cpu().numpy() for m in singles], grid_hw, overlap, labels, geometry
    )
    regions = torch.from_numpy(exclusive).to(device=singles[0].device, dtype=torch.float32)
    return regions, 1.0 - regions.sum(0)
