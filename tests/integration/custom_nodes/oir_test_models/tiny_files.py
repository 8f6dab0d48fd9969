"""Real tiny LoRA and ControlNet files for the tiny models, loadable by ComfyUI's own nodes.

Imported inside a process where ComfyUI is importable (the pytest process after
``comfy_env.setup_comfyui``). The files go into the models folders a test server registers, so
the example workflows' LoraLoader and ControlNetLoader nodes run unchanged.

- LoRA: kohya-style keys (``lora_unet_<module>.lora_up/lora_down/alpha`` and
  ``lora_te_text_model_encoder_layers_<i>_<module>``) that ComfyUI's key map
  (``comfy.lora.model_lora_keys_unet/clip``) resolves for the tiny UNet and CLIP; non-zero up
  matrices so that the LoRA visibly changes the output.
- ControlNet: ComfyUI's own ``comfy.cldm.cldm.ControlNet`` in the LDM layout, sized to the tiny
  UNet's channels (32, 64). ComfyUI detects its config from the weights (falling back to the base
  model config, which fixes 64 channels per attention head), so the 32-channel level carries no
  attention; the residuals still match the UNet's input blocks. Weights are random (not zero),
  so the control changes the output.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from . import tiny_models

LORA_RANK = 4


def write_tiny_lora(path: Path, seed: int = 5, scale: float = 0.5) -> Path:
    """LoRA on every cross-attention key/value projection of the tiny UNet and every CLIP q/v projection."""
    models = tiny_models()
    unet = models.build_tiny_unet("eps", seed=0)
    clip = models.build_tiny_clip(seed=3)
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}

    def add(prefix: str, weight: torch.Tensor) -> None:
        out_features, in_features = weight.shape[:2]
        down = torch.randn((LORA_RANK, in_features), generator=generator) / in_features**0.5
        up = torch.randn((out_features, LORA_RANK), generator=generator) * scale / LORA_RANK**0.5
        tensors[f"{prefix}.lora_down.weight"] = down.contiguous()
        tensors[f"{prefix}.lora_up.weight"] = up.contiguous()
        tensors[f"{prefix}.alpha"] = torch.tensor(float(LORA_RANK))

    for key, weight in unet.model.state_dict().items():
        if key.startswith("diffusion_model.") and key.endswith(("attn2.to_k.weight", "attn2.to_v.weight")):
            add("lora_unet_" + key[len("diffusion_model.") : -len(".weight")].replace(".", "_"), weight)
    prefix = "clip_l.transformer.text_model.encoder.layers."
    for key, weight in clip.cond_stage_model.state_dict().items():
        if key.startswith(prefix) and key.endswith(("self_attn.q_proj.weight", "self_attn.v_proj.weight")):
            layer, _, module = key[len(prefix) : -len(".weight")].partition(".")
            add(f"lora_te_text_model_encoder_layers_{layer}_{module.replace('.', '_')}", weight)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_tiny_controlnet(path: Path, seed: int = 7, family: str = "sd15") -> Path:
    """A ControlNet (hint: RGB image) for the tiny SD1.5 or SDXL UNet, in the LDM key layout.

    SDXL's carries the UNet's ``adm`` input (``label_emb``), linear transformer in/out and attention
    on both levels (its UNet has 64 and 128 channels).
    """
    import comfy.cldm.cldm
    import comfy.ops

    models = tiny_models()
    config = models.TINY_UNET_CONFIG if family == "sd15" else models.TINY_SDXL_UNET_CONFIG
    network = comfy.cldm.cldm.ControlNet(
        image_size=config["image_size"],
        in_channels=config["in_channels"],
        model_channels=config["model_channels"],
        hint_channels=3,
        num_res_blocks=config["num_res_blocks"],
        channel_mult=config["channel_mult"],
        transformer_depth=[0, 1] if family == "sd15" else [1, 1],
        transformer_depth_middle=config["transformer_depth_middle"],
        context_dim=config["context_dim"],
        num_head_channels=64,
        use_linear_in_transformer=config["use_linear_in_transformer"],
        use_spatial_transformer=True,
        legacy=False,
        adm_in_channels=config["adm_in_channels"],
        num_classes=config.get("num_classes"),
        dtype=torch.float32,
        device="cpu",
        operations=comfy.ops.disable_weight_init,
    )
    models.init_weights_(network, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, str(path))
    return path
