"""The README's node reference is what the nodes define (inputs, defaults, limits, tooltips)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from node_reference import readme_section, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_node_reference_matches_define_schema(pack: ModuleType) -> None:
    assert readme_section(README) == render(pack), (
        "README.md's node reference is out of date: regenerate it with "
        "`COMFYUI_PATH=… python tests/integration/node_reference.py`"
    )
