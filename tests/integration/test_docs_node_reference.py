"""``docs/nodes.md`` is what the nodes define (inputs, defaults, limits, tooltips)."""

from __future__ import annotations

from types import ModuleType

from node_reference import NODES_PAGE, render


def test_docs_node_reference_matches_define_schema(pack: ModuleType) -> None:
    assert NODES_PAGE.read_text(encoding="utf-8") == render(pack), (
        "docs/nodes.md is out of date: regenerate it with "
        "`COMFYUI_PATH=… python tests/integration/node_reference.py --write`"
    )
