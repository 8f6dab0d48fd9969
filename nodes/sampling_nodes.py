"""Nodes that run the diffusion model: OIR DDIM Inversion, Parallel Step Search, Object Reassembly.

Every model call goes through :class:`nodes.comfy_host.ComfyHost` (ComfyUI's CFGGuider), so LoRA,
ControlNet carried in the conditioning, hooks and model patches act on every step.
"""

from __future__ import annotations

import logging
from typing import Any

import comfy.samplers
import torch
from comfy_api.latest import io, ui

from ..oir_core.clip_scorer import quantize_images
from ..oir_core.edit import check_cfg, check_choice, check_masks_match
from ..oir_core.errors import OIRInputError
from ..oir_core.figures import pair_candidate_grids, pair_titles
from ..oir_core.inversion import InversionTrajectory, check_trajectory_source, choose_convention, invert
from ..oir_core.masks import region_masks
from ..oir_core.options import (
    BACKGROUND_MODES,
    CONVENTIONS,
    LATENT_FACTOR,
    MASK_GEOMETRIES,
    MAX_FEATHER,
    MIN_IMAGE_SIDE,
    SEARCH_MODES,
)
from ..oir_core.reassembly import background_psnr, reassemble
from ..oir_core.sampling import OFFICIAL_FAMILY
from ..oir_core.search import run_search
from ..oir_core.steps import levels_note, validate_background, validate_reassembly
from .comfy_host import (
    ComfyHost,
    clean_sigma,
    get_sigmas,
    is_discrete_vp_model,
    is_flow_model,
    model_space_in,
    model_space_out,
    schedule_levels_reason,
)
from .conditioning import check_conditioning, inherit_conditioning
from .payloads import CandidateBundle, ChosenSteps, OIREdit, SearchRecipe, candidates_key
from .progress import level_progress
from .scoring_nodes import check_metric
from .types import Candidates, ChosenStepsType, OIREditType, Scorer, Trajectory
from .validation import (
    mask_rules_downstream,
    reassembly_levels_downstream,
    refuse_unfit_reassembly,
    refuse_unknown_choices,
    refuse_unused_results,
)

CATEGORY = "OIR/sampling"


def model_facts(model: Any) -> dict[str, Any]:
    """What a trajectory must agree on with the model that uses it."""
    sampling = model.get_model_object("model_sampling")
    return {
        # ComfyUI composes model_sampling classes on the fly ("ModelSampling" for every model type):
        # the bases name the parameterisation and the noise schedule.
        "model_sampling": "+".join(base.__name__ for base in type(sampling).__bases__)
        or type(sampling).__name__,
        "latent_channels": int(model.get_model_object("latent_format").latent_channels),
        "sigma_max": float(sampling.sigma_max),
        "sigma_min": float(sampling.sigma_min),
    }


def single_latent(latent: dict[str, Any], input_name: str = "latent") -> torch.Tensor:
    """``[1, C, ..., h, w]`` samples of a one-image LATENT."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor):
        raise OIRInputError(
            input_name, type(latent).__name__, "is not a LATENT", "connect VAE Encode's output"
        )
    if samples.shape[0] != 1:
        raise OIRInputError(
            input_name,
            f"batch of {samples.shape[0]}",
            "OIR edits one image at a time",
            "split the batch (Latent From Batch) and edit each image separately",
        )
    if not torch.isfinite(samples).all():
        raise OIRInputError(
            input_name,
            "latent with NaN/inf",
            "the latent is not finite",
            "connect VAE Encode of the source image (a NaN/inf latent comes from a broken VAE or image: "
            "try another VAE, or fp32 with ComfyUI --fp32-vae)",
        )
    return samples


def check_edit(edit: Any, trajectory: InversionTrajectory) -> OIREdit:
    """The edit's masks must belong to the inverted image."""
    if not isinstance(edit, OIREdit):
        raise OIRInputError(
            "oir_edit", type(edit).__name__, "is not an OIR edit", "connect the Guided Prompt Builder"
        )
    check_masks_match(edit.pairs, tuple(int(s) for s in trajectory.latent_shape[-2:]))
    return edit


def guided_conditionings(edit: OIREdit, original: list) -> list:
    """Each pair's guided prompt carrying whatever the user attached to the original conditioning."""
    return [inherit_conditioning(original, encoded, edit.encoder_keys) for encoded in edit.guided_encodings]


def decode(vae: Any, model: Any, latents: torch.Tensor) -> torch.Tensor:
    """``[N, *latent_shape]`` model-space latents -> ``[N, H, W, 3]`` images (after sampling only).

    One latent per ``vae.decode``: ComfyUI splits a batch by the free memory, and a decode is not
    batch-invariant, so batching would tie the candidates' pixels to the load (ARCHITECTURE.md §5).
    Each candidate is decoded exactly as a VAE Decode of that latent alone.
    """
    images = torch.cat([vae.decode(model_space_out(model, latent[None])) for latent in latents])
    if images.ndim == 5:  # video VAEs give [N, frames, H, W, 3]; OIR scores the first frame
        images = images[:, 0]
    return images.float().clamp(0, 1).cpu()


class OIRDDIMInversion(io.ComfyNode):
    """Deterministic DDIM inversion with the original prompt, keeping every latent."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRDDIMInversion",
            display_name="OIR DDIM Inversion",
            category=CATEGORY,
            description=(
                "OIR step 1: inverts the encoded image with the original prompt (CFG off) and keeps all T+1 "
                "latents. One inversion serves every edit pair. 'official' follows the paper's code "
                "(model evaluated at the next timestep, about 2x more accurate round trips); flow models "
                "(SD3, Flux) use 'euler'."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (LoRA and patches apply)."),
                io.Latent.Input("latent", tooltip="VAE Encode of the source image (batch of one)."),
                io.Conditioning.Input(
                    "original", tooltip="Original prompt P_o (from the Guided Prompt Builder)."
                ),
                io.Int.Input("steps", default=50, min=2, max=1000, tooltip="Inversion steps T (paper: 50)."),
                io.Combo.Input(
                    "scheduler",
                    options=list(comfy.samplers.SCHEDULER_NAMES),
                    default="ddim_uniform",
                    tooltip="Noise schedule; ddim_uniform matches the paper's DDIM timesteps.",
                ),
                io.Combo.Input(
                    "convention",
                    options=list(CONVENTIONS),
                    default="auto",
                    tooltip="auto = official for noise/v-prediction models, euler for flow models. "
                    "official = the paper's code exactly (clean latent at the t=0 level, denoising ends "
                    "there, step-1 candidate = the source); official_x0 = same inversion, denoising ends "
                    "at sigma 0 (the model's clean estimate); euler = ComfyUI's FlipSigmas unsampling.",
                ),
            ],
            outputs=[
                Trajectory.Output(
                    display_name="trajectory", tooltip="All T+1 inverted latents and the schedule."
                ),
                io.Latent.Output(display_name="inverted", tooltip="The fully inverted latent x_T."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, scheduler: str | None = None, convention: str | None = None) -> bool | str:
        return refuse_unknown_choices(cls, scheduler=scheduler, convention=convention)

    @classmethod
    def execute(
        cls, model: Any, latent: dict, original: list, steps: int, scheduler: str, convention: str
    ) -> io.NodeOutput:
        check_choice(scheduler, comfy.samplers.SCHEDULER_NAMES, "scheduler")
        check_choice(convention, CONVENTIONS, "convention")
        samples = single_latent(latent)
        check_conditioning(original, "original")
        cells = MIN_IMAGE_SIDE // LATENT_FACTOR
        if min(samples.shape[-2:]) < cells:
            raise OIRInputError(
                "latent",
                f"{samples.shape[-1]}x{samples.shape[-2]} latent cells",
                f"is smaller than {cells}x{cells} cells ({MIN_IMAGE_SIDE} px for an 8x VAE): an object and "
                "its surroundings cannot both exist on this grid",
                f"use an image of at least {MIN_IMAGE_SIDE} px on each side (SD works best from 512 on)",
            )
        if steps < 2:
            raise OIRInputError("steps", steps, "OIR needs at least 2 steps", "use the paper's 50")
        sigmas = get_sigmas(model, scheduler, steps)
        levels = sigmas.numel() - 1
        # Said once, here: every later message and the search's candidates count these levels (T).
        note = levels_note(steps, levels, scheduler, schedule_levels_reason(model, scheduler, steps, levels))
        if note is not None:
            logging.info("OIR DDIM Inversion: %s", note)
        # Before the first model call: the reassembly this trajectory feeds must fit its T levels.
        # (``hidden`` is set when ComfyUI executes the node; a direct call has no prompt to read.)
        hidden = cls.hidden
        refuse_unused_results(
            getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None), "trajectory"
        )
        try:
            refuse_unfit_reassembly(
                getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None), levels
            )
        except OIRInputError as error:
            if note is None:
                raise
            # The refusal counts levels; say where the number comes from (the full note is logged).
            where = f"steps = {steps} gave {levels} levels with the {scheduler} schedule"
            raise OIRInputError(
                error.input_name, error.value, f"{error.problem} ({where})", error.fix
            ) from None
        convention = choose_convention(
            convention,
            flow=is_flow_model(model),
            discrete_vp=is_discrete_vp_model(model),
            clean_sigma=clean_sigma(model),
            sigmas=sigmas,
        )
        host = ComfyHost(model, original, None, [], None, cfg=1.0)
        trajectory = invert(
            host,
            model_space_in(model, samples)[0].float(),
            sigmas,
            convention,  # type: ignore[arg-type]
            clean_sigma=clean_sigma(model) if convention in OFFICIAL_FAMILY else None,
            on_level=level_progress(),
            source={**model_facts(model), "scheduler": scheduler},
        )
        inverted = {"samples": model_space_out(model, trajectory.latents[-1:].clone())}
        summary = {"steps": steps, "levels": levels, "scheduler": scheduler, "note": note}
        return io.NodeOutput(
            trajectory, inverted, ui={"oir_split": host.split_report(), "oir_levels": [summary]}
        )


class OIRParallelStepSearch(io.ComfyNode):
    """Every candidate of every pair, denoised in lockstep; decoded after sampling."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRParallelStepSearch",
            # An output node, so a cached run re-sends its chart / strip to the frontend (ComfyUI
            # re-sends the results of cached output nodes only): after a page reload, queuing the
            # unchanged graph shows them again (ARCHITECTURE.md §5).
            is_output_node=True,
            display_name="OIR Parallel Step Search",
            category=CATEGORY,
            description=(
                "OIR steps 2-3: for each edit pair and each inversion step t, denoises x_t with the pair's "
                "guided prompt (negative: original prompt) into a candidate. All pairs and steps share each "
                "model call (T calls instead of T(T+1)/2), chunked to fit memory. 'coarse_to_fine' scores "
                "every coarse_stride-th step, then the steps around each pair's best, all approximated on a "
                "coarse sub-schedule (needs scorer and image); the reassembly then walks the chosen step "
                "exactly."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (LoRA and patches apply)."),
                Trajectory.Input("trajectory", tooltip="From OIR DDIM Inversion."),
                OIREditType.Input("oir_edit", tooltip="From the OIR Guided Prompt Builder."),
                io.Conditioning.Input(
                    "original",
                    tooltip="Original prompt P_o: the default negative, and the template whose "
                    "ControlNet/hooks the guided prompts inherit.",
                ),
                io.Vae.Input("vae", tooltip="Decodes the candidates for scoring and preview."),
                io.Float.Input(
                    "cfg", default=7.5, min=0.0, max=100.0, step=0.1, tooltip="CFG scale (paper: 7.5)."
                ),
                io.Combo.Input(
                    "search_mode",
                    options=list(SEARCH_MODES),
                    default="exhaustive",
                    tooltip="exhaustive = every step 1..T (paper); coarse_to_fine = strided then "
                    "refined, approximated (two objects at T=50: 6-8x a generation, not 52x); "
                    "custom = the steps listed in custom_steps.",
                ),
                io.String.Input(
                    "custom_steps", default="1-50", tooltip="Steps for 'custom', e.g. '5, 10, 20-40:2'."
                ),
                io.Int.Input(
                    "coarse_stride",
                    default=5,
                    min=1,
                    max=100,
                    tooltip="coarse_to_fine: step spacing, and levels per model call of the approximation.",
                ),
                io.Int.Input(
                    "refine_radius",
                    default=2,
                    min=0,
                    max=50,
                    tooltip="coarse_to_fine: refinement half-width.",
                ),
                io.Int.Input(
                    "max_batch",
                    default=0,
                    min=0,
                    max=4096,
                    tooltip="Rows per model call; 0 = auto: planned from the model, the latent size and the "
                    "device's total memory, never from load, so a workflow always gives the same image "
                    "(a cancel waits for the current call, a few seconds at most).",
                ),
                io.Conditioning.Input(
                    "negative", optional=True, tooltip="Negative prompt; default: the original."
                ),
                Scorer.Input(
                    "scorer",
                    optional=True,
                    tooltip="coarse_to_fine only: the search metric (the one the Mask Metric Scorer gets).",
                ),
                io.Image.Input("image", optional=True, tooltip="coarse_to_fine only: the source image."),
            ],
            outputs=[
                Candidates.Output(display_name="candidates", tooltip="Candidate latents and decoded images."),
                io.Image.Output(display_name="grid", tooltip="One labelled candidate grid per pair."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, search_mode: str | None = None) -> bool | str:
        return refuse_unknown_choices(cls, search_mode=search_mode)

    @classmethod
    def execute(
        cls,
        model: Any,
        trajectory: InversionTrajectory,
        oir_edit: OIREdit,
        original: list,
        vae: Any,
        cfg: float,
        search_mode: str,
        custom_steps: str,
        coarse_stride: int,
        refine_radius: int,
        max_batch: int,
        negative: list | None = None,
        scorer: Any = None,
        image: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        hidden = cls.hidden
        # Before any model call: a search nothing reads (its scorer's branch refused) is not run.
        refuse_unused_results(
            getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None), "candidates"
        )
        check_trajectory_source(trajectory, model_facts(model))
        edit = check_edit(oir_edit, trajectory)
        # Before any model call: every mask must hold a region on the latent grid under the rules the
        # reassembly will use (empty after resizing, covered by a later pair, overlaps under 'error').
        overlap, geometry = mask_rules_downstream(
            getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None)
        )
        grid = trajectory.latent_shape[-2:]
        region_masks(
            [pair.mask for pair in edit.pairs], (int(grid[0]), int(grid[1])), overlap, geometry=geometry
        )
        check_conditioning(original, "original")
        if negative is not None:
            check_conditioning(negative, "negative")
        host = ComfyHost(
            model,
            original,
            negative,
            guided_conditionings(edit, original),
            None,
            check_cfg(cfg),
            max_batch=max_batch or None,
        )
        result = run_search(
            host,
            trajectory,
            search_mode,
            len(edit.pairs),
            lambda latents: decode(vae, model, latents),
            custom_steps=custom_steps,
            stride=coarse_stride,
            radius=refine_radius,
            metric=None if scorer is None else check_metric(scorer),
            original=image,
            masks=[pair.mask for pair in edit.pairs],
            score_texts=edit.plan.score_texts,
            on_level=level_progress(),
            keep_levels=reassembly_levels_downstream(
                getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None), trajectory.steps
            ),
        )
        candidates, stored = result.candidates, quantize_images(result.images)
        grid, layouts = pair_candidate_grids(
            candidates, stored.float() / 255.0, titles=pair_titles(edit.pairs)
        )
        bundle = CandidateBundle(
            edit=edit,
            candidates=candidates,
            images=stored,
            steps=trajectory.steps,
            mode=search_mode,
            coarse=result.coarse,
            coarse_best=result.coarse_best,
            grid_layout=tuple(layouts),
            recipe=SearchRecipe(model, trajectory, oir_edit, original, negative, float(cfg)),
            key=candidates_key(stored, layouts),
        )
        # Under its own key, not `images`: the frontend would draw the whole grid on the node under
        # the strip; the strip crops its cells from it, and a Preview Image shows the grid once.
        saved_grid = ui.PreviewImage(grid, cls=cls).as_dict()["images"]
        return io.NodeOutput(
            bundle,
            grid,
            ui={
                "oir_images": saved_grid,
                "oir_grid": layouts,
                "oir_candidates": [bundle.key],
                "oir_stats": [candidates.stats.to_dict()],
                "oir_split": host.split_report(),
            },
        )


class OIRObjectReassembly(io.ComfyNode):
    """Per-object denoise from its optimal step, mask merge, re-inversion and target denoise."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRObjectReassembly",
            display_name="OIR Object Reassembly",
            category=CATEGORY,
            description=(
                "OIR step 5: each pair is denoised from its chosen step with its guided prompt down to the "
                "reassembly step R, or taken from the search, which keeps every exact candidate's latent at "
                "R when the queued graph gives this node's R and r as numbers (the same model, prompts and "
                "cfg needed; the UI reports which); the pair latents are merged by mask over the inverted "
                "background x_R, re-inverted r steps with the original prompt and denoised with the target "
                "prompt. A chosen step <= R starts from x_R itself (as if it were R). Overlapping masks: the "
                "later pair wins (or error). background 'preserve' (not the paper's §3.3, which repaints the "
                "whole latent) keeps the inversion's own latent outside the masks at every re-inversion and "
                "denoising level. With a VAE connected, the UI reports the background's PSNR against the "
                "source's VAE round trip."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (LoRA and patches apply)."),
                Trajectory.Input("trajectory", tooltip="From OIR DDIM Inversion."),
                OIREditType.Input("oir_edit", tooltip="From the OIR Guided Prompt Builder."),
                ChosenStepsType.Input("chosen_steps", tooltip="From the OIR Mask Metric Scorer."),
                io.Conditioning.Input(
                    "original", tooltip="Original prompt P_o (re-inversion; default negative)."
                ),
                io.Conditioning.Input("target", tooltip="Target prompt P_t for the final shared denoise."),
                io.Float.Input(
                    "cfg", default=7.5, min=0.0, max=100.0, step=0.1, tooltip="CFG scale (paper: 7.5)."
                ),
                io.Int.Input(
                    "reassembly_step",
                    default=-1,
                    min=-1,
                    max=999,
                    tooltip="R: the level where the objects merge; -1 = auto, a fifth of the inversion's "
                    "steps T (the paper's 10 of 50), which fits any T. Otherwise 0 <= R < T; OIR DDIM "
                    "Inversion checks it before its first model call.",
                ),
                io.Int.Input(
                    "reinversion_steps",
                    default=-1,
                    min=-1,
                    max=999,
                    tooltip="r: re-inversion steps after merging; -1 = auto, a fifth of T (the paper's 10 of "
                    "50), capped so R + r <= T. Otherwise 0 <= r and R + r <= T.",
                ),
                io.Combo.Input(
                    "overlap",
                    options=["later_wins", "error"],
                    default="later_wins",
                    tooltip="Rule for overlapping masks.",
                ),
                io.Int.Input(
                    "max_batch",
                    default=0,
                    min=0,
                    max=4096,
                    tooltip="Rows per model call; 0 = auto: planned from the model, the latent size and the "
                    "device's total memory, never from load, so a workflow always gives the same image "
                    "(a cancel waits for the current call, a few seconds at most).",
                ),
                io.Conditioning.Input(
                    "negative", optional=True, tooltip="Negative prompt; default: the original."
                ),
                io.Combo.Input(
                    "mask_geometry",
                    options=list(MASK_GEOMETRIES),
                    default="official",
                    tooltip="How masks reach the latent grid. official = the paper's code (a mask value >= "
                    "1/255 is inside; each latent cell takes the pixel at its top-left corner); centered = "
                    "values > 0.5, each cell takes its centre pixel.",
                ),
                io.Combo.Input(
                    "background",
                    options=list(BACKGROUND_MODES),
                    default="official",
                    tooltip="official = the paper (§3.3): the last R + r levels denoise the whole latent, so "
                    "the unedited background drifts from the source. preserve = after every re-inversion "
                    "and denoising step the latent outside the masks is the inversion's own latent at that "
                    "level (blended-latent style): the background stays the source's; no extra model call.",
                ),
                io.Int.Input(
                    "feather",
                    default=0,
                    min=0,
                    max=MAX_FEATHER,
                    tooltip="preserve only: boundary ramp in latent cells (8 px each); 0 = hard edge. The "
                    "kept weight is the smoothstep of the distance to the masks over feather + 1 cells; "
                    "inside the masks nothing is overwritten.",
                ),
                io.Vae.Input(
                    "vae",
                    optional=True,
                    tooltip="Optional: decodes the result and the source latent to report the background's "
                    "PSNR (cells beyond the feather band) against the source's VAE round trip.",
                ),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The edited latent, for VAE Decode.")],
        )

    @classmethod
    def validate_inputs(
        cls, overlap: str | None = None, mask_geometry: str | None = None, background: str | None = None
    ) -> bool | str:
        return refuse_unknown_choices(
            cls, overlap=overlap, mask_geometry=mask_geometry, background=background
        )

    @classmethod
    def execute(
        cls,
        model: Any,
        trajectory: InversionTrajectory,
        oir_edit: OIREdit,
        chosen_steps: ChosenSteps,
        original: list,
        target: list,
        cfg: float,
        reassembly_step: int,
        reinversion_steps: int,
        overlap: str,
        max_batch: int,
        negative: list | None = None,
        mask_geometry: str = "official",
        background: str = "official",
        feather: int = 0,
        vae: Any = None,
    ) -> io.NodeOutput:
        check_choice(mask_geometry, MASK_GEOMETRIES, "mask_geometry")
        validate_background(background, feather)
        check_trajectory_source(trajectory, model_facts(model))
        edit = check_edit(oir_edit, trajectory)
        check_conditioning(original, "original")
        check_conditioning(target, "target")
        if not isinstance(chosen_steps, ChosenSteps) or len(chosen_steps.steps) != len(edit.pairs):
            raise OIRInputError(
                "chosen_steps",
                getattr(chosen_steps, "steps", chosen_steps),
                f"not one chosen step for each of the {len(edit.pairs)} edit pairs",
                "connect the Mask Metric Scorer that scored this edit's candidates",
            )
        host = ComfyHost(
            model,
            original,
            negative,
            guided_conditionings(edit, original),
            target,
            check_cfg(cfg),
            max_batch=max_batch or None,
        )
        level, _ = validate_reassembly(trajectory.steps, reassembly_step, reinversion_steps)
        searched, reasons = chosen_steps.searched_latents(
            SearchRecipe(model, trajectory, oir_edit, original, negative, float(cfg)), level
        )
        result = reassemble(
            host,
            trajectory,
            list(chosen_steps.steps),
            [pair.mask for pair in edit.pairs],
            reassembly_step,
            reinversion_steps,
            overlap,  # type: ignore[arg-type]
            on_level=level_progress(),
            mask_geometry=mask_geometry,  # type: ignore[arg-type]
            searched=searched,
            background_mode=background,
            feather=feather,
        )
        if not torch.isfinite(result.latent).all():
            raise OIRInputError(
                "model",
                "NaN/inf latent",
                "the reassembled latent is not finite",
                "lower cfg or check the model/LoRA",
            )
        pairs = [
            {"step": step, "source": source, "why_denoised": reason if source == "denoised" else ""}
            for step, source, reason in zip(chosen_steps.steps, result.pair_sources, reasons)
        ]
        report = {
            "reassembly_step": result.reassembly_step,
            "reinversion_steps": result.reinversion_steps,
            "pairs": pairs,
            "background": background,
            "feather": feather,
            # dB over the cells beyond the feather band, vs the source's VAE round trip (None: no VAE)
            "background_psnr": None if vae is None else _background_psnr(vae, model, trajectory, result),
        }
        return io.NodeOutput(
            {"samples": model_space_out(model, result.latent[None].clone())},
            ui={"oir_reassembly": [report], "oir_split": host.split_report()},
        )


def _background_psnr(vae: Any, model: Any, trajectory: InversionTrajectory, result: Any) -> float | None:
    """PSNR of the decoded edit against the decoded source latent (the VAE round trip), outside the
    masks beyond the feather band (:func:`oir_core.reassembly.background_psnr`)."""
    images = decode(vae, model, torch.stack([result.latent, trajectory.source_latent().to(result.latent)]))
    return background_psnr(images[0], images[1], result.preserve_weights)
