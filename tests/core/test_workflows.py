"""Example workflows (ComfyUI UI format) and their API-format twins agree, without ComfyUI.

``example_workflows/<name>.json`` is what ComfyUI lists as a template and the frontend loads; its
twin ``oir_cli/workflows/<name>.api.json`` is what the server tests queue and ``oir-edit`` fills
(ComfyUI's template route only globs ``<pack>/example_workflows/*.json``, so the twins, shipped as
package data, are never listed as templates).

What needs the node definitions (widget order, socket and output types) is checked against the real
definitions in ``tests/integration/test_example_workflows.py``; this file checks what the files
alone can tell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sample_files import TEMPLATES

REPO = Path(__file__).resolve().parents[2]
UI_DIR = REPO / "example_workflows"
API_DIR = REPO / "oir_cli" / "workflows"
WORKFLOWS = TEMPLATES

UI_ONLY_NODES = frozenset({"Note", "MarkdownNote"})
"""Frontend-only node types: they exist in the UI format and vanish in the API format."""


def load_ui(name: str) -> dict[str, Any]:
    return json.loads((UI_DIR / f"{name}.json").read_text(encoding="utf-8"))


def load_api(name: str) -> dict[str, Any]:
    return json.loads((API_DIR / f"{name}.api.json").read_text(encoding="utf-8"))


def test_exactly_the_shipped_example_workflows_are_listed() -> None:
    # ComfyUI's /workflow_templates globs <pack>/example_workflows/*.json: UI-format files only.
    assert sorted(p.stem for p in UI_DIR.glob("*.json")) == sorted(WORKFLOWS)
    assert sorted(p.name.removesuffix(".api.json") for p in API_DIR.glob("*.api.json")) == sorted(WORKFLOWS)
    for name in WORKFLOWS:
        assert "nodes" in load_ui(name) and "links" in load_ui(name)  # no API-format file among templates


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_is_structurally_valid(name: str) -> None:
    """Ids unique, every link present on both ends with one type (node schemas: integration suite)."""
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
    for node in ui["nodes"]:
        if node["type"] in UI_ONLY_NODES:
            assert not node["inputs"] and not node["outputs"]
            continue
        assert node["properties"]["Node name for S&R"] == node["type"]
        for slot, output in enumerate(node["outputs"]):
            assert output["slot_index"] == slot
            for link_id in output["links"] or []:
                assert links[link_id][1:3] == [node["id"], slot]


def test_the_workflows_wire_what_their_names_promise() -> None:
    def classes(name: str) -> list[str]:
        return sorted(n["class_type"] for n in load_api(name).values())

    two = load_api("oir_two_object_edit")
    pairs = {
        n["inputs"]["source"]: n["inputs"]["target"] for n in two.values() if n["class_type"] == "OIREditPair"
    }
    assert pairs == {"cup": "glass", "spoon": "fork"}
    builder = next(n for n in two.values() if n["class_type"] == "OIRGuidedPromptBuilder")
    prompt = builder["inputs"]["original_prompt"]
    assert prompt == "a cup of coffee and a spoon on a saucer on a wooden table"
    # every template's phrases are in its prompt, and its pictures are the shipped sample inputs
    for name in WORKFLOWS:
        graph = load_api(name)
        original = next(n for n in graph.values() if n["class_type"] == "OIRGuidedPromptBuilder")
        for node in graph.values():
            if node["class_type"] == "OIREditPair":
                assert f" {node['inputs']['source']} " in f" {original['inputs']['original_prompt']} "
            if node["class_type"] in ("LoadImage", "LoadImageMask"):
                assert (REPO / "example_inputs" / node["inputs"]["image"]).is_file(), (name, node)
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


def test_the_phrase_mask_template_shows_every_mask_it_finds() -> None:
    """Each OIR Phrase Mask's ``preview`` reaches a Preview Image, in the template and its API twin,
    and the Note says where to look."""
    ui, api = load_ui("oir_phrase_mask_edit"), load_api("oir_phrase_mask_edit")
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    phrase_masks = [n for n in ui["nodes"] if n["type"] == "OIRPhraseMask"]
    assert len(phrase_masks) == 2
    for node in phrase_masks:
        preview = next(o for o in node["outputs"] if o["name"] == "preview")
        targets = [nodes[links[link][3]]["type"] for link in preview["links"] or []]
        assert targets == ["PreviewImage"], node["title"]
        twins = [n for n in api.values() if n["class_type"] == "PreviewImage"]
        assert {"images": [str(node["id"]), 2]} in [n["inputs"] for n in twins]
    note = next(n for n in ui["nodes"] if n["type"] == "Note")["widgets_values"][0]
    assert "Preview Image" in note and "preview output shows it" not in note


@pytest.mark.parametrize("name", WORKFLOWS)
def test_no_two_nodes_of_a_template_overlap_as_saved(name: str) -> None:
    """Saved boxes (title bar of 30 px above ``pos`` included) are disjoint; the browser test checks
    the boxes the frontend draws, after the OIR nodes have grown."""
    title = 30
    boxes = [
        (node["id"], node["pos"][0], node["pos"][1] - title, node["size"][0], node["size"][1] + title)
        for node in load_ui(name)["nodes"]
    ]
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1 :]:
            overlap_x = min(ax + aw, bx + bw) - max(ax, bx)
            overlap_y = min(ay + ah, by + bh) - max(ay, by)
            assert overlap_x <= 0 or overlap_y <= 0, f"nodes {a} and {b} overlap"
