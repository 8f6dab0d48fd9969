"""Host-agnostic description of one OIR edit: edit pairs with their masks, and image checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from .errors import OIRInputError
from .masks import ASPECT_TOLERANCE, as_single_mask, check_mask_aspect
from .prompts import EditPairText, check_target


@dataclass(frozen=True)
class EditPair:
    """One object to edit: its region and its text (ARCHITECTURE.md §4, ``(source, target, M_k)``).

    Attributes:
        mask: ``[H, W]`` float 0..1 at any resolution; the region of the *source* object.
        text: the source/target phrases (and an optional explicit guided prompt).
    """

    mask: Tensor
    text: EditPairText


def make_edit_pair(
    mask: Tensor, source: str, target: str, occurrence: int = 0, guided_prompt: str = "", index: int = 1
) -> EditPair:
    """Validate one edit pair's inputs (``occurrence`` 0: the only one; ``guided_prompt`` "": build it)."""
    label = f"mask of edit pair {index}"
    single = as_single_mask(mask, label)
    if float(single.max()) <= 0.5:
        raise OIRInputError(
            label,
            f"{single.shape[1]}x{single.shape[0]} mask with no value above 0.5",
            "the mask is empty",
            "paint the object's region (LoadImage without an alpha channel gives an empty mask)",
        )
    if not source or not source.strip():
        raise OIRInputError(f"source (edit pair {index})", source, "is empty", "type the source phrase")
    check_target(source, target, f"target (edit pair {index})")
    if occurrence < 0:
        raise OIRInputError("occurrence", occurrence, "must not be negative", "use 0 for the only occurrence")
    text = EditPairText(
        source=source.strip(),
        target=target.strip(),
        occurrence=occurrence or None,
        guided_prompt=guided_prompt.strip() or None,
    )
    return EditPair(mask=single.clone(), text=text)


def fit_image(image: Tensor, size_hw: tuple[int, int], input_name: str = "image") -> Tensor:
    """Bring a ``[H, W, 3]`` (or ``[1, H, W, 3]``) image to ``size_hw`` for pixel comparisons.

    VAE encoding crops to a multiple of the VAE scale, so the decoded candidates can be a few pixels
    smaller than the original; any larger difference in aspect ratio means another image.
    """
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise OIRInputError(
                input_name,
                f"batch of {image.shape[0]} images",
                "OIR edits one image at a time",
                "pass one image",
            )
        image = image[0]
    height, width = size_hw
    if abs((image.shape[1] / image.shape[0]) / (width / height) - 1.0) > ASPECT_TOLERANCE:
        raise OIRInputError(
            input_name,
            f"{image.shape[1]}x{image.shape[0]} image",
            f"does not match the {width}x{height} candidates (another image or crop)",
            "connect the image that was VAE-encoded for the inversion",
        )
    if tuple(image.shape[:2]) == (height, width):
        return image.float()
    resized = F.interpolate(
        image.permute(2, 0, 1)[None].float(),
        size=(height, width),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )
    return resized[0].permute(1, 2, 0).clamp(0, 1)


def pair_texts(pairs: Sequence[EditPair]) -> list[EditPairText]:
    """The text half of every pair, in order."""
    return [pair.text for pair in pairs]


def check_masks_match(pairs: Sequence[EditPair], size_hw: tuple[int, int]) -> None:
    """Refuse masks painted on another image (aspect ratio differs from ``size_hw``)."""
    for index, pair in enumerate(pairs, start=1):
        check_mask_aspect(pair.mask, size_hw, f"mask of edit pair {index}")


def check_cfg(cfg: float) -> float:
    """CFG must be positive (1.0 = no guidance); 0 or less would invert or erase the prompt's effect."""
    if not cfg > 0:
        raise OIRInputError("cfg", cfg, "must be positive", "use the paper's 7.5, or 1.0 for no guidance")
    return float(cfg)


def check_choice(value: str, options: Sequence[str], input_name: str) -> str:
    """Refuse a value outside a combo's options (ComfyUI does not check them for API clients)."""
    if value not in options:
        raise OIRInputError(input_name, value, "is not one of the options", f"use one of {list(options)}")
    return value
