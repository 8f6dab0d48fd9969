"""Candidate grid and score plot: geometry, highlight and marker placement."""

from __future__ import annotations

import torch

from oir_core.figures import HIGHLIGHT, candidate_grid, plot_x, score_plot


def _is_color(pixel: torch.Tensor, color: tuple[int, int, int]) -> bool:
    return bool(((pixel * 255).round() - torch.tensor(color, dtype=torch.float32)).abs().max() < 1)


def test_grid_geometry_highlight_and_content() -> None:
    images = torch.stack([torch.full((32, 64, 3), i / 5) for i in range(5)])
    grid = candidate_grid(images, [f"t={i}" for i in range(5)], highlight=[4], columns=3, cell=64)
    bar = max(14, 64 // 8)
    assert grid.shape == (1, 2 * (32 + bar), 3 * 64, 3)
    # Cell 4 is row 1, column 1: its top-left corner is framed, cell 0 is not.
    y, x = 32 + bar, 64
    assert _is_color(grid[0, y, x], HIGHLIGHT)
    assert not _is_color(grid[0, 0, 0], HIGHLIGHT)
    # Thumbnails keep their content: cell 2's centre has value 2/5.
    assert abs(grid[0, 16, 2 * 64 + 32, 0].item() - 0.4) < 0.01
    # Labels draw ink onto the bar under each thumbnail.
    assert grid[0, 32 : 32 + bar, 0:64].max() > 0.5


def test_plot_marks_the_chosen_step() -> None:
    steps = list(range(1, 11))
    plot = score_plot(steps, [s / 10 for s in steps], [1 - s / 10 for s in steps], [0.5] * 10, chosen_step=7)
    assert plot.shape == (1, 320, 640, 3)
    column = plot_x(7, 1, 10, 40, 640 - 12)
    assert _is_color(plot[0, 200, column], HIGHLIGHT)
    assert not _is_color(plot[0, 200, plot_x(3, 1, 10, 40, 628)], HIGHLIGHT)


def test_plot_x_endpoints() -> None:
    assert plot_x(1, 1, 50, 40, 628) == 40
    assert plot_x(50, 1, 50, 40, 628) == 628
    assert plot_x(5, 5, 5, 40, 628) == 334
