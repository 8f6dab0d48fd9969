"""Tiny in-memory ComfyUI models with deterministic random weights (ARCHITECTURE.md §7).

Plain functions, so both the pytest fixtures and a test-only custom node (for headless-server
tests) can build the same models. Importing this module imports ``comfy``: ComfyUI must already be
importable and, outside a ComfyUI process, put in CPU mode first (``comfy_env.setup_comfyui``).

ComfyUI builds layers with ``comfy.ops.disable_weight_init``, so parameters start as
``torch.empty`` garbage; every builder here initialises all of them from its ``seed``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.text_encoders.flux
import comfy.text_encoders.sd3_clip
import torch
from comfy.ldm.models.autoencoder import AutoencoderKL
from comfy.model_base import ModelType
from comfy.supported_models_base import ClipTarget

FULL_SIZE_UNETS: dict[str, dict[str, Any]] = {
    "sd15": {
        # comfy/model_detection.py's SD15 dict (860 M parameters)
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": 4,
        "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": 768,
        "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    },
    "sdxl": {
        # comfy/model_detection.py's SDXL dict (2.6 G parameters)
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": 4,
        "use_spatial_transformer": True,
        "legacy": False,
        "num_classes": "sequential",
        "adm_in_channels": 2816,
        "in_channels": 4,
        "model_channels": 320,
        "num_res_blocks": [2, 2, 2],
        "transformer_depth": [0, 0, 2, 2, 10, 10],
        "channel_mult": [1, 2, 4],
        "transformer_depth_middle": 10,
        "use_linear_in_transformer": True,
        "context_dim": 2048,
        "num_head_channels": 64,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    },
}
"""Full-size UNet configs (the real architectures; built with random or no weights, never loaded)."""

FULL_SIZE_POOLED = {"sd15": None, "sdxl": 1280}
"""Width of the pooled text output a family's conditioning carries (SDXL: CLIP-G's, for ``adm``)."""

TWO_LEVELS: dict[str, Any] = {
    "dtype": torch.float32,
    "num_res_blocks": [1, 1],
    "transformer_depth": [1, 1],
    "channel_mult": [1, 2],
    "transformer_depth_output": [1, 1, 1, 1],
}
"""How the tiny UNets shrink ComfyUI's detection dicts: two levels, one block and transformer each."""

TINY_UNET_CONFIG: dict[str, Any] = {
    # ComfyUI's SD15 detection dict, shrunk: 2 levels, 32 channels.
    **FULL_SIZE_UNETS["sd15"],
    **TWO_LEVELS,
    "model_channels": 32,
    "context_dim": 64,
}
"""UNet config: spatial sizes must be divisible by 2 (one downsample)."""

TINY_CLIP_CONFIG: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
}
"""Overrides of ComfyUI's bundled CLIP-L text config: gives ``[1, 77, 64]`` conditionings."""

TINY_VAE_DDCONFIG: dict[str, Any] = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "attn_resolutions": [],
    "dropout": 0.0,
}
"""AutoencoderKL config: 8x downscale (three downsamples), 4 latent channels, GroupNorm(32)."""

LATENT_CHANNELS = 4
CONTEXT_DIM = 64
MIDDLE_CHANNELS = TINY_UNET_CONFIG["model_channels"] * TINY_UNET_CONFIG["channel_mult"][-1]
"""Channels of the UNet's middle block (what a ControlNet's ``"middle"`` residual must match)."""

MODEL_TYPES: dict[str, ModelType] = {
    "eps": ModelType.EPS,
    "v": ModelType.V_PREDICTION,
    "flow": ModelType.FLOW,
}


def init_weights_(module: torch.nn.Module, seed: int, gain: float = 1.0, bias_std: float = 0.02) -> None:
    """Deterministically initialise every parameter of ``module`` in place.

    Matrices / kernels (ndim >= 2): ``N(0, (gain / sqrt(fan_in))^2)``, which keeps activations
    O(1) so outputs depend visibly on inputs and prompts yet stay finite. 1-D ``*.weight``
    (norm scales): 1. Other 1-D / 0-D parameters (biases, logit scale): ``N(0, bias_std^2)``.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim >= 2:
                fan_in = math.prod(param.shape[1:])
                values = torch.randn(param.shape, generator=generator) * (gain / math.sqrt(fan_in))
            elif name.endswith("weight"):
                values = torch.ones(param.shape)
            else:
                values = torch.randn(param.shape, generator=generator) * bias_std
            param.copy_(values.to(dtype=param.dtype))


def diffusion_patcher(
    make_model: Callable[[], comfy.model_base.BaseModel],
    seed: int | None,
    load_device: torch.device,
    offload_device: torch.device,
    fill_buffers: Callable[[torch.nn.Module], None] | None = None,
) -> comfy.model_patcher.ModelPatcher:
    """A MODEL with random weights, wrapped and loaded the way ComfyUI's checkpoint loaders do it.

    The patcher is ``comfy.sd``'s ``CoreModelPatcher``: ``ModelPatcherDynamic`` once ComfyUI 0.33's
    ``main.py`` has turned dynamic VRAM on, the classic ``ModelPatcher`` otherwise (0.3.64 has no
    ``CoreModelPatcher``). Under dynamic VRAM ComfyUI's layers are built without weights and receive
    them from ``load_model_weights(..., assign=True)``, so the weights are drawn (:func:`init_weights_`,
    ``seed``; ``None`` keeps ``torch.empty``) in a second build with dynamic VRAM off and loaded.
    ``fill_buffers`` writes buffers a checkpoint carries but ComfyUI builds empty (SD3's ``pos_embed``).
    """
    memory_management = getattr(comfy, "memory_management", None)
    lazy_layers = bool(getattr(memory_management, "aimdo_enabled", False))
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    if lazy_layers:
        memory_management.aimdo_enabled = False
        try:
            source = make_model()
        finally:
            memory_management.aimdo_enabled = True
    else:
        source = make_model()
    if seed is not None:
        init_weights_(source.diffusion_model, seed)
    if fill_buffers is not None:
        fill_buffers(source.diffusion_model)
    model = make_model() if lazy_layers else source
    patcher = patcher_class(model, load_device=load_device, offload_device=offload_device)
    if lazy_layers:
        model.load_model_weights(source.diffusion_model.state_dict(), "", assign=patcher.is_dynamic())
        empty = [name for name, module in model.named_modules() if getattr(module, "weight", 0) is None]
        assert not empty, f"layers left without weights: {empty[:5]}"
    model.eval()
    return patcher


def build_full_size_unet(
    family: str,
    dtype: torch.dtype,
    device: torch.device,
    load_device: torch.device | None = None,
    offload_device: torch.device | None = None,
    seed: int | None = None,
) -> comfy.model_patcher.ModelPatcher:
    """A full-size SD1.5 or SDXL EPS UNet as a ComfyUI MODEL, built on ``device``.

    ``seed=None`` leaves the weights as ComfyUI's ``disable_weight_init`` operations create them
    (``torch.empty``: never written, so a CPU build costs no RAM; on ``meta`` no storage at all);
    otherwise they are drawn as :func:`init_weights_` draws them, on ``device``.
    """
    config_class = {"sd15": comfy.supported_models.SD15, "sdxl": comfy.supported_models.SDXL}[family]
    base_class = {"sd15": comfy.model_base.BaseModel, "sdxl": comfy.model_base.SDXL}[family]
    config = config_class({**FULL_SIZE_UNETS[family], "dtype": dtype})
    config.set_inference_dtype(dtype, None)
    return diffusion_patcher(
        lambda: base_class(config, model_type=ModelType.EPS, device=device),
        seed,
        load_device or device,
        offload_device or device,
    )


def full_size_conditioning(family: str, seed: int | None = None) -> list[list[Any]]:
    """A CONDITIONING of the family's width (zeros when ``seed`` is None): ``[1, 77, D]`` + pooled."""
    dim = int(FULL_SIZE_UNETS[family]["context_dim"])
    pooled = FULL_SIZE_POOLED[family]
    generator = torch.Generator(device="cpu").manual_seed(int(seed or 0))

    def draw(*shape: int) -> torch.Tensor:
        return torch.zeros(shape) if seed is None else torch.randn(shape, generator=generator)

    extra = {} if pooled is None else {"pooled_output": draw(1, pooled)}
    return [[draw(1, 77, dim), extra]]


def build_tiny_unet(
    model_type: ModelType | str = ModelType.EPS, seed: int = 0
) -> comfy.model_patcher.ModelPatcher:
    """An SD1.5-architecture UNet (~1M parameters) as a ComfyUI MODEL (``ModelPatcher``).

    Args:
        model_type: ``ModelType.EPS`` / ``V_PREDICTION`` / ``FLOW`` or ``"eps"`` / ``"v"`` / ``"flow"``.
        seed: weight seed.

    Latents are ``[B, 4, h, w]`` with even ``h, w``; conditionings ``[B, T, 64]``.
    """
    if isinstance(model_type, str):
        model_type = MODEL_TYPES[model_type]
    model_config = comfy.supported_models.SD15(dict(TINY_UNET_CONFIG))
    model_config.set_inference_dtype(torch.float32, None)
    offload = comfy.model_management.unet_offload_device()
    return diffusion_patcher(
        lambda: comfy.model_base.BaseModel(model_config, model_type=model_type, device=offload),
        seed,
        comfy.model_management.get_torch_device(),
        offload,
    )


def build_tiny_clip(seed: int = 0) -> comfy.sd.CLIP:
    """A CLIP-L-architecture text encoder with hidden size 64 and ComfyUI's bundled SD1 tokenizer.

    ``clip.encode_from_tokens_scheduled(clip.tokenize(text))`` gives a CONDITIONING with a
    ``[1, 77, 64]`` tensor, matching the tiny UNet's ``context_dim``.
    """
    clip = comfy.sd.CLIP(
        target=ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel),
        model_options={"dtype": torch.float32, "clip_l_model_config": dict(TINY_CLIP_CONFIG)},
    )
    init_weights_(clip.cond_stage_model, seed)
    return clip


def build_tiny_vae(seed: int = 0) -> comfy.sd.VAE:
    """A small AutoencoderKL (``ch`` 32) as a ComfyUI VAE: 8x downscale, 4 latent channels.

    ``vae.encode(image[B, H, W, 3])`` -> ``[B, 4, H/8, W/8]``; ``vae.decode`` the reverse.
    """
    params = {"ddconfig": dict(TINY_VAE_DDCONFIG), "embed_dim": TINY_VAE_DDCONFIG["z_channels"]}
    template = AutoencoderKL(**params)
    init_weights_(template, seed)
    state_dict = {k: v.detach().clone() for k, v in template.state_dict().items()}
    return comfy.sd.VAE(sd=state_dict, config={"params": params}, dtype=torch.float32)


def encode_prompt(clip: comfy.sd.CLIP, text: str) -> list[list[Any]]:
    """CONDITIONING for ``text``, exactly as ComfyUI's CLIPTextEncode node builds it."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def random_conditioning(
    seed: int, tokens: int = 77, dim: int = CONTEXT_DIM, scale: float = 1.0
) -> list[list[Any]]:
    """A CONDITIONING ``[[cond [1, tokens, dim], {"pooled_output": [1, dim]}]]`` from a seed (no CLIP)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    cond = torch.randn((1, tokens, dim), generator=generator) * scale
    pooled = torch.randn((1, dim), generator=generator) * scale
    return [[cond, {"pooled_output": pooled}]]


# --------------------------------------------------------------------------------------------------
# Model families: SDXL, SD3 and Flux, tiny, from ComfyUI's own model classes
# --------------------------------------------------------------------------------------------------

SIZE_EMBEDDING = 6 * 256
"""SDXL's ``adm`` size part: height, width, crop top/left, target height/width, 256 each (Timestep)."""

FAMILY_CLIP_L_CONFIG: dict[str, int] = {**TINY_CLIP_CONFIG, "num_hidden_layers": 3}
"""CLIP-L of the SDXL/SD3/Flux encoders: three layers (SDXL reads the penultimate one)."""

TINY_CLIP_G_CONFIG: dict[str, int] = {**FAMILY_CLIP_L_CONFIG, "projection_dim": 64}
"""Overrides of ComfyUI's CLIP-G text config: hidden 64 and a 64-wide projected pooled output."""

TINY_T5_CONFIG: dict[str, int] = {"d_model": 64, "d_ff": 128, "d_kv": 32, "num_heads": 2, "num_layers": 2}
"""Overrides of ComfyUI's T5-XXL config (its 32128-token vocabulary kept: the real tokenizer runs)."""

TINY_SDXL_UNET_CONFIG: dict[str, Any] = {
    # ComfyUI's SDXL detection dict, shrunk: 2 levels, 64 channels (ComfyUI's SDXL config fixes
    # 64 channels per attention head).
    **FULL_SIZE_UNETS["sdxl"],
    **TWO_LEVELS,
    "model_channels": 64,
    "transformer_depth_middle": 1,
    "context_dim": 2 * TINY_CLIP_CONFIG["hidden_size"],  # CLIP-L and CLIP-G outputs side by side
    "adm_in_channels": TINY_CLIP_G_CONFIG["projection_dim"] + SIZE_EMBEDDING,
}
"""SDXL UNet with ``adm`` (pooled CLIP-G output + size embeddings) and linear transformer in/out."""

TINY_MMDIT_CONFIG: dict[str, Any] = {
    "input_size": None,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "depth": 2,  # MMDiT: hidden size 64 * depth, depth heads
    "adm_in_channels": TINY_CLIP_CONFIG["hidden_size"] + TINY_CLIP_G_CONFIG["projection_dim"],
    "context_embedder_config": {
        "target": "torch.nn.Linear",
        "params": {"in_features": 4096, "out_features": 128},
    },
    "pos_embed_max_size": 16,
    "num_patches": 256,
    "pos_embed_scaling_factor": None,
}
"""SD3's MMDiT: 16 latent channels, CLIP-L+G pooled ``y``, context padded to 4096 (ComfyUI's SD3 rule);
positions for latents up to 32x32."""

TINY_FLUX_CONFIG: dict[str, Any] = {
    "image_model": "flux",
    "in_channels": 16,
    "out_channels": 16,
    "vec_in_dim": TINY_CLIP_CONFIG["hidden_size"],  # CLIP-L pooled (unprojected, as ComfyUI's Flux CLIP)
    "context_in_dim": TINY_T5_CONFIG["d_model"],
    "hidden_size": 128,
    "mlp_ratio": 4.0,
    "num_heads": 1,  # ComfyUI's detection: hidden_size // sum(axes_dim)
    "depth": 1,
    "depth_single_blocks": 1,
    "axes_dim": [16, 56, 56],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": True,
    "txt_ids_dims": [],  # ComfyUI 0.33 (older hosts do not know it)
}
"""Flux-dev: double- and single-stream blocks, guidance embedding, 16 latent channels."""


def _flux_unet_config() -> dict[str, Any]:
    """:data:`TINY_FLUX_CONFIG` restricted to what this host's ``FluxParams`` knows."""
    import comfy.ldm.flux.model

    known = {field.name for field in dataclasses.fields(comfy.ldm.flux.model.FluxParams)} | {"image_model"}
    return {key: value for key, value in TINY_FLUX_CONFIG.items() if key in known}


def _sd3_position_table(network: torch.nn.Module) -> None:
    """SD3's ``pos_embed`` buffer (``torch.empty`` when built; checkpoints store the 2-D sin-cos
    table), filled by ComfyUI's own ``get_2d_sincos_pos_embed``: never uninitialised memory."""
    from comfy.ldm.modules.diffusionmodules.mmdit import get_2d_sincos_pos_embed

    size = TINY_MMDIT_CONFIG["pos_embed_max_size"]
    table = get_2d_sincos_pos_embed(network.pos_embed.shape[-1], size)
    with torch.no_grad():
        network.pos_embed.copy_(torch.from_numpy(table).float().unsqueeze(0))


def build_tiny_family_model(family: str, seed: int = 0) -> comfy.model_patcher.ModelPatcher:
    """The family's tiny MODEL, built as ``comfy.sd`` builds a loaded checkpoint: the family's
    ``supported_models`` config (its latent format and sampling: discrete EPS for SD1.5/SDXL,
    discrete flow with shift 3 for SD3, Flux's shifted flow) and ``model_base`` class.

    (Tiny weights cannot go through ComfyUI's architecture detection: its SDXL match needs the
    full-size config, and 0.3.64's Flux detection fixes the full-size widths.)
    """
    if family == "sd15":
        return build_tiny_unet("eps", seed=seed)
    config_class, base_class, unet_config = {
        "sdxl": (comfy.supported_models.SDXL, comfy.model_base.SDXL, dict(TINY_SDXL_UNET_CONFIG)),
        "sd3": (comfy.supported_models.SD3, comfy.model_base.SD3, dict(TINY_MMDIT_CONFIG)),
        "flux": (comfy.supported_models.Flux, comfy.model_base.Flux, _flux_unet_config()),
    }[family]
    model_config = config_class(unet_config)
    model_config.set_inference_dtype(torch.float32, None)
    offload = comfy.model_management.unet_offload_device()
    return diffusion_patcher(
        lambda: base_class(model_config, device=offload),
        seed,
        comfy.model_management.get_torch_device(),
        offload,
        fill_buffers=_sd3_position_table if family == "sd3" else None,
    )


def build_tiny_family_clip(family: str, seed: int = 0) -> comfy.sd.CLIP:
    """The family's text encoders, tiny, with ComfyUI's real tokenizers.

    - sd15: CLIP-L -> ``[1, 77, 64]``.
    - sdxl: CLIP-L + CLIP-G -> ``[1, 77, 128]`` + pooled ``[1, 64]`` (the ``adm`` input).
    - sd3: CLIP-L + CLIP-G (no T5: a tiny T5 cannot be 4096 wide cheaply; SD3 runs without it) ->
      ``[1, 77, 4096]`` (zero-padded, ComfyUI's SD3 rule) + pooled ``[1, 128]``.
    - flux: CLIP-L + T5 -> T5's ``[1, 256, 64]`` + CLIP-L pooled ``[1, 64]``.
    """
    if family == "sd15":
        return build_tiny_clip(seed)
    options: dict[str, Any] = {
        "dtype": torch.float32,
        "clip_l_model_config": dict(FAMILY_CLIP_L_CONFIG),
        "clip_g_model_config": dict(TINY_CLIP_G_CONFIG),
        "t5xxl_model_config": dict(TINY_T5_CONFIG),
    }
    targets = {
        "sdxl": ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel),
        "sd3": ClipTarget(
            comfy.text_encoders.sd3_clip.SD3Tokenizer,
            comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False),
        ),
        "flux": ClipTarget(comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip()),
    }
    clip = comfy.sd.CLIP(target=targets[family], model_options=options)
    init_weights_(clip.cond_stage_model, seed)
    return clip


def build_tiny_family_vae(family: str, seed: int = 0) -> comfy.sd.VAE:
    """The family's VAE: the tiny 4-channel one (SD1.5, SDXL) or a 16-channel one (SD3, Flux).

    ComfyUI reads the latent channel count from the weights only on its detection path (which fixes
    full-size widths), so for the tiny 16-channel VAE the count is set as that path would set it.
    """
    if family in ("sd15", "sdxl"):
        return build_tiny_vae(seed)
    ddconfig = {**TINY_VAE_DDCONFIG, "z_channels": 16}
    params = {"ddconfig": ddconfig, "embed_dim": 16}
    template = AutoencoderKL(**params)
    init_weights_(template, seed)
    state_dict = {k: v.detach().clone() for k, v in template.state_dict().items()}
    vae = comfy.sd.VAE(sd=state_dict, config={"params": params}, dtype=torch.float32)
    vae.latent_channels = 16
    return vae


__all__ = [
    "CONTEXT_DIM",
    "FAMILY_CLIP_L_CONFIG",
    "FULL_SIZE_POOLED",
    "FULL_SIZE_UNETS",
    "LATENT_CHANNELS",
    "MIDDLE_CHANNELS",
    "MODEL_TYPES",
    "SIZE_EMBEDDING",
    "TINY_CLIP_CONFIG",
    "TINY_CLIP_G_CONFIG",
    "TINY_FLUX_CONFIG",
    "TINY_MMDIT_CONFIG",
    "TINY_SDXL_UNET_CONFIG",
    "TINY_T5_CONFIG",
    "TINY_UNET_CONFIG",
    "TINY_VAE_DDCONFIG",
    "TWO_LEVELS",
    "build_full_size_unet",
    "build_tiny_clip",
    "build_tiny_family_clip",
    "build_tiny_family_model",
    "build_tiny_family_vae",
    "build_tiny_unet",
    "build_tiny_vae",
    "encode_prompt",
    "full_size_conditioning",
    "init_weights_",
    "random_conditioning",
]
