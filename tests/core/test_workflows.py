"""Example workflows (ComfyUI UI format) and their API-format twins agree, without ComfyUI.

``example_workflows/<name>.json`` is what ComfyUI lists as a template and the frontend loads; its
twin ``oir_core/workflows/<name>.api.json`` is what the server tests queue and ``oir-edit`` fills
(ComfyUI's template route only globs ``<pack>/example_workflows/*.json``, so the twins, shipped as
package data, are never listed as templates).

:data:`NODE_SCHEMAS` snapshots each node's sockets, widget order and outputs (from the nodes'
``define_schema`` and ComfyUI's core node definitions); the integration test
``tests/integration/test_server.py`` checks the snapshot against a live server's ``/object_info``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "oir_core" / "workflows"
WORKFLOWS = ("oir_two_object_edit", "oir_single_object_search", "oir_lora_controlnet_edit")

UI_ONLY_NODES = frozenset({"Note", "MarkdownNote"})
"""Frontend-only node types: they exist in the UI format and vanish in the API format."""

NODE_SCHEMAS: dict[str, dict[str, Any]] = {
    # type: sockets (name, type, optional) in input order; widgets in UI order; output types.
    "CheckpointLoaderSimple": {"sockets": [], "widgets": ["ckpt_name"], "outputs": ["MODEL", "CLIP", "VAE"]},
    "LoadImage": {"sockets": [], "widgets": ["image", "upload"], "outputs": ["IMAGE", "MASK"]},
    "LoadImageMask": {"sockets": [], "widgets": ["image", "channel", "upload"], "outputs": ["MASK"]},
    "VAEEncode": {
        "sockets": [("pixels", "IMAGE", False), ("vae", "VAE", False)],
        "widgets": [],
        "outputs": ["LATENT"],
    },
    "VAEDecode": {
        "sockets": [("samples", "LATENT", False), ("vae", "VAE", False)],
        "widgets": [],
        "outputs": ["IMAGE"],
    },
    "SaveImage": {"sockets": [("images", "IMAGE", False)], "widgets": ["filename_prefix"], "outputs": []},
    "PreviewImage": {"sockets": [("images", "IMAGE", False)], "widgets": [], "outputs": []},
    "LoraLoader": {
        "sockets": [("model", "MODEL", False), ("clip", "CLIP", False)],
        "widgets": ["lora_name", "strength_model", "strength_clip"],
        "outputs": ["MODEL", "CLIP"],
    },
    "ControlNetLoader": {"sockets": [], "widgets": ["control_net_name"], "outputs": ["CONTROL_NET"]},
    "ControlNetApplyAdvanced": {
        "sockets": [
            ("positive", "CONDITIONING", False),
            ("negative", "CONDITIONING", False),
            ("control_net", "CONTROL_NET", False),
            ("image", "IMAGE", False),
            ("vae", "VAE", True),
        ],
        "widgets": ["strength", "start_percent", "end_percent"],
        "outputs": ["CONDITIONING", "CONDITIONING"],
    },
    "OIREditPair": {
        "sockets": [("mask", "MASK", False), ("edit_pairs", "OIR_EDIT_PAIRS", True)],
        "widgets": ["source", "target", "occurrence", "guided_prompt"],
        "outputs": ["OIR_EDIT_PAIRS"],
    },
    "OIRGuidedPromptBuilder": {
        "sockets": [("clip", "CLIP", False), ("edit_pairs", "OIR_EDIT_PAIRS", False)],
        "widgets": ["original_prompt", "target_prompt"],
        "outputs": ["CONDITIONING", "CONDITIONING", "OIR_EDIT", "STRING"],
    },
    "OIRDDIMInversion": {
        "sockets": [
            ("model", "MODEL", False),
            ("latent", "LATENT", False),
            ("original", "CONDITIONING", False),
        ],
        "widgets": ["steps", "scheduler", "convention"],
        "outputs": ["OIR_TRAJECTORY", "LATENT"],
    },
    "OIRLoadCLIPScorer": {
        "sockets": [],
        "widgets": ["clip_name", "backend", "device", "precision"],
        "outputs": ["OIR_SCORER"],
    },
    "OIRParallelStepSearch": {
        "sockets": [
            ("model", "MODEL", False),
            ("trajectory", "OIR_TRAJECTORY", False),
            ("oir_edit", "OIR_EDIT", False),
            ("original", "CONDITIONING", False),
            ("vae", "VAE", False),
            ("negative", "CONDITIONING", True),
            ("scorer", "OIR_SCORER", True),
            ("image", "IMAGE", True),
        ],
        "widgets": ["cfg", "search_mode", "custom_steps", "coarse_stride", "refine_radius", "max_batch"],
        "outputs": ["OIR_CANDIDATES", "IMAGE"],
    },
    "OIRMaskMetricScorer": {
        "sockets": [
            ("candidates", "OIR_CANDIDATES", False),
            ("scorer", "OIR_SCORER", False),
            ("image", "IMAGE", False),
        ],
        "widgets": ["editing_weight", "attention_mode", "fidelity_space", "step_override"],
        "outputs": ["OIR_STEPS", "IMAGE", "IMAGE", "STRING"],
    },
    "OIRObjectReassembly": {
        "sockets": [
            ("model", "MODEL", False),
            ("trajectory", "OIR_TRAJECTORY", False),
            ("oir_edit", "OIR_EDIT", False),
            ("chosen_steps", "OIR_STEPS", False),
            ("original", "CONDITIONING", False),
            ("target", "CONDITIONING", False),
            ("negative", "CONDITIONING", True),
        ],
        "widgets": ["cfg", "reassembly_step", "reinversion_steps", "overlap", "max_batch"],
        "outputs": ["LATENT"],
    },
}

UI_ONLY_WIDGETS: dict[str, frozenset[str]] = {
    "LoadImage": frozenset({"upload"}),
    "LoadImageMask": frozenset({"upload"}),
}
"""Widgets the frontend adds (the image-upload button): saved in widgets_values, absent from the API."""


def api_widgets(node_type: str) -> list[str]:
    """The widgets of ``node_type`` that are API inputs, in order."""
    hidden = UI_ONLY_WIDGETS.get(node_type, frozenset())
    return [w for w in NODE_SCHEMAS[node_type]["widgets"] if w not in hidden]


def load_ui(name: str) -> dict[str, Any]:
    return json.loads((UI_DIR / f"{name}.json").read_text(encoding="utf-8"))


def load_api(name: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"{name}.api.json").read_text(encoding="utf-8"))


def test_exactly_the_three_example_workflows_are_listed() -> None:
    # ComfyUI's /workflow_templates globs <pack>/example_workflows/*.json: UI-format files only.
    assert sorted(p.stem for p in UI_DIR.glob("*.json")) == sorted(WORKFLOWS)
    assert sorted(p.name.removesuffix(".api.json") for p in API_DIR.glob("*.api.json")) == sorted(WORKFLOWS)
    for name in WORKFLOWS:
        assert "nodes" in load_ui(name) and "links" in load_ui(name)  # no API-format file among templates


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_is_structurally_valid(name: str) -> None:
    ui = load_ui(name)
    assert ui["version"] == 0.4
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]), "node ids must be unique"
    links = {link[0]: link for link in ui["links"]}
    assert len(links) == len(ui["links"]), "link ids must be unique"
    assert ui["last_node_id"] >= max(nodes) and ui["last_link_id"] >= max(links)
    for link_id, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        assert src in nodes and dst in nodes, f"link {link_id} has a missing endpoint"
        source, target = nodes[src], nodes[dst]
        assert link_id in source["outputs"][src_slot]["links"], f"link {link_id} missing on its source"
        assert target["inputs"][dst_slot]["link"] == link_id, f"link {link_id} missing on its target"
        assert source["outputs"][src_slot]["type"] == link_type == target["inputs"][dst_slot]["type"]
        assert NODE_SCHEMAS[source["type"]]["outputs"][src_slot] == link_type
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY_NODES:
            assert not node["inputs"] and not node["outputs"]
            continue
        schema = NODE_SCHEMAS[node["type"]]
        assert node["properties"]["Node name for S&R"] == node["type"]
        assert len(node["widgets_values"]) == len(schema["widgets"]), f"{node['type']} widgets_values"
        assert [(i["name"], i["type"]) for i in node["inputs"]] == [(n, t) for n, t, _ in schema["sockets"]]
        for socket, (socket_name, _, optional) in zip(node["inputs"], schema["sockets"]):
            assert optional or socket["link"] is not None, f"{node['type']}.{socket_name} is not connected"
            assert socket["link"] is None or socket["link"] in links
        assert [o["type"] for o in node["outputs"]] == schema["outputs"]
        for slot, output in enumerate(node["outputs"]):
            assert output["slot_index"] == slot
            for link_id in output["links"]:
                assert links[link_id][1:3] == [node["id"], slot]


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_twin_agrees_with_ui_workflow(name: str) -> None:
    ui, api = load_ui(name), load_api(name)
    ui_nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] not in UI_ONLY_NODES}
    assert set(api) == set(ui_nodes)
    links = {link[0]: link for link in ui["links"]}
    for node_id, node in ui_nodes.items():
        twin = api[node_id]
        assert twin["class_type"] == node["type"]
        expected: dict[str, Any] = {}
        hidden = UI_ONLY_WIDGETS.get(node["type"], frozenset())
        for widget, value in zip(NODE_SCHEMAS[node["type"]]["widgets"], node["widgets_values"]):
            if widget not in hidden:
                expected[widget] = value
        for socket in node["inputs"]:
            if socket["link"] is not None:
                _, src, src_slot, _, _, _ = links[socket["link"]]
                expected[socket["name"]] = [str(src), src_slot]
        assert twin["inputs"] == expected, f"node {node_id} ({node['type']})"
        assert twin["_meta"]["title"] == node.get("title", twin["_meta"]["title"])


@pytest.mark.parametrize("name", WORKFLOWS)
def test_api_twin_links_are_valid_on_their_own(name: str) -> None:
    api = load_api(name)
    for node_id, node in api.items():
        schema = NODE_SCHEMAS[node["class_type"]]
        sockets = {n: (t, optional) for n, t, optional in schema["sockets"]}
        assert set(node["inputs"]) <= set(sockets) | set(api_widgets(node["class_type"]))
        for widget in api_widgets(node["class_type"]):
            assert widget in node["inputs"], f"node {node_id} lacks widget {widget}"
        for socket, (socket_type, optional) in sockets.items():
            value = node["inputs"].get(socket)
            if value is None:
                assert optional, f"node {node_id} ({node['class_type']}) lacks required input {socket}"
                continue
            source_id, slot = value
            assert source_id in api, f"node {node_id}.{socket} links to missing node {source_id}"
            assert NODE_SCHEMAS[api[source_id]["class_type"]]["outputs"][slot] == socket_type


def test_the_workflows_wire_what_their_names_promise() -> None:
    def classes(name: str) -> list[str]:
        return sorted(n["class_type"] for n in load_api(name).values())

    two = load_api("oir_two_object_edit")
    pairs = {
        n["inputs"]["source"]: n["inputs"]["target"] for n in two.values() if n["class_type"] == "OIREditPair"
    }
    assert pairs == {"dog": "cat", "gift": "cake"}
    builder = next(n for n in two.values() if n["class_type"] == "OIRGuidedPromptBuilder")
    assert builder["inputs"]["original_prompt"] == "a dog sitting next to a gift"
    previews = [n["inputs"]["images"] for n in two.values() if n["class_type"] == "PreviewImage"]
    metric = next(i for i, n in two.items() if n["class_type"] == "OIRMaskMetricScorer")
    assert sorted(previews) == [[metric, 1], [metric, 2]]  # score plot and candidate grid

    single = load_api("oir_single_object_search")
    assert classes("oir_single_object_search").count("OIREditPair") == 1
    assert "OIRObjectReassembly" in classes("oir_single_object_search")
    search = next(i for i, n in single.items() if n["class_type"] == "OIRParallelStepSearch")
    assert [search, 1] in [
        n["inputs"]["images"] for n in single.values() if n["class_type"] == "PreviewImage"
    ]

    lora = load_api("oir_lora_controlnet_edit")
    apply_id = next(i for i, n in lora.items() if n["class_type"] == "ControlNetApplyAdvanced")
    builder_id = next(i for i, n in lora.items() if n["class_type"] == "OIRGuidedPromptBuilder")
    lora_id = next(i for i, n in lora.items() if n["class_type"] == "LoraLoader")
    assert lora[apply_id]["inputs"]["positive"] == [builder_id, 1]  # target
    assert lora[apply_id]["inputs"]["negative"] == [builder_id, 0]  # original
    for node in lora.values():
        for name, value in node["inputs"].items():
            if name in ("original", "target") and isinstance(value, list):
                assert value == [apply_id, 0 if name == "target" else 1], (
                    "OIR nodes must get the controlled prompts"
                )
            if name == "model" and node["class_type"].startswith("OIR"):
                assert value == [lora_id, 0]
    assert lora[builder_id]["inputs"]["clip"] == [lora_id, 1]
