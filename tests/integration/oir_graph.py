"""The two-object OIR graph, node by node, as the example workflow wires it (shared by the node tests).

Not a test module: ``test_nodes.py`` and ``test_model_families.py`` import it.
"""

from __future__ import annotations

import json
from typing import Any

import torch

STEPS = 5  # divides 1000, so ComfyUI's ddim_uniform gives exactly STEPS levels
IMAGE = 64  # pixels; the tiny VAE is 8x, so latents are 8x8


class ForwardRecorder:
    """Records every model forward through ComfyUI's UNet function wrapper (no effect on the result):
    its rows, branches (cond 0 / uncond 1), ``y``, Flux's ``guidance``, the context's shape and
    whether a ControlNet rode along. ComfyUI deep-copies model options when a model is cloned; the
    recorder returns itself from ``deepcopy``, so a clone made inside a node still records here."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> ForwardRecorder:
        return self

    def __call__(self, apply_model: Any, args: dict[str, Any]) -> torch.Tensor:
        c = args["c"]
        self.calls.append(
            {
                "rows": int(args["input"].shape[0]),
                "branches": list(args["cond_or_uncond"]),
                "y": None if c.get("y") is None else c["y"].detach().float().cpu().clone(),
                "guidance": None if c.get("guidance") is None else c["guidance"].detach().float().cpu(),
                "context": tuple(c["c_crossattn"].shape),
                "control": c.get("control") is not None,
            }
        )
        return apply_model(args["input"], args["timestep"], **c)

    def rows(self, key: str) -> dict[int, list[torch.Tensor]]:
        """``branch -> [per-row value]`` over every call (a call's rows are split per branch chunk)."""
        found: dict[int, list[torch.Tensor]] = {0: [], 1: []}
        for call in self.calls:
            if call[key] is None:
                continue
            chunks = call[key].chunk(len(call["branches"]))
            for branch, chunk in zip(call["branches"], chunks):
                found[branch].extend(chunk)
        return found

    def row_counts(self) -> list[int]:
        """Rows of every forward, in order."""
        return [call["rows"] for call in self.calls]


def masks() -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.zeros(1, IMAGE, IMAGE)
    left[:, 8:40, 4:28] = 1.0
    right = torch.zeros(1, IMAGE, IMAGE)
    right[:, 24:56, 36:60] = 1.0
    return left, right


def image_pixels() -> torch.Tensor:
    generator = torch.Generator().manual_seed(11)
    return torch.rand(1, IMAGE, IMAGE, 3, generator=generator)


def run_node(node: Any, **inputs: Any) -> tuple:
    output = node.execute(**inputs)
    return tuple(output.args), output.ui


def run_graph(
    nodes: dict[str, Any],
    model: Any,
    clip: Any,
    vae: Any,
    scorer_name: str,
    search_mode: str = "exhaustive",
    max_batch: int = 0,
    override: str = "",
    conditioning_hook: Any = None,
    metric: dict[str, Any] | None = None,
    cfg: float = 5.0,
    reassembly_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The two-object OIR graph, node by node, exactly as the example workflow wires it
    (``reassembly_options``: more inputs of OIR Object Reassembly, e.g. ``background``)."""
    left, right = masks()
    (pairs,), _ = run_node(nodes["OIREditPair"], mask=left, source="dog", target="cat", occurrence=0)
    (pairs,), _ = run_node(
        nodes["OIREditPair"], mask=right, source="gift", target="cake", occurrence=0, edit_pairs=pairs
    )
    (original, target, edit, prompts), _ = run_node(
        nodes["OIRGuidedPromptBuilder"],
        clip=clip,
        original_prompt="a dog sitting next to a gift",
        edit_pairs=pairs,
    )
    if conditioning_hook is not None:
        original, target = conditioning_hook(original), conditioning_hook(target)
    image = image_pixels()
    latent = {"samples": vae.encode(image)}
    (trajectory, inverted), _ = run_node(
        nodes["OIRDDIMInversion"],
        model=model,
        latent=latent,
        original=original,
        steps=STEPS,
        scheduler="ddim_uniform",
        convention="auto",
    )
    (scorer,), _ = run_node(
        nodes["OIRLoadCLIPScorer"],
        clip_name=scorer_name,
        backend="auto",
        device="cpu",
        precision="fp32",
        **(metric or {}),
    )
    (candidates, grid), search_ui = run_node(
        nodes["OIRParallelStepSearch"],
        model=model,
        trajectory=trajectory,
        oir_edit=edit,
        original=original,
        vae=vae,
        cfg=cfg,
        search_mode=search_mode,
        custom_steps="1-5",
        coarse_stride=2,
        refine_radius=1,
        max_batch=max_batch,
        scorer=scorer,
        image=image,
    )
    (chosen, plot, chosen_grid, report), score_ui = run_node(
        nodes["OIRMaskMetricScorer"],
        candidates=candidates,
        scorer=scorer,
        image=image,
        step_override=override,
    )
    (edited,), reassembly_ui = run_node(
        nodes["OIRObjectReassembly"],
        model=model,
        trajectory=trajectory,
        oir_edit=edit,
        chosen_steps=chosen,
        original=original,
        target=target,
        cfg=cfg,
        reassembly_step=2,
        reinversion_steps=2,
        overlap="later_wins",
        max_batch=max_batch,
        **(reassembly_options or {}),
    )
    return {
        "prompts": json.loads(prompts),
        "trajectory": trajectory,
        "inverted": inverted,
        "candidates": candidates,
        "grid": grid,
        "search_ui": search_ui,
        "chosen": chosen,
        "plot": plot,
        "chosen_grid": chosen_grid,
        "report": json.loads(report),
        "score_ui": score_ui,
        "edited": edited,
        "reassembly_ui": reassembly_ui,
        "image": vae.decode(edited["samples"]),
        "original": original,
        "target": target,
    }
