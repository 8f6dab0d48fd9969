"""``docs/nodes.md``, the node reference, rendered from the nodes' own ``define_schema``.

``tests/integration/test_docs_node_reference.py`` fails when ``docs/nodes.md`` differs from this
rendering; to refresh it after changing a node, run

    COMFYUI_PATH=/path/to/ComfyUI python tests/integration/node_reference.py --write
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

HOST_COMBOS = {
    "clip_name": "COMBO (files in models/oir_clip)",
    "scheduler": "COMBO: ComfyUI's schedulers",
}
"""Combos whose options come from the host or the user's files: named, not listed."""

NODES_PAGE = Path(__file__).resolve().parents[2] / "docs" / "nodes.md"
TITLE = "# Node reference\n"
INTRO = (
    "\nEvery input, default, limit and tooltip below is what the nodes' own `define_schema` declares "
    "(generated: `COMFYUI_PATH=/path/to/ComfyUI python tests/integration/node_reference.py --write`). "
    "All nodes live under `OIR/` in the node menu; [how the graph works](graph.md) shows how they connect.\n"
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _type(name: str, spec: list[Any]) -> str:
    kind, options = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    if name in HOST_COMBOS:
        return HOST_COMBOS[name]
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options.get("options", [])
        return "COMBO: " + " / ".join(str(c) for c in choices)
    return str(kind)


def _default(spec: list[Any]) -> str:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" not in options:
        return ""
    shown = repr(options["default"]) if options["default"] == "" else str(options["default"])
    shown = "" if shown == "''" else shown
    if "min" in options and "max" in options:
        shown += f" ({options['min']}..{options['max']})"
    return shown


def render_node(info: dict[str, Any]) -> str:
    lines = [
        f"## {info['display_name']} (`{info['name']}`, {info['category']})",
        "",
        _cell(info["description"]),
        "",
        "| input | type | default | description |",
        "|---|---|---|---|",
    ]
    for group in ("required", "optional"):
        for name in info["input_order"].get(group, []):
            spec = info["input"][group][name]
            label = f"`{name}`" + (" (optional)" if group == "optional" else "")
            tooltip = spec[1].get("tooltip", "") if len(spec) > 1 and isinstance(spec[1], dict) else ""
            lines.append(f"| {label} | {_type(name, spec)} | {_cell(_default(spec))} | {_cell(tooltip)} |")
    lines += ["", "| output | type | description |", "|---|---|---|"]
    for name, kind, tooltip in zip(info["output_name"], info["output"], info.get("output_tooltips", [])):
        lines.append(f"| `{name}` | {kind} | {_cell(tooltip)} |")
    return "\n".join(lines) + "\n"


def render(pack: ModuleType) -> str:
    """The whole page ``docs/nodes.md``: its title, one paragraph, then one section per node."""
    nodes = importlib.import_module(f"{pack.__name__}.nodes")
    parts = [TITLE, INTRO]
    for cls in nodes.NODES:
        parts.append("\n" + render_node(cls.GET_NODE_INFO_V1()))
    return "".join(parts)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import comfy_env

    path = comfy_env.comfyui_path()
    if path is None:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout")
    comfy_env.setup_comfyui(path)
    page = render(comfy_env.load_pack())
    if "--write" in sys.argv[1:]:
        NODES_PAGE.write_text(page, encoding="utf-8")
        print(f"wrote {NODES_PAGE}")
    else:
        sys.stdout.write(page)
