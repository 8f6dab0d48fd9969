"""The search metric in ComfyUI: OIR Load CLIP Scorer, OIR Mask Metric Scorer and OIR Edit Region Score."""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..oir_core.clip_backends import ClipModel, load_clip
from ..oir_core.clip_scorer import ClipScorer
from ..oir_core.edit import check_choice, fit_image
from ..oir_core.errors import OIRInputError
from ..oir_core.figures import pair_candidate_grids, pair_titles, score_plot, stack_images
from ..oir_core.metric import SearchMetric
from ..oir_core.options import (
    ATTENTION_MODES,
    FIDELITY_SPACES,
    MASK_GEOMETRIES,
    SCORER_BACKENDS,
    SCORER_DEVICES,
    SCORER_PRECISIONS,
)
from ..oir_core.search import edited_region_scores, score_candidate_pairs
from ..oir_core.steps import parse_step_overrides
from .payloads import CandidateBundle, ChosenSteps, OIREdit
from .types import Candidates, ChosenStepsType, OIREditType, Scorer
from .validation import refuse_unknown_choices

CATEGORY = "OIR/scoring"
SCORER_FOLDER = "oir_clip"
CHECKPOINT_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin")


def register_scorer_folder() -> None:
    """Register ``models/oir_clip`` beside any ``oir_clip`` folders of extra_model_paths.yaml.

    ComfyUI reads extra_model_paths.yaml before it imports custom nodes; an ``oir_clip`` entry there
    creates the folder list without the default folder, which is added here.
    """
    default = os.path.join(folder_paths.models_dir, SCORER_FOLDER)
    if SCORER_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[SCORER_FOLDER] = ([default], set(CHECKPOINT_EXTENSIONS))
        return
    paths, extensions = folder_paths.folder_names_and_paths[SCORER_FOLDER]
    if default not in paths:
        paths.append(default)
    extensions.update(CHECKPOINT_EXTENSIONS)


def list_scorers() -> list[str]:
    """transformers CLIP folders (with ``config.json``) and open_clip checkpoints, relative names."""
    register_scorer_folder()
    found: set[str] = set()
    for root in folder_paths.get_folder_paths(SCORER_FOLDER):
        if not os.path.isdir(root):
            continue
        for current, folders, files in os.walk(root, followlinks=True):
            relative = os.path.relpath(current, root)
            if "config.json" in files and relative != ".":
                found.add(relative.replace(os.sep, "/"))
                folders.clear()
                continue
            for name in files:
                if name.endswith(CHECKPOINT_EXTENSIONS):
                    found.add(os.path.normpath(os.path.join(relative, name)).replace(os.sep, "/"))
    return sorted(found)


def resolve_scorer(name: str) -> str:
    """The path of a scorer the dropdown offers (:func:`list_scorers`), or a refusal.

    Symlinked files and folders inside a registered folder are offered and load (the listing
    follows links, as people share model folders that way); any other name, such as a path that
    leaves every registered folder, is refused.
    """
    if name in list_scorers():
        for root in folder_paths.get_folder_paths(SCORER_FOLDER):
            candidate = os.path.join(root, *name.split("/"))
            if os.path.exists(candidate):
                return candidate
    raise OIRInputError(
        "clip_name",
        name,
        f"is not a scorer in models/{SCORER_FOLDER} or an {SCORER_FOLDER} folder of extra_model_paths.yaml",
        f"put a transformers CLIP folder or an open_clip .safetensors checkpoint into models/{SCORER_FOLDER} "
        "and pick it from the list",
    )


def scorer_device(choice: str) -> torch.device:
    """The compute device for the ``device`` choice (ComfyUI's own rules, ARCHITECTURE.md §5).

    ``auto`` follows ``text_encoder_device()``, where ComfyUI runs its own CLIP models; ``gpu`` is
    ``get_torch_device()`` (the diffusion model's device); ``cpu`` is the CPU.
    """
    import comfy.model_management as mm

    if choice == "cpu":
        return torch.device("cpu")
    if choice == "gpu":
        return torch.device(mm.get_torch_device())
    return torch.device(mm.text_encoder_device())


class ScorerWeights(torch.nn.Module):
    """The scorer CLIP's module, held for a ComfyUI ``ModelPatcher``.

    A thin holder because the patcher sets ``model.device`` on what it manages, which a transformers
    ``PreTrainedModel`` does not allow (its ``device`` is a read-only property).
    """

    def __init__(self, clip: torch.nn.Module) -> None:
        super().__init__()
        self.clip = clip


def managed_clip(path: str, backend: str, device: torch.device, dtype: torch.dtype) -> ClipModel:
    """Load the scorer CLIP under ComfyUI's model management.

    The weights are read onto ComfyUI's offload device and wrapped in a ``ModelPatcher`` whose load
    device is ``device``. Before every use :meth:`ClipModel.ready` calls ``load_models_gpu`` with it
    (fully: a plain torch module cannot run partially loaded), so ComfyUI counts the scorer in its
    memory budget, offloads it when the diffusion model needs the room, and unloads it with every
    other model on "Free model and node cache" (``POST /free``). Only the returned object (kept by the
    node cache) holds the weights.
    """
    import comfy.model_management as mm
    import comfy.model_patcher

    offload = torch.device("cpu") if device.type == "cpu" else torch.device(mm.text_encoder_offload_device())
    model = load_clip(path, backend=backend, device=offload, dtype=dtype)  # type: ignore[arg-type]
    patcher = comfy.model_patcher.ModelPatcher(
        ScorerWeights(model.model), load_device=device, offload_device=offload
    )
    model.before_use = functools.partial(mm.load_models_gpu, [patcher], force_full_load=True)
    return model


def check_metric(scorer: Any) -> SearchMetric:
    """The OIR_SCORER input: a search metric from OIR Load CLIP Scorer."""
    if not isinstance(scorer, SearchMetric):
        raise OIRInputError(
            "scorer", type(scorer).__name__, "is not an OIR search metric", "connect OIR Load CLIP Scorer"
        )
    return scorer


class OIRLoadCLIPScorer(io.ComfyNode):
    """Loads the CLIP used for the editing score, from local files only (cached)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRLoadCLIPScorer",
            display_name="OIR Load CLIP Scorer",
            category=CATEGORY,
            description=(
                f"Loads a CLIP from models/{SCORER_FOLDER} (a transformers CLIP folder with config.json + "
                "safetensors, e.g. clip-vit-base-patch16 as in the paper, or an open_clip .safetensors "
                "checkpoint with a <name>.json sidecar naming its architecture) and sets the whole search "
                "metric, so the coarse-to-fine round and the Mask Metric Scorer rank with the same one. "
                "Never downloads; pickle files load only as plain weights."
            ),
            inputs=[
                io.Combo.Input(
                    "clip_name", options=list_scorers(), tooltip=f"A model in models/{SCORER_FOLDER}."
                ),
                io.Combo.Input(
                    "backend",
                    options=list(SCORER_BACKENDS),
                    default="auto",
                    tooltip="Loader to use.",
                ),
                io.Combo.Input(
                    "device",
                    options=list(SCORER_DEVICES),
                    default="auto",
                    tooltip="auto = where ComfyUI runs its own CLIP models; gpu = ComfyUI's compute device "
                    "(refused when ComfyUI runs on the CPU); cpu = always the CPU. ComfyUI loads the scorer "
                    "when it scores and may offload it when the diffusion model needs the memory.",
                ),
                io.Combo.Input(
                    "precision",
                    options=list(SCORER_PRECISIONS),
                    default="fp32",
                    tooltip="Scorer weights dtype: fp32 as in the paper; fp16 halves its memory (CPU too).",
                ),
                io.Float.Input(
                    "editing_weight",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="Weight of the editing score; fidelity gets 1 - this (paper: 0.5).",
                ),
                io.Combo.Input(
                    "attention_mode",
                    options=list(ATTENTION_MODES),
                    default="official",
                    tooltip="official = the paper's soft +1 attention bias; hard = CLIP sees only the mask.",
                ),
                io.Combo.Input(
                    "fidelity_space",
                    options=list(FIDELITY_SPACES),
                    default="official",
                    tooltip="official = MSE on CLIP-preprocessed 224px images; pixels = full-resolution MSE.",
                ),
                io.Combo.Input(
                    "mask_geometry",
                    options=list(MASK_GEOMETRIES),
                    default="official",
                    tooltip="official = the paper's code: the mask resized straight to CLIP's patch grid and "
                    "input size (top-left pixel of each patch), images resized as 8-bit with PIL; centered = "
                    "the mask follows CLIP's resize and centre crop and is sampled at patch centres (stays "
                    "on the object when its edges are off the 16-px grid or the image is not square).",
                ),
            ],
            outputs=[
                Scorer.Output(
                    display_name="scorer",
                    tooltip="The search metric (CLIP, modes, weights), for the Parallel Step Search and the "
                    "Mask Metric Scorer.",
                )
            ],
        )

    @classmethod
    def validate_inputs(
        cls,
        backend: str | None = None,
        device: str | None = None,
        precision: str | None = None,
        attention_mode: str | None = None,
        fidelity_space: str | None = None,
        mask_geometry: str | None = None,
    ) -> bool | str:
        if device == "gpu" and scorer_device("gpu").type == "cpu":
            return str(
                OIRInputError(
                    "device",
                    device,
                    "ComfyUI runs on the CPU here (started with --cpu, or no GPU found)",
                    "choose 'auto' or 'cpu'",
                )
            )
        return refuse_unknown_choices(
            cls,
            backend=backend,
            device=device,
            precision=precision,
            attention_mode=attention_mode,
            fidelity_space=fidelity_space,
            mask_geometry=mask_geometry,
        )

    @classmethod
    def execute(
        cls,
        clip_name: str,
        backend: str,
        device: str,
        precision: str,
        editing_weight: float = 0.5,
        attention_mode: str = "official",
        fidelity_space: str = "official",
        mask_geometry: str = "official",
    ) -> io.NodeOutput:
        check_choice(device, SCORER_DEVICES, "device")
        check_choice(precision, SCORER_PRECISIONS, "precision")
        check_choice(attention_mode, ATTENTION_MODES, "attention_mode")
        check_choice(fidelity_space, FIDELITY_SPACES, "fidelity_space")
        check_choice(mask_geometry, MASK_GEOMETRIES, "mask_geometry")
        weights = (float(editing_weight), 1.0 - float(editing_weight))
        path = resolve_scorer(clip_name)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        model = managed_clip(path, backend, scorer_device(device), dtype)
        scorer = ClipScorer(model, attention_mode, fidelity_space, mask_geometry)  # type: ignore[arg-type]
        return io.NodeOutput(SearchMetric(scorer, weights))


class OIRMaskMetricScorer(io.ComfyNode):
    """Scores every candidate (CLIP inside the mask, MSE outside) and picks each pair's step."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRMaskMetricScorer",
            # An output node, so a cached run re-sends its chart / strip to the frontend (ComfyUI
            # re-sends the results of cached output nodes only): after a page reload, queuing the
            # unchanged graph shows them again (ARCHITECTURE.md §5).
            is_output_node=True,
            display_name="OIR Mask Metric Scorer",
            category=CATEGORY,
            description=(
                "OIR step 4: per pair, S_e = CLIP similarity of the target phrase and the candidate "
                "restricted to the mask; S_ne = -MSE to the source image outside the mask; both min-max "
                "normalised and weighted; the best step wins (ties: smaller step). 'step_override' "
                "(e.g. 'auto, 23') overrules the search per pair; click a step on the chart to set it."
            ),
            inputs=[
                Candidates.Input("candidates", tooltip="From the OIR Parallel Step Search."),
                Scorer.Input(
                    "scorer", tooltip="From OIR Load CLIP Scorer: the CLIP, its modes and the weights."
                ),
                io.Image.Input("image", tooltip="The source image (the one VAE-encoded for the inversion)."),
                io.String.Input(
                    "step_override",
                    default="",
                    tooltip="Per pair 'auto' or a step, comma-separated (e.g. 'auto, 23'); empty = all auto.",
                ),
            ],
            outputs=[
                ChosenStepsType.Output(
                    display_name="chosen_steps", tooltip="Step per pair and the score tables."
                ),
                io.Image.Output(
                    display_name="plot", tooltip="Score curves per pair (normalised) vs the step."
                ),
                io.Image.Output(display_name="grid", tooltip="Candidate grids with the chosen step framed."),
                io.String.Output(
                    display_name="report", tooltip="Chosen steps and full score tables as JSON."
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        candidates: CandidateBundle,
        scorer: SearchMetric,
        image: torch.Tensor,
        step_override: str = "",
    ) -> io.NodeOutput:
        if not isinstance(candidates, CandidateBundle):
            raise OIRInputError(
                "candidates",
                type(candidates).__name__,
                "not OIR candidates",
                "connect the Parallel Step Search",
            )
        edit, found = candidates.edit, candidates.candidates
        overrides = parse_step_overrides(step_override, len(edit.pairs), candidates.steps)
        metric = check_metric(scorer)
        images = candidates.float_images()
        original = fit_image(image, tuple(images.shape[1:3]))
        tables = score_candidate_pairs(
            metric.scorer,
            found,
            images,
            original,
            [pair.mask for pair in edit.pairs],
            edit.plan.score_texts,
            weights=metric.weights,
        )
        searched = tuple(table.chosen_step for table in tables)
        chosen = tuple(o if o is not None else s for o, s in zip(overrides, searched))
        result = ChosenSteps(
            steps=chosen,
            searched=searched,
            tables=tuple(tables),
            overridden=tuple(o is not None for o in overrides),
            search=candidates,
        )
        plots = stack_images(
            [
                score_plot(
                    t.steps,
                    t.editing_norm,
                    t.fidelity_norm,
                    t.combined,
                    step,
                    title=f"pair {k + 1}: {edit.pairs[k].text.source} -> {edit.pairs[k].text.target}",
                )
                for k, (t, step) in enumerate(zip(tables, chosen))
            ]
        )
        grid, layouts = pair_candidate_grids(
            found,
            images,
            highlight=dict(enumerate(chosen)),
            titles=pair_titles(edit.pairs),
        )
        report = json.dumps({"prompts": edit.plan.to_dict(), **result.to_dict()}, indent=2)
        chart = [
            {
                "pair": k,
                "source": edit.pairs[k].text.source,
                "target": edit.pairs[k].text.target,
                "chosen": chosen[k],
                "searched": searched[k],
                "override": overrides[k],
                "total_steps": candidates.steps,
                # the strip showing these candidates takes these scores (nodes/payloads.py)
                "candidates": candidates.key,
                "table": tables[k].to_dict(),
                "grid": layouts[k],
            }
            for k in range(len(tables))
        ]
        # Under its own key, not `images` (the frontend would draw the grid under the chart again):
        # the chart's hover thumbnails crop from it; the template's Preview Image shows the grid.
        saved_grid = ui.PreviewImage(grid, cls=cls).as_dict()["images"]
        return io.NodeOutput(result, plots, grid, report, ui={"oir_images": saved_grid, "oir_scores": chart})


class OIREditRegionScore(io.ComfyNode):
    """The finished edit's CLIP score inside each pair's mask (the search's ``S_e``, on the final image)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIREditRegionScore",
            display_name="OIR Edit Region Score",
            # An output node: it runs although nothing consumes it, and a cached run re-sends its numbers.
            is_output_node=True,
            category=CATEGORY,
            description=(
                "Scores the finished edit: per pair, the CLIP similarity of the target phrase and the final "
                "image restricted to the pair's mask, computed exactly as the search's S_e of a candidate "
                "(same scorer, attention mode, mask geometry) on the 8-bit picture Save Image writes. "
                "Higher = the object looks more like its target. Shown on the node and kept in the "
                "prompt's history (oir-edit adds this node to every edit and writes the numbers to "
                "report.json as final_clip_score)."
            ),
            inputs=[
                io.Image.Input(
                    "image", tooltip="The final image: VAE Decode of OIR Object Reassembly's latent."
                ),
                Scorer.Input("scorer", tooltip="From OIR Load CLIP Scorer (the one the search ranked with)."),
                OIREditType.Input(
                    "oir_edit", tooltip="From OIR Guided Prompt Builder: each pair's mask and target phrase."
                ),
            ],
            outputs=[
                io.String.Output(
                    display_name="scores", tooltip="Per pair source, target and CLIP score, as JSON."
                )
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, scorer: SearchMetric, oir_edit: OIREdit) -> io.NodeOutput:
        if not isinstance(oir_edit, OIREdit):
            raise OIRInputError(
                "oir_edit",
                type(oir_edit).__name__,
                "is not an OIR edit",
                "connect OIR Guided Prompt Builder's oir_edit output",
            )
        metric = check_metric(scorer)
        values = edited_region_scores(
            metric.scorer, image, [pair.mask for pair in oir_edit.pairs], oir_edit.plan.score_texts
        )
        rows = [
            {
                "pair": k,
                "source": pair.text.source,
                "target": pair.text.target,
                "score_text": text,
                "clip_score": value,
            }
            for k, (pair, text, value) in enumerate(zip(oir_edit.pairs, oir_edit.plan.score_texts, values))
        ]
        return io.NodeOutput(json.dumps(rows, indent=2), ui={"oir_region_scores": rows})
