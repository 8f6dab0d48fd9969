"""The chart crops thumbnails out of the grid image with the layout the node sends: check the rule.

``fixtures/grid_crop_cases.json`` holds layouts from :func:`oir_core.figures.grid_geometry` and the
crop rectangle of every candidate; this test renders real grids with
:func:`oir_core.figures.candidate_grid` (one solid colour per candidate) and checks that each
rectangle covers exactly that candidate's thumbnail. ``crop.test.mjs`` checks that
``web/oir_chart_logic.js::cropRect`` gives the same rectangles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from oir_core.figures import candidate_grid, grid_geometry

CASES = json.loads((Path(__file__).parent / "fixtures" / "grid_crop_cases.json").read_text("utf-8"))["cases"]


def _colour(index: int) -> torch.Tensor:
    """A distinct, saturated colour per candidate (far from the grid's background and label ink)."""
    return torch.tensor([(37 * index + 40) % 200 + 30, (91 * index + 80) % 200 + 30, 200.0]) / 255.0


def _case_id(case: dict[str, Any]) -> str:
    return f"{len(case['rects'])}x{case['image_height']}x{case['image_width']}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_crop_rectangles_cover_exactly_one_candidate(case: dict[str, Any]) -> None:
    height, width, layout = case["image_height"], case["image_width"], case["layout"]
    count = len(layout["steps"])
    titled = "title" in case
    geometry = grid_geometry(count, height, width, titled=titled)
    assert {**geometry, "pair": 0, "steps": layout["steps"]} == layout
    images = torch.stack([_colour(i).expand(height, width, 3) for i in range(count)])
    grid = candidate_grid(images, [f"t={s}" for s in layout["steps"]], title=case.get("title"))[0]
    if titled:  # the title bar holds no candidate
        assert not torch.allclose(grid[: layout["header"]], _colour(0).expand(layout["header"], grid.shape[1], 3))
    for index, rect in enumerate(case["rects"]):
        x, y, w, h = rect["x"], rect["y"], rect["width"], rect["height"]
        assert x + w <= grid.shape[1] and y + h <= grid.shape[0]
        region = grid[y : y + h, x : x + w]
        assert torch.allclose(region, _colour(index).expand_as(region), atol=1.5 / 255), rect
        if y + h < grid.shape[0]:  # the row just below is the label bar, not the thumbnail
            assert not torch.allclose(grid[y + h, x : x + w], _colour(index).expand(w, 3), atol=1.5 / 255)
