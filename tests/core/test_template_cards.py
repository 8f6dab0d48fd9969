"""The template cards (``example_workflows/<template>.jpg``): one per template, each its own picture
and badge, and the shipped files are what ``example_inputs/build_example_inputs.py`` draws now."""

from __future__ import annotations

import importlib.util
from itertools import combinations
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from sample_files import TEMPLATES

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "example_workflows"
MAX_BYTES = 64 * 1024
"""A card is a small picture (the frontend shows it at about 300 px)."""


@pytest.fixture(scope="module")
def builder() -> ModuleType:
    """The card script, imported from its file (a developer tool, not a package module)."""
    spec = importlib.util.spec_from_file_location(
        "build_example_inputs", REPO / "example_inputs" / "build_example_inputs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def shipped(template: str) -> np.ndarray:
    return pixels(Image.open(CARDS / f"{template}.jpg"))


def test_every_template_has_a_card_and_a_badge_of_its_own(builder: ModuleType) -> None:
    assert sorted(p.stem for p in CARDS.glob("*.jpg")) == sorted(TEMPLATES)
    assert set(builder.TEMPLATES) == set(builder.BADGES) == set(TEMPLATES)
    badges = list(builder.BADGES.values())
    assert all(badge.strip() for badge in badges) and len(set(badges)) == len(badges)
    for template in TEMPLATES:
        assert (CARDS / f"{template}.jpg").stat().st_size <= MAX_BYTES, template


def test_no_two_cards_show_the_same_picture() -> None:
    """Compared at one size, every pair of cards differs clearly (not only by JPEG noise)."""
    side = (192, 192)
    small = {t: pixels(Image.open(CARDS / f"{t}.jpg").resize(side, Image.BILINEAR)) for t in TEMPLATES}
    for a, b in combinations(TEMPLATES, 2):
        assert np.abs(small[a] - small[b]).mean() > 6.0, f"{a} and {b} look alike"


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_shipped_card_is_the_script_s_drawing_with_its_badge(builder: ModuleType, template: str) -> None:
    """The shipped JPEG matches the card the script draws (JPEG noise only), and where the badge
    sits it differs from the same card drawn without one."""
    drawn, bare, ship = (
        pixels(builder.card(template)),
        pixels(builder.card(template, badge=False)),
        shipped(template),
    )
    assert ship.shape == drawn.shape
    assert np.abs(ship - drawn).mean() < 6.0  # quality 85 on text and edges
    changed = np.abs(drawn - bare).max(axis=2) > 0
    assert changed.any(), "the badge draws nothing"
    rows, columns = np.nonzero(changed)
    assert rows.max() < 60 and columns.min() < 20  # the top-left corner
    assert np.abs(ship - bare)[changed].mean() > 10 * np.abs(ship - drawn)[changed].mean()
