"""Headless ComfyUI server run (ARCHITECTURE.md §7): the example workflows queued over HTTP.

One server (``comfy_server.shared_test_server``) serves the whole session: the pack linked into
a temporary custom_nodes folder, the test node pack with the tiny checkpoint loader, and real
tiny scorer / LoRA / ControlNet files. Each API twin of ``example_workflows`` is rewritten to the
tiny models (loader, file names, 5 steps, R = r = 2), queued with ``POST /prompt`` and followed
with ``GET /history/<id>``; its images are fetched with ``GET /view``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import comfy_env
import comfy_server
import pytest
from comfy_server import (
    IMAGE_SIZE,
    LINKED_FILE_SCORER,
    LINKED_SCORER,
    SHARED_SCORER,
    TEST_LOADER,
    TINY_CHECKPOINT,
    TINY_CHECKPOINT_FOR,
    TINY_CONTROLNET,
    TINY_IMAGE_SCALE,
    TINY_LORA,
    TINY_SCORER,
    TestServer,
    shared_test_server,
    write_test_images,
)
from PIL import Image
from sample_files import TEMPLATES

from oir_cli.client import OIR_NODE_IDS, HeadlessError
from oir_cli.server import PACK_FOLDER

STEPS = 5
HERE = Path(__file__).resolve().parent
WORKFLOWS = TEMPLATES


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def uploads(server: TestServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test images, uploaded; LoadImage values by role (image, hint, dog, gift)."""
    paths = write_test_images(tmp_path_factory.mktemp("images"))
    return {role: server.upload(path) for role, path in paths.items()}


def api_twin(name: str) -> dict[str, Any]:
    return json.loads(
        (HERE.parents[1] / "oir_cli" / "workflows" / f"{name}.api.json").read_text(encoding="utf-8")
    )


def tiny_workflow(workflow: dict[str, Any], uploads: dict[str, str], prefix: str) -> dict[str, Any]:
    """An API twin pointed at the tiny models and the uploaded test images (a copy)."""
    graph = copy.deepcopy(workflow)
    # the test masks go to the edit pairs in chain order (node ids), whatever the template's objects
    pair_ids = sorted((i for i, n in graph.items() if n["class_type"] == "OIREditPair"), key=int)
    consumers: dict[str, list[str]] = {}
    for node in graph.values():
        for value in node["inputs"].values():
            if isinstance(value, list):
                consumers.setdefault(str(value[0]), []).append(node["class_type"])
    for node_id, node in graph.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            tiny = TINY_CHECKPOINT_FOR.get(inputs["ckpt_name"], TINY_CHECKPOINT)
            node["class_type"], inputs["ckpt_name"] = TEST_LOADER, tiny
        elif kind == "ImageScaleBy":
            inputs["scale_by"] = TINY_IMAGE_SCALE
        elif kind == "LoadImage":
            hint = consumers.get(node_id) == ["ControlNetApplyAdvanced"]
            inputs["image"] = uploads["hint" if hint else "image"]
        elif kind == "LoadImageMask":
            pair = next(i for i, n in graph.items() if n["inputs"].get("mask") == [node_id, 0])
            inputs["image"] = uploads[("dog", "gift")[pair_ids.index(pair)]]
        elif kind == "OIRLoadCLIPScorer":
            inputs.update(clip_name=TINY_SCORER, device="cpu")
        elif kind == "OIRDDIMInversion":
            inputs["steps"] = STEPS
        elif kind == "OIRParallelStepSearch":
            inputs.update(custom_steps=f"1-{STEPS}", coarse_stride=2)
        elif kind == "OIRObjectReassembly":
            inputs.update(reassembly_step=2, reinversion_steps=2)
        elif kind == "LoraLoader":
            inputs["lora_name"] = TINY_LORA
        elif kind == "ControlNetLoader":
            inputs["control_net_name"] = TINY_CONTROLNET
        elif kind == "SaveImage":
            inputs["filename_prefix"] = prefix
    return graph


def assert_succeeded(entry: dict[str, Any]) -> None:
    status = entry["status"]
    errors = [data for kind, data in status["messages"] if kind == "execution_error"]
    assert not errors, errors
    assert status["status_str"] == "success" and status["completed"] is True


def fetch_image(server: TestServer, ref: dict[str, str]) -> Image.Image:
    image = Image.open(io.BytesIO(server.client.view(ref)))
    image.load()
    return image


_RESULTS: dict[str, dict[str, Any]] = {}


def run_example(server: TestServer, uploads: dict[str, str], name: str) -> dict[str, Any]:
    """Queue one rewritten example (once per session) and return its history entry."""
    if name not in _RESULTS:
        graph = tiny_workflow(api_twin(name), uploads, f"oir-tests/{name}")
        _RESULTS[name] = {"graph": graph, "entry": server.run(graph)}
    return _RESULTS[name]


def test_pack_loads_with_all_nodes_and_no_import_failure(server: TestServer, pack: ModuleType) -> None:
    registered = {cls.define_schema().node_id for cls in sys.modules[f"{pack.__name__}.nodes"].NODES}
    # the list oir-edit checks servers against: every node an edit needs (masks from words are optional)
    assert registered - set(OIR_NODE_IDS) == {"OIRPhraseMask"} and set(OIR_NODE_IDS) <= registered
    server.check_loaded()
    info = server.object_info()
    for node in registered:
        assert info[node]["category"].startswith("OIR/")
        assert PACK_FOLDER in info[node]["python_module"]
    log = server.server.log_text()
    assert f"{PACK_FOLDER}" in log and not server.import_problems()


def test_example_workflows_are_served_as_templates(server: TestServer) -> None:
    listing = server.client.get_json("/workflow_templates")
    assert sorted(listing[PACK_FOLDER]) == sorted(WORKFLOWS)
    served = server.client.get_json(f"/api/workflow_templates/{PACK_FOLDER}/oir_two_object_edit.json")
    assert served == json.loads(
        (HERE.parents[1] / "example_workflows" / "oir_two_object_edit.json").read_text()
    )
    for name in WORKFLOWS:  # the template browser's card picture
        thumbnail = server.client.request("GET", f"/api/workflow_templates/{PACK_FOLDER}/{name}.jpg")
        assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"


def test_the_templates_inputs_are_in_comfyuis_input_folder_on_a_fresh_host(server: TestServer) -> None:
    """The pack copies its sample photos, masks and depth map where LoadImage lists them, and every
    picture a template names is among them."""
    shipped = sorted((HERE.parents[1] / "example_inputs").glob("oir_example_*.png"))
    offered = server.object_info()["LoadImage"]["input"]["required"]["image"][0]
    for path in shipped:
        assert path.name in offered
        served = server.client.view({"filename": path.name, "subfolder": "", "type": "input"})
        assert served == path.read_bytes()
    for name in WORKFLOWS:
        named = [
            node["inputs"]["image"]
            for node in api_twin(name).values()
            if node["class_type"] in ("LoadImage", "LoadImageMask")
        ]
        assert named and set(named) <= {p.name for p in shipped}, name


def test_installing_the_inputs_never_overwrites_a_users_file(pack: ModuleType, tmp_path: Path) -> None:
    inputs = comfy_env.import_pack_module("nodes.example_inputs")
    (tmp_path / "oir_example_coffee.png").write_bytes(b"the user's own picture")
    copied = inputs.install_example_inputs(tmp_path)
    assert "oir_example_coffee.png" not in copied and "oir_example_rocket.png" in copied
    assert (tmp_path / "oir_example_coffee.png").read_bytes() == b"the user's own picture"
    assert inputs.install_example_inputs(tmp_path) == []  # nothing missing any more
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    assert inputs.install_example_inputs(blocked) == []  # not a folder: a log line, no exception


def test_the_real_frontend_is_served_by_default(server: TestServer) -> None:
    """Headless-browser tests need the installed comfyui-frontend-package, not an empty root."""
    page = server.client.request("GET", "/").decode("utf-8", "replace")
    assert "<html" in page.lower() and "<script" in page.lower()


def test_two_object_workflow_over_http(server: TestServer, uploads: dict[str, str]) -> None:
    """ARCHITECTURE.md §7's headless run: POST /prompt, poll /history/<id>, fetch the image with /view."""
    result = run_example(server, uploads, "oir_two_object_edit")
    graph, entry = result["graph"], result["entry"]
    assert_succeeded(entry)
    outputs = entry["outputs"]
    save = next(i for i, n in graph.items() if n["class_type"] == "SaveImage")
    (saved,) = outputs[save]["images"]
    assert saved["type"] == "output" and saved["filename"].startswith("oir_two_object_edit")
    image = fetch_image(server, saved)
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"
    metric = next(i for i, n in graph.items() if n["class_type"] == "OIRMaskMetricScorer")
    scores = outputs[metric]["oir_scores"]
    assert [(s["source"], s["target"]) for s in scores] == [("cup", "glass"), ("spoon", "fork")]
    for pair in scores:
        assert 1 <= pair["chosen"] <= STEPS and pair["table"]["steps"] == list(range(1, STEPS + 1))
    previews = [i for i, n in graph.items() if n["class_type"] == "PreviewImage"]
    for preview in previews:
        refs = outputs[preview]["images"]
        assert len(refs) == 2 and all(r["type"] == "temp" for r in refs)  # one grid / plot per pair
        assert fetch_image(server, refs[0]).size[0] > IMAGE_SIZE


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_example_workflow_queues_and_completes(
    server: TestServer, uploads: dict[str, str], name: str
) -> None:
    result = run_example(server, uploads, name)
    assert_succeeded(result["entry"])
    save = next(i for i, n in result["graph"].items() if n["class_type"] == "SaveImage")
    (saved,) = result["entry"]["outputs"][save]["images"]
    assert fetch_image(server, saved).size == (IMAGE_SIZE, IMAGE_SIZE)


def test_lora_and_controlnet_change_the_edit(server: TestServer, uploads: dict[str, str]) -> None:
    """The real LoraLoader/ControlNet nodes act on the OIR nodes: same inputs otherwise, another image."""
    images = {}
    for name in ("oir_two_object_edit", "oir_lora_controlnet_edit"):
        result = run_example(server, uploads, name)
        assert_succeeded(result["entry"])
        save = next(i for i, n in result["graph"].items() if n["class_type"] == "SaveImage")
        images[name] = fetch_image(server, result["entry"]["outputs"][save]["images"][0]).tobytes()
    assert images["oir_two_object_edit"] != images["oir_lora_controlnet_edit"]


def test_bad_workflow_is_refused_with_the_node_named(server: TestServer, uploads: dict[str, str]) -> None:
    graph = tiny_workflow(api_twin("oir_two_object_edit"), uploads, "oir-tests/refused")
    inversion = next(i for i, n in graph.items() if n["class_type"] == "OIRDDIMInversion")
    graph[inversion]["inputs"]["steps"] = 1  # below the node's minimum of 2
    with pytest.raises(HeadlessError, match=rf"node {inversion} \(OIR DDIM Inversion\).*steps"):
        server.client.queue(graph, "oir-integration-tests")


@pytest.mark.parametrize(
    ("node_type", "name", "value"),
    [
        ("OIRParallelStepSearch", "search_mode", "fastest"),
        ("OIRDDIMInversion", "convention", "ddpm"),
        ("OIRObjectReassembly", "mask_geometry", "round"),
        ("OIRLoadCLIPScorer", "attention_mode", "soft"),
    ],
)
def test_unknown_choice_is_refused_when_queued(
    server: TestServer, uploads: dict[str, str], node_type: str, name: str, value: str
) -> None:
    """API clients can send any string; ComfyUI 0.3.64 does not check V3 combo options itself."""
    graph = tiny_workflow(api_twin("oir_two_object_edit"), uploads, "oir-tests/refused")
    node = next(i for i, n in graph.items() if n["class_type"] == node_type)
    graph[node]["inputs"][name] = value
    with pytest.raises(
        HeadlessError, match=rf"node {node} .*input '{name}' = '{value}': is not one of the options"
    ):
        server.client.queue(graph, "oir-integration-tests")


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("reassembly_step", STEPS, rf"must lie in 0..{STEPS - 1} for the inversion's {STEPS} levels"),
        (
            "reinversion_steps",
            STEPS,
            rf"reassembly_step \+ reinversion_steps = {2 + STEPS} exceeds the inversion's {STEPS} levels",
        ),
    ],
)
def test_reassembly_that_cannot_fit_the_inversion_stops_before_any_model_call(
    server: TestServer, uploads: dict[str, str], name: str, value: int, problem: str
) -> None:
    """Lowering the inversion steps below R + r is refused by the inversion, before it samples."""
    graph = tiny_workflow(api_twin("oir_two_object_edit"), uploads, "oir-tests/refused")
    node = next(i for i, n in graph.items() if n["class_type"] == "OIRObjectReassembly")
    inversion = next(i for i, n in graph.items() if n["class_type"] == "OIRDDIMInversion")
    graph[node]["inputs"][name] = value
    graph[inversion]["inputs"]["scheduler"] = "normal"  # a setting not cached from an earlier run
    entry = server.run(graph)
    status = entry["status"]
    assert status["status_str"] == "error"
    ((_, error),) = [m for m in status["messages"] if m[0] == "execution_error"]
    # Raised by the inversion (before its first model call): the search, which needs its trajectory,
    # never starts.
    assert error["node_id"] == inversion and error["node_type"] == "OIRDDIMInversion"
    assert re.search(rf"input '{name}' = {value}: {problem}", error["exception_message"]), error


@pytest.mark.parametrize(
    ("case", "overlap", "problem"),
    [
        ("speck", "later_wins", r"mask of edit pair 2.*empty at the 8x8 latent grid"),
        ("same", "later_wins", r"mask of edit pair 1.*every cell of this pair is claimed by a later pair"),
        ("same", "error", r"the masks of several edit pairs overlap"),
    ],
)
def test_masks_that_fail_on_the_latent_grid_stop_the_search_before_it_samples(
    server: TestServer,
    uploads: dict[str, str],
    tmp_path: Path,
    case: str,
    overlap: str,
    problem: str,
) -> None:
    """The search node has the masks and the latent grid: it refuses with the reassembly's rules."""
    graph = tiny_workflow(api_twin("oir_two_object_edit"), uploads, f"oir-tests/masks-{case}-{overlap}")
    masks = [i for i, n in graph.items() if n["class_type"] == "LoadImageMask"]
    if case == "speck":
        speck = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
        speck.paste(255, (33, 33, 35, 35))  # between the pixels either mask geometry samples
        speck.save(tmp_path / "speck.png")
        graph[masks[1]]["inputs"]["image"] = server.upload(tmp_path / "speck.png")
    else:
        graph[masks[1]]["inputs"]["image"] = graph[masks[0]]["inputs"]["image"]
    reassembly = next(i for i, n in graph.items() if n["class_type"] == "OIRObjectReassembly")
    graph[reassembly]["inputs"]["overlap"] = overlap
    search = next(i for i, n in graph.items() if n["class_type"] == "OIRParallelStepSearch")
    entry = server.run(graph)
    ((_, error),) = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_id"] == search and re.search(problem, error["exception_message"]), error


def test_scorer_lives_under_comfy_model_management_and_free_releases_it(
    server: TestServer, uploads: dict[str, str]
) -> None:
    """The scorer CLIP is a model ComfyUI loads, offloads and frees, not a private cache.

    ``GET /oir_test/memory`` (test node pack) lists ``comfy.model_management.current_loaded_models``
    and counts live scorer CLIPs. After a run the scorer is among ComfyUI's loaded models; "Free model
    and node cache" (``POST /free``) unloads it and drops the last reference to its weights.
    """
    graph = tiny_workflow(api_twin("oir_two_object_edit"), uploads, "oir-tests/free")
    loader = next(i for i, n in graph.items() if n["class_type"] == "OIRLoadCLIPScorer")
    graph[loader]["inputs"]["editing_weight"] = 0.45  # a scorer no earlier test cached: it runs now
    assert_succeeded(server.run(graph))
    before = server.client.get_json("/oir_test/memory")
    assert "ScorerWeights" in before["loaded"] and before["scorer_clips"] >= 1, before
    server.client.post_json("/free", {"unload_models": True, "free_memory": True})
    deadline = time.monotonic() + 60.0
    after = server.client.get_json("/oir_test/memory")
    while ("ScorerWeights" in after["loaded"] or after["scorer_clips"]) and time.monotonic() < deadline:
        time.sleep(0.5)
        after = server.client.get_json("/oir_test/memory")
    assert "ScorerWeights" not in after["loaded"] and after["scorer_clips"] == 0, after


@pytest.mark.parametrize("scorer", [LINKED_SCORER, LINKED_FILE_SCORER, SHARED_SCORER])
def test_every_scorer_the_dropdown_offers_loads(
    server: TestServer, uploads: dict[str, str], scorer: str
) -> None:
    """A symlinked folder, a symlinked open_clip file (with its sidecar) and a folder registered only
    through extra_model_paths.yaml are offered by OIR Load CLIP Scorer, and they load and score."""
    info = server.object_info()["OIRLoadCLIPScorer"]
    options = info["input"]["required"]["clip_name"]
    offered = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert {TINY_SCORER, scorer} <= set(offered)
    graph = tiny_workflow(api_twin("oir_single_object_search"), uploads, f"oir-tests/scorer-{scorer}")
    loader = next(i for i, n in graph.items() if n["class_type"] == "OIRLoadCLIPScorer")
    graph[loader]["inputs"]["clip_name"] = scorer
    entry = server.run(graph)
    assert_succeeded(entry)
    metric = next(i for i, n in graph.items() if n["class_type"] == "OIRMaskMetricScorer")
    (pair,) = entry["outputs"][metric]["oir_scores"]
    assert len(pair["table"]["editing"]) == STEPS and all(math.isfinite(v) for v in pair["table"]["editing"])


def test_scorer_folders_keep_the_default_and_refuse_names_outside(
    pack: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An oir_clip entry in extra_model_paths.yaml (read before custom nodes load) keeps models/oir_clip;
    a name leading out of every registered folder is refused although the file exists."""
    import folder_paths

    scoring = comfy_env.import_pack_module("nodes.scoring_nodes")
    inside, outside = tmp_path / "registered", tmp_path / "outside"
    inside.mkdir()
    tiny_files = comfy_server._tiny_clip()
    tiny_files.make_transformers_clip(outside / "escaped", image_size=32, patch_size=8)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "oir_clip", ([str(inside)], set()))
    scoring.register_scorer_folder()
    paths, extensions = folder_paths.folder_names_and_paths["oir_clip"]
    assert (
        paths == [str(inside), os.path.join(folder_paths.models_dir, "oir_clip")]
        and ".safetensors" in extensions
    )
    refusal = comfy_env.import_pack_module("oir_core.errors").OIRInputError
    with pytest.raises(refusal, match=r"clip_name.*is not a scorer in models/oir_clip"):
        scoring.resolve_scorer("../outside/escaped")


@pytest.mark.parametrize("steps", [2, 3])
def test_lowering_the_steps_of_a_template_never_breaks_it(
    server: TestServer, uploads: dict[str, str], steps: int
) -> None:
    """The templates' R and r are auto (-1, a fifth of T): any step count runs to the end."""
    template = api_twin("oir_two_object_edit")
    reassembly = next(n for n in template.values() if n["class_type"] == "OIRObjectReassembly")
    assert (reassembly["inputs"]["reassembly_step"], reassembly["inputs"]["reinversion_steps"]) == (-1, -1)
    graph = tiny_workflow(template, uploads, f"oir-tests/steps-{steps}")
    for node in graph.values():
        if node["class_type"] == "OIRObjectReassembly":
            node["inputs"].update(reassembly_step=-1, reinversion_steps=-1)  # as shipped
        elif node["class_type"] == "OIRDDIMInversion":
            node["inputs"]["steps"] = steps
        elif node["class_type"] == "OIRParallelStepSearch":
            node["inputs"]["custom_steps"] = f"1-{steps}"
    entry = server.run(graph)
    assert_succeeded(entry)
    save = next(i for i, n in graph.items() if n["class_type"] == "SaveImage")
    (saved,) = entry["outputs"][save]["images"]
    assert fetch_image(server, saved).size == (IMAGE_SIZE, IMAGE_SIZE)
