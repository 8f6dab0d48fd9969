"""Static figures for headless runs and SaveImage: the candidate grid and the score plot.

Pure PIL + torch; images are ComfyUI IMAGE layout ``[B, H, W, 3]`` float 0..1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .candidates import CandidateSet

HIGHLIGHT = (255, 196, 0)
EDITING_COLOR = (66, 135, 245)
FIDELITY_COLOR = (46, 204, 113)
COMBINED_COLOR = (235, 64, 52)
BACKGROUND = (24, 24, 28)
INK = (230, 230, 230)
GRID_INK = (70, 70, 78)


def _to_pil(image: Tensor) -> Image.Image:
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array)


def _to_tensor(image: Image.Image) -> Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def grid_geometry(
    count: int, height: int, width: int, columns: int | None = None, cell: int = 128, titled: bool = False
) -> dict[str, int]:
    """Layout of :func:`candidate_grid`: columns, rows, thumbnail size, label bar height and the
    height of the title bar above the first row (0 without a title), in pixels.

    The frontend uses the same numbers to crop one candidate's thumbnail out of the grid image.
    """
    columns = columns or max(1, math.ceil(math.sqrt(count)))
    scale = cell / max(height, width)
    return {
        "count": count,
        "columns": columns,
        "rows": max(1, math.ceil(count / columns)),
        "thumb_width": max(1, round(width * scale)),
        "thumb_height": max(1, round(height * scale)),
        "bar": max(14, cell // 8),
        "header": max(14, cell // 8) if titled else 0,
    }


def candidate_grid(
    images: Tensor,
    labels: Sequence[str],
    highlight: Sequence[int] = (),
    columns: int | None = None,
    cell: int = 128,
    title: str | None = None,
) -> Tensor:
    """Tile candidates into one labelled image.

    Args:
        images: ``[N, H, W, 3]`` candidates.
        labels: ``N`` captions (e.g. ``"t=23"``), drawn on a bar under each thumbnail.
        highlight: indices framed in :data:`HIGHLIGHT` (the chosen candidate).
        columns: grid width in cells (default ``ceil(sqrt(N))``).
        cell: thumbnail size of the longer image side in pixels.
        title: a line on a bar above the grid (which pair it is), ``None`` for none.

    Returns:
        ``[1, header + rows * (h + bar), columns * w, 3]`` float 0..1 (see :func:`grid_geometry`).
    """
    count, height, width = images.shape[:3]
    layout = grid_geometry(count, height, width, columns, cell, titled=title is not None)
    columns, thumb_w, thumb_h, bar = (
        layout["columns"],
        layout["thumb_width"],
        layout["thumb_height"],
        layout["bar"],
    )
    header = layout["header"]
    canvas = Image.new("RGB", (columns * thumb_w, header + layout["rows"] * (thumb_h + bar)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(bar - 4)
    if title is not None:
        draw.text((3, 1), title, fill=INK, font=font)
    chosen = set(highlight)
    for index in range(count):
        x = (index % columns) * thumb_w
        y = header + (index // columns) * (thumb_h + bar)
        canvas.paste(_to_pil(images[index]).resize((thumb_w, thumb_h), Image.BILINEAR), (x, y))
        draw.text((x + 3, y + thumb_h + 1), labels[index], fill=INK, font=font)
        if index in chosen:
            border = max(2, cell // 40)
            draw.rectangle((x, y, x + thumb_w - 1, y + thumb_h + bar - 1), outline=HIGHLIGHT, width=border)
    return _to_tensor(canvas)


def plot_x(step: int, first: int, last: int, left: int, right: int) -> int:
    """Pixel column of ``step`` on a plot spanning ``first..last`` between ``left`` and ``right``."""
    if last == first:
        return (left + right) // 2
    return round(left + (step - first) * (right - left) / (last - first))


def score_plot(
    steps: Sequence[int],
    editing: Sequence[float],
    fidelity: Sequence[float],
    combined: Sequence[float],
    chosen_step: int,
    title: str = "",
    width: int = 640,
    height: int = 320,
) -> Tensor:
    """Plot normalised editing, fidelity and combined scores against the inversion step.

    The chosen step gets a vertical marker. Scores are expected in 0..1 (min-max normalised,
    ARCHITECTURE.md §4.4).

    Returns:
        ``[1, height, width, 3]`` float 0..1.
    """
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    left, right, top, bottom = 40, width - 12, 28, height - 28
    first, last = min(steps), max(steps)
    for fraction in (0.0, 0.5, 1.0):
        y = round(bottom - fraction * (bottom - top))
        draw.line((left, y, right, y), fill=GRID_INK)
        draw.text((6, y - 6), f"{fraction:.1f}", fill=INK, font=font)
    marker = plot_x(chosen_step, first, last, left, right)
    draw.line((marker, top, marker, bottom), fill=HIGHLIGHT, width=2)
    for values, color in ((editing, EDITING_COLOR), (fidelity, FIDELITY_COLOR), (combined, COMBINED_COLOR)):
        points = [
            (plot_x(s, first, last, left, right), round(bottom - float(v) * (bottom - top)))
            for s, v in zip(steps, values)
        ]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=color)
    draw.text((left, 6), f"{title}  chosen t={chosen_step}", fill=INK, font=font)
    draw.text((left, bottom + 8), f"step {first}", fill=INK, font=font)
    draw.text((right - 60, bottom + 8), f"step {last}", fill=INK, font=font)
    legend_x = width - 250
    for offset, (name, color) in enumerate(
        (("editing", EDITING_COLOR), ("fidelity", FIDELITY_COLOR), ("combined", COMBINED_COLOR))
    ):
        x = legend_x + offset * 80
        draw.line((x, 12, x + 14, 12), fill=color, width=3)
        draw.text((x + 18, 6), name, fill=INK, font=font)
    return _to_tensor(canvas)


def pair_titles(pairs: Sequence[Any]) -> list[str]:
    """``"pair k: source -> target"`` for each edit pair (anything with ``.text.source/.target``)."""
    return [f"pair {k}: {p.text.source} -> {p.text.target}" for k, p in enumerate(pairs, 1)]


def stack_images(images: Sequence[Tensor]) -> Tensor:
    """Pad ``[1, h_i, w_i, 3]`` images to a common size and stack into ``[N, H, W, 3]``."""
    height = max(int(i.shape[1]) for i in images)
    width = max(int(i.shape[2]) for i in images)
    out = torch.zeros(len(images), height, width, 3)
    for index, image in enumerate(images):
        out[index, : image.shape[1], : image.shape[2]] = image[0]
    return out


def pair_candidate_grids(
    candidates: CandidateSet,
    images: Tensor,
    highlight: dict[int, int] | None = None,
    titles: Sequence[str] | None = None,
) -> tuple[Tensor, list[dict[str, Any]]]:
    """One labelled grid per pair, padded to a common size, and each grid's layout for the frontend.

    Candidates are labelled ``t=N``, approximate ones (coarse-to-fine's sub-schedule) ``t=N~``.

    Args:
        candidates: the candidate set; images: ``[N, H, W, 3]`` its decoded candidates, same order.
        highlight: pair -> step to frame (the chosen step), when scores exist.
        titles: per pair, the line above its grid (e.g. ``"pair 1: dog -> cat"``).

    Returns:
        ``([K, H', W', 3] grids, K layouts)``; a layout is :func:`grid_geometry` plus ``pair`` and
        the ``steps`` in grid order.
    """
    grids, layouts = [], []
    for pair in range(candidates.pair_count):
        index = candidates.indices(pair)
        steps = [candidates.steps[i] for i in index]
        chosen = (highlight or {}).get(pair)
        marked = [steps.index(chosen)] if chosen in steps else []
        pair_images = images[index]
        labels = [f"t={candidates.steps[i]}" + ("" if candidates.is_exact(i) else "~") for i in index]
        title = None if titles is None else titles[pair]
        grids.append(candidate_grid(pair_images, labels, highlight=marked, title=title))
        geometry = grid_geometry(len(index), *pair_images.shape[1:3], titled=title is not None)
        layouts.append({"pair": pair, "steps": steps, **geometry})
    return stack_images(grids), layouts
