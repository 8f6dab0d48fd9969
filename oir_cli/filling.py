"""Fills a shipped API-format workflow for an edit spec, and reads node ids and titles back from one."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .results import safe_case_dir
from .specs import ControlNetItem, EditSpec, LoraItem, SpecError

WORKFLOW_DIR = Path(__file__).resolve().parent / "workflows"
"""API-format workflows shipped with the package (twins of ``example_workflows/*.json``)."""

BASE_TEMPLATE = "oir_two_object_edit"
"""The template every headless edit starts from; pairs, LoRAs and ControlNets are adapted in it."""


MASK_CHANNEL = "red"
"""LoadImageMask channel the headless workflows read: a mask file is white (object) on black."""


def load_template(name: str = BASE_TEMPLATE) -> dict[str, Any]:
    """A fresh copy of a shipped API-format workflow (``oir_cli/workflows/<name>.api.json``)."""
    path = WORKFLOW_DIR / f"{name}.api.json"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".api.json") for p in WORKFLOW_DIR.glob("*.api.json"))
        raise SpecError(f"no shipped workflow {name!r} (known: {', '.join(known)})")
    return json.loads(path.read_text(encoding="utf-8"))


def nodes_of(workflow: Mapping[str, Any], class_type: str) -> list[str]:
    """Ids of the nodes of one class, in numeric order."""
    return sorted((i for i, n in workflow.items() if n["class_type"] == class_type), key=_id_key)


def _id_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _one(workflow: Mapping[str, Any], class_type: str) -> str:
    found = nodes_of(workflow, class_type)
    if len(found) != 1:
        raise SpecError(f"the workflow template needs exactly one {class_type} node (found {len(found)})")
    return found[0]


def _next_id(workflow: Mapping[str, Any]) -> str:
    return str(max((int(i) for i in workflow if i.isdigit()), default=0) + 1)


def _consumers(workflow: Mapping[str, Any], link: Sequence[Any]) -> list[tuple[str, str]]:
    """``(node id, input name)`` of every input linked to ``link`` (``[node id, output slot]``)."""
    source = [str(link[0]), int(link[1])]
    return [
        (node_id, name)
        for node_id, node in workflow.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list) and len(value) == 2 and [str(value[0]), int(value[1])] == source
    ]


def _rewire(workflow: dict[str, Any], old: list[Any], new: list[Any], skip: Iterable[str]) -> None:
    skipped = set(skip)
    for node_id, name in _consumers(workflow, old):
        if node_id not in skipped:
            workflow[node_id]["inputs"][name] = list(new)


def pair_chain(workflow: Mapping[str, Any]) -> list[str]:
    """OIR Edit Pair ids in chain order (the first has no ``edit_pairs`` input)."""
    pairs = nodes_of(workflow, "OIREditPair")
    previous = {p: workflow[p]["inputs"].get("edit_pairs") for p in pairs}
    heads = [p for p in pairs if previous[p] is None]
    if len(heads) != 1:
        raise SpecError("the workflow template's OIR Edit Pairs do not form one chain")
    chain = heads
    while True:
        following = [p for p in pairs if previous[p] is not None and str(previous[p][0]) == chain[-1]]
        if not following:
            return chain
        chain.append(following[0])


def fill_workflow(
    template: Mapping[str, Any],
    spec: EditSpec,
    uploads: Mapping[Path, str],
    *,
    model_loader: str = "CheckpointLoaderSimple",
    scorer: str | None = None,
    filename_prefix: str | None = None,
) -> dict[str, Any]:
    """The API-format graph that runs ``spec``: a copy of ``template`` with every value filled.

    Edit pairs are added or removed to match ``spec.edits`` (each with its own LoadImageMask),
    LoRAs are inserted between the checkpoint loader and every MODEL/CLIP consumer, ControlNets
    between the Guided Prompt Builder's original/target outputs and every consumer (target as
    positive, original as negative), and an OIR Edit Region Score scores the saved image in the
    same run (:func:`_add_region_score`). The template is not modified.

    Args:
        uploads: server-side name of every local file of the spec (``spec.files()``).
        model_loader: class of the node that replaces CheckpointLoaderSimple (same ``ckpt_name``
            input and MODEL, CLIP, VAE outputs).
        scorer: CLIP scorer name when ``spec.scorer`` is ``None``.
        filename_prefix: SaveImage prefix (default ``oir-edit/<case>``).
    """
    graph: dict[str, Any] = copy.deepcopy(dict(template))
    loader = _fill_loader(graph, spec, model_loader)
    source_image = _fill_source_image(graph, spec, uploads)
    builder = _fill_pairs(graph, spec, uploads)
    _fill_inversion(graph, spec)
    _fill_scorer(graph, spec, scorer)
    _fill_search(graph, spec)
    _fill_reassembly(graph, spec)
    _fill_outputs(graph, spec, filename_prefix)
    _insert_loras(graph, spec.loras, loader)
    _insert_controlnets(graph, spec.controlnets, uploads, builder, source_image, loader)
    _add_region_score(graph, builder)  # last: the other nodes keep the ids they have without it
    return graph


def _fill_loader(graph: dict[str, Any], spec: EditSpec, model_loader: str) -> str:
    """The checkpoint loader: ``model_loader``'s class and the spec's checkpoint; returns its id."""
    loader = _one(graph, "CheckpointLoaderSimple")
    graph[loader]["class_type"] = model_loader
    graph[loader]["inputs"]["ckpt_name"] = spec.checkpoint
    graph[loader]["_meta"] = {"title": "Load Checkpoint"}
    return loader


def _fill_source_image(graph: dict[str, Any], spec: EditSpec, uploads: Mapping[Path, str]) -> str:
    """The LoadImage the VAE encodes gets the uploaded source image; returns its id."""
    encode = _one(graph, "VAEEncode")
    source_image = str(graph[encode]["inputs"]["pixels"][0])
    graph[source_image]["inputs"]["image"] = uploads[spec.image]
    return source_image


def _resize_pair_chain(graph: dict[str, Any], count: int) -> tuple[list[str], dict[str, str]]:
    """The template's OIR Edit Pair chain cut or grown to ``count`` pairs, each with a LoadImageMask.

    Returns the pair ids in chain order and each pair's mask node id (new nodes are left unfilled).
    """
    chain = pair_chain(graph)
    masks = {p: str(graph[p]["inputs"]["mask"][0]) for p in chain}
    for extra in chain[count:]:
        del graph[extra], graph[masks[extra]]
    chain = chain[:count]
    while len(chain) < count:
        mask_id = _next_id(graph)
        graph[mask_id] = {"class_type": "LoadImageMask", "inputs": {}, "_meta": {}}
        pair_id = _next_id(graph)
        graph[pair_id] = {"class_type": "OIREditPair", "inputs": {"mask": [mask_id, 0]}, "_meta": {}}
        masks[pair_id] = mask_id
        chain.append(pair_id)
    return chain, masks


def _fill_pairs(graph: dict[str, Any], spec: EditSpec, uploads: Mapping[Path, str]) -> str:
    """One chained OIR Edit Pair and mask per edit, and the prompts; returns the prompt builder's id."""
    builder = _one(graph, "OIRGuidedPromptBuilder")
    chain, masks = _resize_pair_chain(graph, len(spec.edits))
    for k, (pair_id, edit) in enumerate(zip(chain, spec.edits)):
        mask_id = masks[pair_id]
        graph[mask_id]["inputs"] = {"image": uploads[edit.mask], "channel": MASK_CHANNEL}
        graph[mask_id]["_meta"] = {"title": f"Mask: {edit.source}"}
        inputs: dict[str, Any] = {
            "source": edit.source,
            "target": edit.target,
            "occurrence": edit.occurrence or 0,
            "guided_prompt": edit.guided_prompt or "",
            "mask": [mask_id, 0],
        }
        if k:
            inputs["edit_pairs"] = [chain[k - 1], 0]
        graph[pair_id]["inputs"] = inputs
        graph[pair_id]["_meta"] = {"title": f"Edit pair {k + 1}: {edit.source} -> {edit.target}"}
    graph[builder]["inputs"].update(
        original_prompt=spec.prompt, target_prompt=spec.target_prompt or "", edit_pairs=[chain[-1], 0]
    )
    return builder


def _fill_inversion(graph: dict[str, Any], spec: EditSpec) -> None:
    """The DDIM inversion's steps, schedule and convention."""
    inversion = _one(graph, "OIRDDIMInversion")
    graph[inversion]["inputs"].update(steps=spec.steps, scheduler=spec.scheduler, convention=spec.convention)


def _fill_scorer(graph: dict[str, Any], spec: EditSpec, scorer: str | None) -> None:
    """The CLIP scorer loader: the spec's CLIP (else ``scorer``) and how it scores."""
    scorer_node = _one(graph, "OIRLoadCLIPScorer")
    graph[scorer_node]["inputs"].update(
        clip_name=spec.scorer or scorer,
        backend=spec.scorer_backend,
        device=spec.scorer_device,
        precision=spec.scorer_precision,
        editing_weight=spec.editing_weight,
        attention_mode=spec.attention_mode,
        fidelity_space=spec.fidelity_space,
        mask_geometry=spec.mask_geometry,
    )


def _fill_search(graph: dict[str, Any], spec: EditSpec) -> None:
    """The parallel step search (which candidates) and the metric scorer's step choice."""
    search = _one(graph, "OIRParallelStepSearch")
    graph[search]["inputs"].update(
        cfg=spec.cfg,
        search_mode=spec.search_mode,
        custom_steps=spec.custom_steps or f"1-{spec.steps}",
        coarse_stride=spec.coarse_stride,
        refine_radius=spec.refine_radius,
        max_batch=spec.max_batch,
    )
    metric = _one(graph, "OIRMaskMetricScorer")
    graph[metric]["inputs"].update(step_override=spec.step_override)


def _fill_reassembly(graph: dict[str, Any], spec: EditSpec) -> None:
    """The object reassembly's ``R``, ``r``, overlap rule and background mode."""
    reassembly = _one(graph, "OIRObjectReassembly")
    graph[reassembly]["inputs"].update(
        cfg=spec.cfg,
        reassembly_step=spec.reassembly_step,
        reinversion_steps=spec.reinversion_steps,
        overlap=spec.overlap,
        max_batch=spec.max_batch,
        mask_geometry=spec.mask_geometry,
        background=spec.background,
        feather=spec.feather,
    )


def _fill_outputs(graph: dict[str, Any], spec: EditSpec, filename_prefix: str | None) -> None:
    """Every SaveImage's prefix: ``filename_prefix``, or ``oir-edit/<case folder>``."""
    for save in nodes_of(graph, "SaveImage"):
        graph[save]["inputs"]["filename_prefix"] = filename_prefix or f"oir-edit/{safe_case_dir(spec.name)}"


REGION_SCORE = "OIREditRegionScore"
"""The node that scores the final image inside each pair's mask (its ``ui.oir_region_scores``)."""


def _add_region_score(graph: dict[str, Any], builder: str) -> str:
    """An OIR Edit Region Score on the image the SaveImage saves, with the search's scorer; returns its id.

    Added at fill time, not in the templates: in the frontend it is one more node to look at, and
    the shipped API twins stay equal to the templates. The scorer is the one the search ranked with
    and the pairs come from the prompt builder, so the number is the search's ``S_e`` of the final
    image.
    """
    saved = graph[_one(graph, "SaveImage")]["inputs"]["images"]
    score_id = _next_id(graph)
    graph[score_id] = {
        "class_type": REGION_SCORE,
        "inputs": {
            "image": list(saved),
            "scorer": [_one(graph, "OIRLoadCLIPScorer"), 0],
            "oir_edit": [builder, 2],
        },
        "_meta": {"title": "OIR Edit Region Score"},
    }
    return score_id


def _insert_loras(graph: dict[str, Any], loras: Sequence[LoraItem], loader: str) -> None:
    """A LoraLoader per LoRA, chained after the checkpoint loader, feeding every MODEL/CLIP consumer."""
    model, clip = [loader, 0], [loader, 1]
    for lora in loras:
        lora_id = _next_id(graph)
        graph[lora_id] = {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": lora.name,
                "strength_model": lora.strength_model,
                "strength_clip": lora.strength_clip,
            },
            "_meta": {"title": "Load LoRA"},
        }
        _rewire(graph, model, [lora_id, 0], skip=[lora_id])
        _rewire(graph, clip, [lora_id, 1], skip=[lora_id])
        graph[lora_id]["inputs"].update(model=model, clip=clip)
        model, clip = [lora_id, 0], [lora_id, 1]


def _insert_controlnets(
    graph: dict[str, Any],
    controlnets: Sequence[ControlNetItem],
    uploads: Mapping[Path, str],
    builder: str,
    source_image: str,
    loader: str,
) -> None:
    """A ControlNet loader and apply node per ControlNet, chained on the builder's prompts.

    The target prompt (builder output 1) is the positive, the original (output 0) the negative; the
    hint is the ControlNet's own uploaded image, or the source image (``source_image``'s node).
    """
    positive, negative = [builder, 1], [builder, 0]
    for net in controlnets:
        loader_id = _next_id(graph)
        graph[loader_id] = {
            "class_type": "ControlNetLoader",
            "inputs": {"control_net_name": net.name},
            "_meta": {"title": "Load ControlNet Model"},
        }
        apply_id = _next_id(graph)
        graph[apply_id] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {},
            "_meta": {"title": "Apply ControlNet"},
        }
        if net.hint is not None:
            hint_id = _next_id(graph)
            graph[hint_id] = {
                "class_type": "LoadImage",
                "inputs": {"image": uploads[net.hint]},
                "_meta": {"title": "Control hint"},
            }
            hint: list[Any] = [hint_id, 0]
        else:
            hint = [source_image, 0]
        _rewire(graph, positive, [apply_id, 0], skip=[apply_id])
        _rewire(graph, negative, [apply_id, 1], skip=[apply_id])
        graph[apply_id]["inputs"] = {
            "strength": net.strength,
            "start_percent": net.start_percent,
            "end_percent": net.end_percent,
            "positive": positive,
            "negative": negative,
            "control_net": [loader_id, 0],
            "image": hint,
            "vae": [loader, 2],
        }
        positive, negative = [apply_id, 0], [apply_id, 1]


def describe_nodes(workflow: Mapping[str, Any]) -> dict[str, str]:
    """``node id -> title`` for progress messages."""
    return {i: str(n.get("_meta", {}).get("title") or n["class_type"]) for i, n in workflow.items()}
