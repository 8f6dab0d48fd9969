"""SDXL, SD3 and Flux architectures through every OIR node (ARCHITECTURE.md §7).

Tiny random-weight models built from ComfyUI's own ``supported_models`` configs and ``model_base``
classes (``tiny_models.build_tiny_family_*``): SDXL's UNet with ``adm`` (pooled CLIP-G output and
size embeddings) and its CLIP-L + CLIP-G encoder; SD3's MMDiT (16 latent channels, context padded
to 4096, shifted discrete flow) with CLIP-L + CLIP-G; Flux-dev's double/single-stream transformer
with its guidance embedding and CLIP-L + T5 encoder. What the model receives is read by a UNet
function wrapper, ComfyUI's own hook around every model call, so the test sees exactly the rows
each forward got: which branch (cond / uncond), the pooled vector ``y`` and Flux's ``guidance``.
"""

from __future__ import annotations

import itertools
from typing import Any

import node_helpers
import pytest
import torch
from engine_fixtures import clean_latent, prompt_means, relative_path_error
from oir_graph import IMAGE, STEPS, ForwardRecorder, masks, run_graph, run_node

from oir_core import FunctionHost, invert
from oir_core.analytic import GaussianModel
from oir_core.reassembly import preserve_weights

FAMILIES = ("sdxl", "sd3", "flux")
LATENT_CHANNELS = {"sdxl": 4, "sd3": 16, "flux": 16}
AUTO_CONVENTION = {"sdxl": "official", "sd3": "euler", "flux": "euler"}
"""What ``auto`` must pick: SDXL is discrete variance-preserving (the official premise holds)."""

SDXL_SIZE = {"width": 96, "height": 80, "crop_w": 8, "crop_h": 4, "target_width": 112, "target_height": 72}
"""Size conditioning set on the original prompt, as CLIPTextEncodeSDXL sets it (ComfyUI's default is
768 for every size, so a guided prompt that lost these would carry other embeddings)."""
FLUX_GUIDANCE = 2.0
"""FluxGuidance value set on the original and target prompts (ComfyUI's default is 3.5)."""


def _tiny() -> Any:
    import tiny_models

    return tiny_models


@pytest.fixture(scope="module")
def family_models() -> dict[str, tuple[Any, Any, Any]]:
    """``family -> (MODEL, CLIP, VAE)``, built once per module."""
    tiny = _tiny()
    return {
        family: (
            tiny.build_tiny_family_model(family, seed=0),
            tiny.build_tiny_family_clip(family, seed=3),
            tiny.build_tiny_family_vae(family, seed=4),
        )
        for family in FAMILIES
    }


def _spied(model: Any) -> tuple[Any, ForwardRecorder]:
    spy = ForwardRecorder()
    patched = model.clone()
    patched.set_model_unet_function_wrapper(spy)
    return patched, spy


def _family_hook(family: str) -> Any:
    """What an artist attaches to the original and target prompts of each family."""
    if family == "sdxl":
        return lambda conditioning: node_helpers.conditioning_set_values(conditioning, dict(SDXL_SIZE))
    if family == "flux":
        return lambda conditioning: node_helpers.conditioning_set_values(
            conditioning, {"guidance": FLUX_GUIDANCE}
        )
    return None


def _pooled(clip: Any, text: str) -> torch.Tensor:
    return _tiny().encode_prompt(clip, text)[0][1]["pooled_output"].float().flatten()


def _matches(row: torch.Tensor, references: list[torch.Tensor]) -> int:
    """Index of the reference ``row`` starts with (to 1e-5), or -1."""
    for index, reference in enumerate(references):
        if torch.allclose(row[: reference.numel()], reference, atol=1e-5, rtol=1e-5):
            return index
    return -1


def _sdxl_size_embedding() -> torch.Tensor:
    """SDXL's size part of ``adm`` from ComfyUI's own Timestep(256) embedder (order of
    ``model_base.SDXL.encode_adm``: height, width, crop_h, crop_w, target_height, target_width)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep

    embedder = Timestep(256)
    values = [SDXL_SIZE[k] for k in ("height", "width", "crop_h", "crop_w", "target_height", "target_width")]
    return torch.cat([embedder(torch.tensor([float(v)])) for v in values], dim=-1).flatten()


@pytest.mark.parametrize("search_mode", ["exhaustive", "coarse_to_fine"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_runs_every_node_and_guided_prompts_keep_its_conditioning(
    nodes, family_models, scorer_folder, family: str, search_mode: str
) -> None:
    base, clip, vae = family_models[family]
    model, spy = _spied(base)
    cfg = 1.0 if family == "flux" else 5.0  # Flux-dev: guidance-distilled, real CFG off
    out = run_graph(
        nodes,
        model,
        clip,
        vae,
        scorer_folder,
        search_mode=search_mode,
        conditioning_hook=_family_hook(family),
        cfg=cfg,
    )
    channels = LATENT_CHANNELS[family]
    trajectory = out["trajectory"]
    assert trajectory.convention == AUTO_CONVENTION[family]
    assert trajectory.latents.shape == (STEPS + 1, channels, IMAGE // 8, IMAGE // 8)
    assert out["edited"]["samples"].shape == (1, channels, IMAGE // 8, IMAGE // 8)
    assert out["image"].shape == (1, IMAGE, IMAGE, 3) and torch.isfinite(out["image"]).all()
    assert torch.isfinite(out["candidates"].float_images()).all()
    assert len(out["chosen"].steps) == 2

    # Every forward of every stage: each cond row carries the pooled output of one of the edit's
    # prompts (both guided prompts among them), each uncond row the original's (the default
    # negative), and every row what the family attached to the original.
    rows = spy.rows("y")
    prompts = [*out["prompts"]["guided"], "a dog sitting next to a gift", out["prompts"]["target"]]
    pooled = [_pooled(clip, text) for text in prompts]
    assert rows[0], "no cond rows reached the model"
    assert {_matches(row, pooled) for row in rows[0]} == {0, 1, 2, 3}
    assert all(_matches(row, pooled) == 2 for row in rows[1])
    if family == "sdxl":
        size = _sdxl_size_embedding()
        width = pooled[0].numel()
        assert all(torch.allclose(row[width:], size, atol=1e-5) for row in rows[0] + rows[1])
    if family == "flux":
        guidance = spy.rows("guidance")
        assert len(guidance[0]) == len(rows[0])
        assert all(float(g) == pytest.approx(FLUX_GUIDANCE) for g in guidance[0])
        # cfg 1: ComfyUI skips the unconditional branch, so no stage evaluates a negative.
        assert rows[1] == [] and guidance[1] == []
    else:
        assert rows[1], "cfg > 1 must evaluate the negative"
    contexts = {call["context"][-1] for call in spy.calls}
    assert contexts == {{"sdxl": 128, "sd3": 4096, "flux": 64}[family]}


def _lora_on_attention(model: Any, seed: int = 5) -> dict[str, torch.Tensor]:
    """A LoRA (kohya ``lora_unet_`` keys, as ComfyUI's key map reads them) on every attention
    projection matrix of the model, rank 4, non-zero."""
    generator = torch.Generator().manual_seed(seed)
    lora: dict[str, torch.Tensor] = {}
    for key, weight in model.model.state_dict().items():
        name = key.removeprefix("diffusion_model.")
        if weight.ndim != 2 or not key.endswith(".weight") or not any(t in name for t in ("attn", "qkv")):
            continue
        prefix = "lora_unet_" + name.removesuffix(".weight").replace(".", "_")
        lora[f"{prefix}.lora_down.weight"] = torch.randn((4, weight.shape[1]), generator=generator) * 0.3
        lora[f"{prefix}.lora_up.weight"] = torch.randn((weight.shape[0], 4), generator=generator) * 0.3
        lora[f"{prefix}.alpha"] = torch.tensor(4.0)
    return lora


def _control_spy(record: Any) -> Any:
    """A conditioning ControlNet that adds nothing and calls ``record(t, transformer_options)`` on
    every forward ComfyUI gives it (a copy, as ComfyUI makes per sampling, records the same way)."""
    import comfy.controlnet

    class ControlSpy(comfy.controlnet.ControlBase):
        def get_control(self, x_noisy, t, cond, batched_number, transformer_options):  # type: ignore[no-untyped-def]
            record(t, transformer_options)
            return None

        def copy(self) -> ControlSpy:
            twin = ControlSpy()
            self.copy_to(twin)
            return twin

    return ControlSpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_and_a_conditioning_controlnet_act_on_every_family(
    nodes, family_models, scorer_folder, family: str
) -> None:
    """A LoRA loaded by ComfyUI's own loader changes the edit; a ControlNet attached to the original
    prompt reaches the guided rows of the search (ComfyUI calls it for every family's forward)."""
    import comfy.sd

    base, clip, vae = family_models[family]
    lora = _lora_on_attention(base)
    patched_model, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0.0)
    assert len(patched_model.patches) == len(lora) // 3, "ComfyUI did not map every LoRA key"

    branches_seen: set[int] = set()
    walks_seen: set[tuple[float, ...]] = set()

    def seen(t: torch.Tensor, options: dict[str, Any]) -> None:
        walks_seen.add(tuple(round(float(s), 5) for s in options["sample_sigmas"]))
        branches_seen.update(options.get("cond_or_uncond", []))

    control = _control_spy(seen)
    family_hook = _family_hook(family)

    def hook(conditioning: list) -> list:
        conditioning = family_hook(conditioning) if family_hook else conditioning
        return node_helpers.conditioning_set_values(
            conditioning, {"control": control, "control_apply_to_uncond": True}
        )

    cfg = 1.0 if family == "flux" else 5.0
    plain = run_graph(nodes, base, clip, vae, scorer_folder, conditioning_hook=family_hook, cfg=cfg)
    patched = run_graph(nodes, patched_model, clip, vae, scorer_folder, conditioning_hook=hook, cfg=cfg)
    assert (patched["edited"]["samples"] - plain["edited"]["samples"]).abs().max() > 1e-4
    search_walk = tuple(round(float(s), 5) for s in patched["trajectory"].level_sigmas.flip(0))
    assert search_walk in walks_seen and 0 in branches_seen


@pytest.mark.parametrize(
    ("family", "scheduler", "expected"),
    [
        ("sdxl", "ddim_uniform", "official"),
        ("sdxl", "karras", "euler"),
        ("sd3", "simple", "euler"),
        ("sd3", "normal", "euler"),
        ("flux", "simple", "euler"),
        ("flux", "beta", "euler"),
    ],
)
def test_auto_convention_follows_the_exact_path_on_the_familys_schedule(
    nodes, family_models, comfy_host, family: str, scheduler: str, expected: str
) -> None:
    """``auto`` on the family's model picks ``expected``, and that convention, run on ComfyUI's own
    schedule for the family (SDXL's discrete VP table; SD3's discrete flow with shift 3; Flux's
    time-shifted flow), follows the exact probability-flow path of the Gaussian analytic model
    (variance-preserving or rectified-flow, like the family) ever closer as the step count grows."""
    model, clip, _ = family_models[family]
    original = _tiny().encode_prompt(clip, "a dog sitting next to a gift")
    latent = {"samples": torch.zeros(1, LATENT_CHANNELS[family], 4, 4)}
    parameterization = "flow" if family in ("sd3", "flux") else "vp"
    analytic = GaussianModel(prompt_means(1), std=0.5, parameterization=parameterization)
    x0 = clean_latent(analytic)
    host = FunctionHost(
        original=analytic.denoiser(0), guided=analytic.denoiser(0), target=analytic.denoiser(0)
    )
    errors = []
    for steps in (10, 20, 50, 100):
        schedule = comfy_host.get_sigmas(model, scheduler, steps)
        (trajectory, _), _ = run_node(
            nodes["OIRDDIMInversion"],
            model=model,
            latent=latent,
            original=original,
            steps=steps,
            scheduler=scheduler,
            convention="auto",
        )
        assert trajectory.convention == expected
        torch.testing.assert_close(trajectory.level_sigmas[1:], schedule.flip(0)[1:], rtol=0, atol=0)
        if parameterization == "flow":
            assert float(schedule[0]) == pytest.approx(1.0)
        exact = invert(host, x0, schedule, expected, clean_sigma=comfy_host.clean_sigma(model))
        errors.append(relative_path_error(analytic, exact, x0))
    assert all(later < earlier * 0.8 for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.1, errors


def test_a_real_controlnet_file_acts_on_the_sdxl_edit(nodes, family_models, scorer_folder, tmp_path) -> None:
    """A tiny SDXL ControlNet file (with ``adm``), loaded by ComfyUI's own loader and applied by its
    ControlNetApplyAdvanced node to the original and target prompts, changes every OIR stage's
    output: the guided prompts inherit it."""
    import comfy.controlnet
    from comfy_server import tiny_files_module

    import nodes as comfy_nodes

    base, clip, vae = family_models["sdxl"]
    path = tiny_files_module().write_tiny_controlnet(
        tmp_path / "tiny-sdxl-controlnet.safetensors", family="sdxl"
    )
    control_net = comfy.controlnet.load_controlnet(str(path))
    hint = torch.rand(1, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(9))
    size = _family_hook("sdxl")

    def with_control(conditioning: list) -> list:
        positive, _ = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
            size(conditioning), size(conditioning), control_net, hint, 1.0, 0.0, 1.0, vae=vae
        )
        return positive

    plain = run_graph(nodes, base, clip, vae, scorer_folder, conditioning_hook=size)
    controlled = run_graph(nodes, base, clip, vae, scorer_folder, conditioning_hook=with_control)
    for stage in ("inverted", "edited"):
        assert (controlled[stage]["samples"] - plain[stage]["samples"]).abs().max() > 1e-4, stage
    difference = (controlled["candidates"].float_images() - plain["candidates"].float_images()).abs()
    changed = difference.flatten(1).amax(1).view(2, STEPS) > 0
    # Step 1 of the official convention is the encoded photo itself (no model call); every other
    # candidate of both pairs was denoised by the guided prompts, which inherit the ControlNet.
    assert not changed[:, 0].any() and changed[:, 1:].all(), changed


@pytest.mark.parametrize("family", ("sd15", *FAMILIES))
def test_preserve_keeps_the_source_outside_with_lora_and_controlnet_on_every_step(
    nodes, family_models, scorer_folder, comfy_host, request, family: str
) -> None:
    """``background='preserve'`` through the node on every family (official and euler conventions):
    the edited latent equals the source's clean latent beyond the feather band exactly, a LoRA and a
    conditioning ControlNet still act on every model call (the same rows and controlled levels as
    ``official``), and the UI reports the background PSNR of both."""
    import comfy.sd

    if family == "sd15":
        base, clip, vae = (request.getfixturevalue(name) for name in ("tiny_unet", "tiny_clip", "tiny_vae"))
    else:
        base, clip, vae = family_models[family]
    lora = _lora_on_attention(base)
    patched, _ = comfy.sd.load_lora_for_models(base, None, lora, 1.0, 0.0)
    calls: list[float] = []

    control = _control_spy(lambda t, options: calls.append(float(t.flatten()[0])))
    family_hook = _family_hook(family) if family != "sd15" else None

    def hook(conditioning: list) -> list:
        conditioning = family_hook(conditioning) if family_hook else conditioning
        return node_helpers.conditioning_set_values(conditioning, {"control": control})

    cfg = 1.0 if family == "flux" else 5.0
    runs = {}
    for name in ("official", "preserve"):
        spied, spy = _spied(patched)
        calls.clear()
        out = run_graph(
            nodes,
            spied,
            clip,
            vae,
            scorer_folder,
            conditioning_hook=hook,
            cfg=cfg,
            reassembly_options={"background": name, "feather": 1, "vae": vae},
        )
        runs[name] = (out, sum(spy.row_counts()), sorted(set(calls)))
    out, rows, control_calls = runs["preserve"]
    trajectory = out["trajectory"]
    level = float(trajectory.level_sigmas[0])
    # the convention's clean source latent: official lands at sigma_min (x_0 / sqrt(1 + s^2))
    source = trajectory.latents[0] / (1.0 + level**2) ** 0.5
    expected = comfy_host.model_space_out(base, source[None].clone())  # the node's elementwise mapping
    edited = out["edited"]["samples"]
    report = out["reassembly_ui"]["oir_reassembly"][0]
    left, right = (m[0, ::8, ::8] for m in masks())
    grid = 1.0 - torch.maximum(left, right)
    beyond = (preserve_weights(grid, 1) == 1).expand_as(edited[0])[None]
    assert beyond.any() and torch.equal(edited[beyond], expected[beyond])
    assert (runs["official"][0]["edited"]["samples"][beyond] - expected[beyond]).abs().max() > 1e-3
    # LoRA and ControlNet on every step: the same model rows and controlled levels as official
    # (chunk sizes follow the machine's speed, so calls are compared by rows and levels)
    assert rows == runs["official"][1] and control_calls == runs["official"][2] and control_calls
    assert len(patched.patches) == len(lora) // 3
    official_report = runs["official"][0]["reassembly_ui"]["oir_reassembly"][0]
    assert report["background"] == "preserve" and official_report["background"] == "official"
    assert report["background_psnr"] > official_report["background_psnr"]
