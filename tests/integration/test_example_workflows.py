"""Example workflows (UI format) and their API twins agree with the nodes as ComfyUI defines them.

``example_workflows/<name>.json`` is what ComfyUI lists as a template and the frontend loads; its
twin ``oir_cli/workflows/<name>.api.json`` is what the server tests queue and ``oir-edit`` fills.
The schemas they are checked against are never hand-kept (``node_schemas``): the OIR nodes' come
from ``define_schema``, the core nodes' from the live host, so a renamed OIR input fails here and
a core node that gains an output does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from comfy_server import TestServer, shared_test_server
from node_schemas import UI_ONLY_NODES, UI_ONLY_WIDGETS, api_widgets, host_schemas, pack_schemas
from sample_files import TEMPLATES

REPO = Path(__file__).resolve().parents[2]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "oir_cli" / "workflows"
WORKFLOWS = TEMPLATES


def load_ui(name: str) -> dict[str, Any]:
    return json.loads((UI_DIR / f"{name}.json").read_text(encoding="utf-8"))


def load_api(name: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"{name}.api.json").read_text(encoding="utf-8"))


def used_types() -> set[str]:
    return {
        node["type"]
        for name in WORKFLOWS
        for node in load_ui(name)["nodes"]
        if node["type"] not in UI_ONLY_NODES
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def oir_schemas(pack: ModuleType) -> dict[str, dict[str, Any]]:
    return pack_schemas(pack)


@pytest.fixture(scope="module")
def schemas(server: TestServer, oir_schemas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """OIR nodes from define_schema, every other node the workflows use from the live host."""
    core = used_types() - set(oir_schemas)
    return {**host_schemas(server.object_info(), core), **oir_schemas}


def outputs_agree(schema: dict[str, Any], node_type: str, outputs: list[str]) -> bool:
    """OIR nodes: exactly the defined outputs. Core nodes may have gained outputs after the file was saved."""
    if node_type.startswith("OIR"):
        return outputs == schema["outputs"]
    return outputs == schema["outputs"][: len(outputs)]


def test_live_server_serves_what_define_schema_says(
    server: TestServer, oir_schemas: dict[str, dict[str, Any]]
) -> None:
    live = host_schemas(server.object_info(), set(oir_schemas))
    assert live == oir_schemas


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_matches_the_node_definitions(name: str, schemas: dict[str, dict[str, Any]]) -> None:
    ui = load_ui(name)
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    for link_id, src, src_slot, _dst, _dst_slot, link_type in ui["links"]:
        assert schemas[nodes[src]["type"]]["outputs"][src_slot] == link_type, f"link {link_id}"
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY_NODES:
            continue
        schema = schemas[node["type"]]
        assert len(node["widgets_values"]) == len(schema["widgets"]), f"{node['type']} widgets_values"
        assert [(i["name"], i["type"]) for i in node["inputs"]] == [(n, t) for n, t, _ in schema["sockets"]]
        for socket, (socket_name, _, optional) in zip(node["inputs"], schema["sockets"]):
            assert optional or socket["link"] is not None, f"{node['type']}.{socket_name} is not connected"
            assert socket["link"] is None or socket["link"] in links
        assert outputs_agree(schema, node["type"], [o["type"] for o in node["outputs"]]), node["type"]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_twin_agrees_with_ui_workflow(name: str, schemas: dict[str, dict[str, Any]]) -> None:
    ui, api = load_ui(name), load_api(name)
    ui_nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in UI_ONLY_NODES}
    assert set(api) == set(ui_nodes)
    links = {link[0]: link for link in ui["links"]}
    for node_id, node in ui_nodes.items():
        twin = api[node_id]
        assert twin["class_type"] == node["type"]
        expected: dict[str, Any] = {}
        hidden = UI_ONLY_WIDGETS.get(node["type"], frozenset())
        for widget, value in zip(schemas[node["type"]]["widgets"], node["widgets_values"]):
            if widget not in hidden:
                expected[widget] = value
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, src, src_slot, _, _, _ = links[socket["link"]]
                expected[socket["name"]] = [str(src), src_slot]
        assert twin["inputs"] == expected, f"node {node_id} ({node['type']})"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_twin_links_are_valid_on_their_own(name: str, schemas: dict[str, dict[str, Any]]) -> None:
    api = load_api(name)
    for node_id, node in api.items():
        schema = schemas[node["class_type"]]
        sockets = {n: (t, optional) for n, t, optional in schema["sockets"]}
        widgets = api_widgets(schema, node["class_type"])
        assert set(node["inputs"]) <= set(sockets) | set(widgets)
        for widget in widgets:
            assert widget in node["inputs"], f"node {node_id} lacks widget {widget}"
        for socket, (socket_type, optional) in sockets.items():
            value = node["inputs"].get(socket)
            if value is None:
                assert optional, f"node {node_id} ({node['class_type']}) lacks required input {socket}"
                continue
            source_id, slot = value
            assert source_id in api, f"node {node_id}.{socket} links to missing node {source_id}"
            assert schemas[api[source_id]["class_type"]]["outputs"][slot] == socket_type


def test_a_renamed_oir_input_would_fail_these_checks(schemas: dict[str, dict[str, Any]]) -> None:
    """The guard guards: the same check on a schema with one OIR widget renamed finds the mismatch."""
    renamed = {**schemas, "OIRDDIMInversion": dict(schemas["OIRDDIMInversion"])}
    renamed["OIRDDIMInversion"]["widgets"] = ["num_steps", *schemas["OIRDDIMInversion"]["widgets"][1:]]
    with pytest.raises(AssertionError):
        test_api_twin_agrees_with_ui_workflow("oir_two_object_edit", renamed)
