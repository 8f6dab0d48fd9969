"""Checks an edit spec without a server (files, image and mask sizes, prompt phrases, step settings)
and prepares its uploads.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oir_core.errors import OIRInputError
from oir_core.options import (
    ASPECT_TOLERANCE,
    LATENT_FACTOR,
    MIN_IMAGE_SIDE,
)
from oir_core.prompts import EditPairText, PromptPlan, build_prompts
from oir_core.regions import exclusive_regions
from oir_core.steps import (
    coarse_steps,
    most_levels,
    parse_step_overrides,
    parse_steps,
    validate_background,
    validate_reassembly,
)

from . import pictures
from .specs import EditSpec, SpecError

UPLOAD_SUBFOLDER = "oir-edit"
"""Subfolder of ComfyUI's input folder that ``oir-edit`` uploads into."""


@dataclass(frozen=True)
class LocalCheck:
    """What local validation learnt about a spec, and the files to upload.

    Attributes:
        image_size: the source image's ``(width, height)`` as the user gave it (and as
            ``edited.png`` is written).
        mask_sizes: each mask file's ``(width, height)``.
        plan: the prompts.
        uploads: per local file, the 8-bit PNG ComfyUI gets (``oir_cli/pictures.py``'s rules) and its
            content-addressed upload name.
        padded_size: the size ComfyUI works at: ``image_size`` rounded up to multiples of 8.
        mask_rules: per mask, ``"alpha"`` or ``"luminance"``: what it was read by.
        reassembly: ``(R, r)`` with auto (``-1``) resolved on :func:`~oir_core.steps.most_levels`
            (the server's own values go into ``report.json``).
    """

    image_size: tuple[int, int]
    mask_sizes: tuple[tuple[int, int], ...]
    plan: PromptPlan
    uploads: Mapping[Path, tuple[str, bytes]] = field(default_factory=dict)
    padded_size: tuple[int, int] = (0, 0)
    mask_rules: tuple[str, ...] = ()
    reassembly: tuple[int, int] = (0, 0)

    def upload_value(self, path: Path) -> str:
        """The LoadImage value of an uploaded file."""
        return f"{UPLOAD_SUBFOLDER}/{self.uploads[path][0]}"


def _open_image(path: Path, what: str) -> Any:
    try:
        return pictures.open_file(path, what)
    except pictures.PictureError as error:
        raise SpecError(str(error)) from None


def validate_local(spec: EditSpec) -> LocalCheck:
    """Check everything that needs no server; raise :class:`SpecError` with one line otherwise.

    Files exist and are images at least ``MIN_IMAGE_SIDE`` pixels on each side; each mask has the
    image's aspect ratio (masks may have another resolution: the nodes resize them), is read by the
    documented rule and is not empty; every source phrase occurs in the prompt (the same matching as
    the Guided Prompt Builder node); targets are given and differ from their sources; step settings
    are consistent. Also prepares the uploads: every file as the 8-bit PNG a person would see,
    padded to a multiple of 8 (``oir_cli/pictures.py``).
    """
    where = spec.name
    image = _open_image(spec.image, f"{where}: image")
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise SpecError(
            f"{where}: image {spec.image} is {width}x{height}: OIR needs at least {MIN_IMAGE_SIDE} "
            f"pixels on each side ({MIN_IMAGE_SIDE // LATENT_FACTOR} latent cells); "
            "use a larger image (SD models work best from 512 on)"
        )
    padded = pictures.padded_size(width, height)
    prepared: dict[Path, bytes] = {
        spec.image: pictures.png_bytes(pictures.pad_picture(pictures.as_seen(image), padded))
    }
    mask_sizes, rules, grid_masks = [], [], []
    for index, edit in enumerate(spec.edits, 1):
        label = f"{where}: mask of edit {index} ({edit.source} -> {edit.target})"
        mask = _open_image(edit.mask, label)
        mask_w, mask_h = mask.size
        if abs((mask_w / mask_h) / (width / height) - 1.0) > ASPECT_TOLERANCE:
            raise SpecError(
                f"{label} is {mask_w}x{mask_h} but the image is {width}x{height}: the aspect ratios differ "
                "(a mask of another image?)"
            )
        try:
            reading = pictures.read_mask(mask, f"{label} {edit.mask}")
        except pictures.PictureError as error:
            raise SpecError(str(error)) from None
        on_grid = pictures.mask_on_grid(reading.values, (width, height), padded)
        grid_masks.append(on_grid)
        prepared[edit.mask] = pictures.png_bytes(on_grid)
        mask_sizes.append((mask_w, mask_h))
        rules.append(reading.rule)
    for index, net in enumerate(spec.controlnets, 1):
        if net.hint is not None:
            hint = pictures.as_seen(_open_image(net.hint, f"{where}: hint of controlnet {index}"))
            if hint.size == (width, height):
                hint = pictures.pad_picture(hint, padded)
            prepared[net.hint] = pictures.png_bytes(hint)
    try:
        plan = build_prompts(
            spec.prompt,
            [EditPairText(e.source, e.target, e.occurrence, e.guided_prompt) for e in spec.edits],
            spec.target_prompt,
        )
    except OIRInputError as error:
        raise SpecError(f"{where}: {_cli_words(str(error))}") from None
    reassembly = _check_numbers(spec)
    _check_masks_on_grid(spec, grid_masks)
    uploads = {path: (upload_name(path, data), data) for path, data in prepared.items()}
    return LocalCheck((width, height), tuple(mask_sizes), plan, uploads, padded, tuple(rules), reassembly)


def _check_masks_on_grid(spec: EditSpec, masks: Sequence[Any]) -> None:
    """The masks at the latent grid, by the rule the reassembly uses (``oir_core.regions``, NumPy).

    ``masks``: the ``L`` masks as uploaded (on the padded image's pixel grid). Empty cells, a pair
    wholly covered by a later one, overlaps under ``overlap: error``: refused here, before anything
    is queued (the search node would refuse them only after the inversion).
    """
    arrays = [np.asarray(mask, dtype=np.float32) / 255.0 for mask in masks]
    width, height = masks[0].size
    grid = (height // LATENT_FACTOR, width // LATENT_FACTOR)
    names = [
        f"mask of edit {k} ({e.source} -> {e.target}, {e.mask.name})" for k, e in enumerate(spec.edits, 1)
    ]
    try:
        exclusive_regions(arrays, grid, spec.overlap, names, spec.mask_geometry)
    except OIRInputError as error:
        raise SpecError(f"{spec.name}: {_cli_words(str(error))}") from None


def _cli_words(message: str) -> str:
    """An engine error, with its 'OIR: input 'pairs[0].source'' wording mapped to edit numbers."""
    message = re.sub(r"pairs\[(\d+)\]\.(\w+)", lambda m: f"edit {int(m.group(1)) + 1} {m.group(2)}", message)
    return message.removeprefix("OIR: ")


def _check_numbers(spec: EditSpec) -> tuple[int, int]:
    """Step settings, with the engine's own validators (``oir_core.steps``, plain Python).

    Everything that counts the inversion's levels (candidates, ``custom_steps``, ``step_override``,
    ``R`` and ``r``) is checked against :func:`~oir_core.steps.most_levels` of the typed ``steps``:
    the server counts the levels its scheduler really made and refuses what is beyond them, so no
    value the server accepts is refused here (``ddim_uniform`` makes 7 levels of ``steps`` = 6).
    Returns the reassembly's ``(R, r)`` with auto (-1) resolved on those levels.
    """
    where = spec.name
    if spec.steps < 2:
        raise SpecError(f"{where}: steps = {spec.steps}: OIR needs at least 2 steps (the paper uses 50)")
    if not (math.isfinite(spec.cfg) and spec.cfg > 0):
        raise SpecError(f"{where}: cfg = {spec.cfg}: must be positive and finite (the paper uses 7.5)")
    if not 0.0 <= spec.editing_weight <= 1.0:
        raise SpecError(f"{where}: editing_weight = {spec.editing_weight}: must lie in 0..1")
    if spec.max_batch < 0:
        raise SpecError(f"{where}: max_batch = {spec.max_batch}: must be 0 (auto) or more")
    levels = most_levels(spec.steps, spec.scheduler)
    try:
        reassembly = validate_reassembly(levels, spec.reassembly_step, spec.reinversion_steps)
        validate_background(spec.background, spec.feather)
        if spec.search_mode == "custom":
            parse_steps(spec.custom_steps or f"1-{levels}", levels)
        if spec.search_mode == "coarse_to_fine":
            coarse_steps(levels, spec.coarse_stride)
            if spec.refine_radius < 0:
                raise OIRInputError("refine_radius", spec.refine_radius, "must not be negative", "use e.g. 2")
        parse_step_overrides(spec.step_override, len(spec.edits), levels)
    except OIRInputError as error:
        raise SpecError(f"{where}: {_cli_words(str(error))}") from None
    return reassembly


def upload_name(path: Path, data: bytes) -> str:
    """Content-addressed name for uploading ``data`` read from ``path`` (``<sha1 prefix>_<stem>.png``).

    The hash covers the prepared bytes, so cases never clash and an unchanged file is not sent twice.
    """
    digest = hashlib.sha1(data).hexdigest()[:12]
    return f"{digest}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(path).stem)}.png"
