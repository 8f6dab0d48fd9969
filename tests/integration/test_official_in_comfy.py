"""``official`` through the real nodes inside ComfyUI equals the official loops on the same UNet.

The reference (``tests/core/official_loops.py``, written from the official code's definitions)
calls the tiny UNet's raw ``diffusion_model(z, t, context)`` in DDPM space with integer timesteps
and the tiny CLIP's encodings; the pack runs OIR DDIM Inversion, OIR Parallel Step Search and OIR
Object Reassembly, i.e. ComfyUI's CFGGuider, its EPS model sampling, the latent format's scale
factor and the nodes' conversions. Comparisons are in the VAE's latent space (``process_out``).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import torch
from official_loops import OfficialLoops

STEPS = 10
CFG = 7.5
IMAGE = 64
RELATIVE = 5e-5
"""float32 through a UNet in differently composed batches (ComfyUI batches many candidates and puts
cond before uncond; the reference batches one latent's uncond and cond as the official code does),
amplified by CFG 7.5: the first deviations above 1e-5 are 1.3e-5 (ComfyUI 0.3.64) and 1.5e-5
(0.33.0). Every convention the official code differs in moves these latents by 5e-4 or more."""


def _run(node: Any, **inputs: Any) -> tuple:
    return tuple(node.execute(**inputs).args)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def test_official_pipeline_through_the_nodes_equals_the_official_loops(
    pack: ModuleType, nodes: dict[str, Any], tiny_unet: Any, tiny_clip: Any, tiny_vae: Any
) -> None:
    masks = torch.zeros(2, 1, IMAGE, IMAGE)
    masks[0, :, 8:40, 4:28] = 1.0
    masks[1, :, 24:56, 36:60] = 1.0
    (pairs,) = _run(nodes["OIREditPair"], mask=masks[0], source="dog", target="cat", occurrence=0)
    (pairs,) = _run(
        nodes["OIREditPair"], mask=masks[1], source="gift", target="cake", occurrence=0, edit_pairs=pairs
    )
    original, target, edit, _ = _run(
        nodes["OIRGuidedPromptBuilder"],
        clip=tiny_clip,
        original_prompt="a dog sitting next to a gift",
        edit_pairs=pairs,
    )
    image = torch.rand(1, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(11))
    samples = tiny_vae.encode(image)
    trajectory, _ = _run(
        nodes["OIRDDIMInversion"],
        model=tiny_unet,
        latent={"samples": samples},
        original=original,
        steps=STEPS,
        scheduler="ddim_uniform",
        convention="official",
    )
    candidates, _grid = _run(
        nodes["OIRParallelStepSearch"],
        model=tiny_unet,
        trajectory=trajectory,
        oir_edit=edit,
        original=original,
        vae=tiny_vae,
        cfg=CFG,
        search_mode="exhaustive",
        custom_steps="",
        coarse_stride=5,
        refine_radius=2,
        max_batch=0,
    )

    # The reference: the same UNet, called directly, in DDPM space.
    unet = tiny_unet.model.diffusion_model
    scale = float(tiny_unet.get_model_object("latent_format").scale_factor)

    def eps(z: torch.Tensor, t: int, contexts: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            times = torch.full((z.shape[0],), float(t))
            return unet(z.float(), times, context=torch.cat(contexts)).double()

    loops = OfficialLoops(eps, STEPS, CFG)
    texts = {"original": original[0][0], "target": target[0][0]}
    guided = [encoding[0][0] for encoding in edit.guided_encodings]
    reference = loops.inversion(samples.double() * scale, texts["original"])

    levels = trajectory.level_sigmas.tolist()
    for level, sigma in enumerate(levels):
        ours = trajectory.latents[level] / (1 + sigma**2) ** 0.5
        assert _relative(ours, reference[level][0]) < RELATIVE, f"inversion level {level}"

    found = candidates.candidates
    for index, (pair, step) in enumerate(zip(found.pair_ids, found.steps)):
        expected = loops.candidate(reference, step, guided[pair], texts["original"])[0]
        assert _relative(found.latents[index], expected) < RELATIVE, f"candidate pair {pair} step {step}"

    payloads = sys.modules[f"{pack.__name__}.nodes.payloads"]
    chosen = payloads.ChosenSteps(steps=(7, 4), searched=(7, 4), tables=(), overridden=(True, True))
    (edited,) = _run(
        nodes["OIRObjectReassembly"],
        model=tiny_unet,
        trajectory=trajectory,
        oir_edit=edit,
        chosen_steps=chosen,
        original=original,
        target=target,
        cfg=CFG,
        reassembly_step=3,
        reinversion_steps=3,
        overlap="error",
        max_batch=0,
    )
    grid = torch.nn.functional.interpolate(masks.double(), size=samples.shape[-2:], mode="nearest")[:, 0]
    expected = loops.reassembly(reference, [7, 4], grid, guided, texts["original"], texts["target"], 3, 3)
    assert _relative(edited["samples"][0] * scale, expected[0]) < RELATIVE
