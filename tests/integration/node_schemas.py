"""Node schemas for checking the example workflows, read from the real definitions.

Nothing here is hand-kept: the OIR nodes' schemas come from their own ``define_schema`` (through
ComfyUI's V3-to-``/object_info`` conversion, ``GET_NODE_INFO_V1``), the core nodes' from the live
host's ``/object_info``. Renaming an OIR input therefore breaks the workflow checks, while a core
node gaining an output (``SaveImage`` did in ComfyUI 0.3x) does not.

A schema is ``{"sockets": [(name, type, optional)], "widgets": [name, ...], "outputs": [type, ...]}``
with sockets and widgets in ComfyUI's input order (the order of ``widgets_values`` in UI-format
workflows; the image-upload button ComfyUI adds to LoadImage counts as the widget ``upload``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

UI_ONLY_WIDGETS: dict[str, frozenset[str]] = {
    "LoadImage": frozenset({"upload"}),
    "LoadImageMask": frozenset({"upload"}),
}
"""Widgets the frontend adds (the image-upload button): saved in widgets_values, absent from the API."""

UI_ONLY_NODES = frozenset({"Note", "MarkdownNote"})
"""Frontend-only node types: they exist in the UI format and vanish in the API format."""


def _is_widget(spec: list[Any]) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def schema_from_info(info: dict[str, Any]) -> dict[str, Any]:
    """One node's schema from its ``/object_info`` entry."""
    order = info["input_order"].get("required", []) + info["input_order"].get("optional", [])
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    optional = set(info["input_order"].get("optional", []))
    sockets = [(name, specs[name][0], name in optional) for name in order if not _is_widget(specs[name])]
    widgets = [name for name in order if _is_widget(specs[name])]
    upload = [
        "upload"
        for name in order
        if len(specs[name]) > 1 and isinstance(specs[name][1], dict) and specs[name][1].get("image_upload")
    ]
    return {"sockets": sockets, "widgets": widgets + upload, "outputs": list(info["output"])}


def pack_schemas(pack: ModuleType) -> dict[str, dict[str, Any]]:
    """Every OIR node's schema from its ``define_schema`` (ComfyUI's own conversion)."""
    import importlib

    nodes = importlib.import_module(f"{pack.__name__}.nodes")
    return {cls.define_schema().node_id: schema_from_info(cls.GET_NODE_INFO_V1()) for cls in nodes.NODES}


def host_schemas(object_info: dict[str, Any], node_types: set[str]) -> dict[str, dict[str, Any]]:
    """The schemas of ``node_types`` as the live host serves them."""
    missing = sorted(node_types - set(object_info))
    assert not missing, f"the host does not serve {missing}"
    return {name: schema_from_info(object_info[name]) for name in node_types}


def api_widgets(schema: dict[str, Any], node_type: str) -> list[str]:
    """The widgets of a node that are API inputs, in order."""
    hidden = UI_ONLY_WIDGETS.get(node_type, frozenset())
    return [w for w in schema["widgets"] if w not in hidden]
