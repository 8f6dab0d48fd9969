"""OIR Phrase Mask inside ComfyUI: exact mechanics on constructed models.

- A tiny SD1.5 UNet and CLIP whose weights are *set* (not trained): the CLIP's output is non-zero
  only at the tokens of one word, and every cross-attention layer of the UNet attends to that token
  exactly where the latent's channel 0 is positive. The cross-attention mask must be that region.
- A model whose prediction depends on the prompt only inside a region (a UNet function wrapper, the
  hook ComfyUI runs instead of the UNet): the noise-difference mask must be that region.
- The phrase-to-token mapping against the tokenizer itself, the families, LoRA and ControlNet, the
  cost in model rows, and that the user's MODEL is left as it was.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from oir_graph import ForwardRecorder

REGION = torch.zeros(8, 8)
REGION[2:6, 2:6] = 1.0  # aligned to the UNet's 2x2 downsampling
PROMPT = "a dog sitting next to a gift"
SD15_SCALE = 0.18215  # SD1.5 latent format: model space = samples * this


def _tiny() -> Any:
    import tiny_models

    return tiny_models


def _inputs(**overrides: Any) -> dict[str, Any]:
    values = {
        "original_prompt": PROMPT,
        "source": "dog",
        "occurrence": 0,
        "target": "cat",
        "method": "cross_attention",
        "threshold": 0.5,
        "noise_strength": 0.5,
        "draws": 4,
        "draw_seed": 0,
    }
    return {**values, **overrides}


def _run(nodes: dict[str, Any], **inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(nodes["OIRPhraseMask"].execute(**inputs).args)  # type: ignore[return-value]


def _pattern_latent() -> dict[str, torch.Tensor]:
    """Channel 0 strongly positive inside REGION, negative outside (noise cannot flip its sign)."""
    pattern = torch.zeros(1, 4, 8, 8)
    pattern[0, 0] = torch.where(REGION > 0, 50.0, -50.0)
    return {"samples": pattern / SD15_SCALE}


def _one_word_clip(word: str, dimension: int = 5) -> Any:
    """A tiny CLIP whose output is LayerNorm(one-hot) at ``word``'s token and zero at every other
    token: token embeddings zero except that one, positions zero, attention and MLP outputs zero."""
    clip = _tiny().build_tiny_clip(seed=3)
    token = clip.tokenizer.clip_l.tokenizer(word)["input_ids"][1]
    with torch.no_grad():
        for name, parameter in clip.cond_stage_model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                parameter.fill_(1.0)
            else:
                parameter.zero_()
        embedding = clip.cond_stage_model.clip_l.transformer.text_model.embeddings.token_embedding
        embedding.weight[token, dimension] = 1.0
    return clip


def _attention_probe_unet(dimension: int = 5, scale: float = 1.0) -> Any:
    """The tiny SD1.5 UNet with weights set so that every cross-attention layer attends to the
    context's ``dimension`` where latent channel 0 is positive: residual branches, self-attention,
    feed-forward and transformer outputs zero (identity paths), channel 0 carried through every
    skip, down- and upsampling; ``to_q`` reads channel 0 of the normalised hidden state, ``to_k``
    the context's ``dimension``."""
    patcher = _tiny().build_tiny_unet("eps", seed=0)
    network = patcher.model.diffusion_model
    with torch.no_grad():
        for module in network.modules():
            for parameter in module.parameters(recurse=False):
                is_norm = isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm))
                parameter.fill_(
                    1.0
                ) if is_norm and parameter.ndim == 1 and parameter is module.weight else parameter.zero_()

        def carry(conv: Any) -> None:  # output channel 0 = input channel 0 (centre tap)
            centre = tuple(k // 2 for k in conv.weight.shape[2:])
            conv.weight[(0, 0, *centre)] = 1.0

        carry(network.input_blocks[0][0])
        for module in network.modules():
            kind = type(module).__name__
            if kind == "ResBlock" and not isinstance(module.skip_connection, torch.nn.Identity):
                carry(module.skip_connection)
            elif kind == "Downsample":
                carry(module.op)
            elif kind == "Upsample":
                carry(module.conv)
            elif kind == "SpatialTransformer":
                carry(
                    module.proj_in
                ) if module.proj_in.weight.ndim == 4 else module.proj_in.weight.__setitem__((0, 0), 1.0)
            elif kind == "BasicTransformerBlock":
                module.attn2.to_q.weight[0, 0] = scale
                module.attn2.to_k.weight[0, dimension] = scale
    return patcher


def test_cross_attention_mask_is_the_region_the_constructed_model_attends(nodes) -> None:
    model, clip = _attention_probe_unet(), _one_word_clip("dog")
    mask, soft, preview = _run(nodes, model=model, clip=clip, latent=_pattern_latent(), **_inputs())
    expected = REGION.repeat_interleave(8, 0).repeat_interleave(8, 1)[None]
    assert mask.shape == (1, 64, 64) and torch.equal(mask, expected)  # IoU 1
    assert soft.shape == (1, 64, 64) and float(soft.min()) >= 0 and float(soft.max()) == pytest.approx(1.0)
    assert preview.shape == (1, 64, 64, 3)
    # teeth: the same model asked about another word sees no such region
    other, _, _ = _run(nodes, model=model, clip=clip, latent=_pattern_latent(), **_inputs(source="gift"))
    assert not torch.equal(other, expected)


def test_noise_difference_mask_is_where_the_prediction_depends_on_the_prompt(
    nodes, tiny_unet, tiny_clip
) -> None:
    def prompt_only_inside(apply_model: Any, args: dict[str, Any]) -> torch.Tensor:
        context = args["c"]["c_crossattn"]
        level = context[:, :, 0].float().mean(dim=1)[:, None, None, None]  # differs between the prompts
        return torch.zeros_like(args["input"]) + REGION * level

    model = tiny_unet.clone()
    model.set_model_unet_function_wrapper(prompt_only_inside)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    mask, soft, _ = _run(
        nodes, model=model, clip=tiny_clip, latent=latent, **_inputs(method="noise_difference")
    )
    expected = REGION.repeat_interleave(8, 0).repeat_interleave(8, 1)[None]
    assert torch.equal(mask, expected)
    # the soft map is bilinear: near each latent cell's centre it is that cell's value
    assert torch.equal((soft[0, 4::8, 4::8] > 0.5).float(), REGION)


def _sd2_clip() -> Any:
    """SD2.x's text encoder (OpenCLIP-H layout, its own tokenizer and ``"h"`` tokens), tiny."""
    import comfy.sd
    import comfy.text_encoders.sd2_clip
    from comfy.supported_models_base import ClipTarget

    target = ClipTarget(comfy.text_encoders.sd2_clip.SD2Tokenizer, comfy.text_encoders.sd2_clip.SD2ClipModel)
    options = {"dtype": torch.float32, "clip_h_model_config": dict(_tiny().FAMILY_CLIP_L_CONFIG)}
    return comfy.sd.CLIP(target=target, model_options=options)


@pytest.mark.parametrize(
    ("prompt", "phrase", "occurrence", "weight"),
    [
        ("a photo of a teddy bear on a sofa", "teddy bear", 0, 1.0),
        ("a (teddy bear:1.3) next to a teddy bear", "teddy bear", 2, 1.0),
        ("a (teddy bear:1.3) next to a teddy bear", "teddy bear", 1, 1.3),
        ("a dog, a cat and a dog", "dog", 2, 1.0),
        (" ".join(["a red brick house"] * 20) + " and a dog", "dog", 0, 1.0),  # past the first 77 tokens
    ],
)
@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd2"])
def test_phrase_tokens_are_where_comfyui_put_them(
    pack, family: str, prompt: str, phrase: str, occurrence: int, weight: float
) -> None:
    """The positions name exactly the phrase's tokens (the tokenizer's own ids for the phrase) in
    ComfyUI's token list, at the requested occurrence and with its emphasis weight."""
    import sys

    mask_nodes = sys.modules[f"{pack.__name__}.nodes.mask_nodes"]
    clip = _sd2_clip() if family == "sd2" else _tiny().build_tiny_family_clip(family, seed=3)
    key, own = ("h", clip.tokenizer.clip_h) if family == "sd2" else ("l", clip.tokenizer.clip_l)
    positions = mask_nodes.phrase_positions(clip, prompt, phrase, occurrence)
    flat = [entry for chunk in clip.tokenize(prompt)[key] for entry in chunk]
    reference = own.tokenizer(phrase)["input_ids"][1:-1]
    assert [int(flat[p][0]) for p in positions] == reference
    assert positions == list(range(positions[0], positions[0] + len(reference)))
    assert all(flat[p][1] == pytest.approx(weight) for p in positions)
    if occurrence == 2:
        first = mask_nodes.phrase_positions(clip, prompt, phrase, 1)
        assert first[-1] < positions[0]
    if len(flat) > 77:
        assert positions[0] >= 77  # the second chunk of 77


def test_the_users_model_is_left_as_it_was(nodes, tiny_unet, tiny_clip, tiny_vae) -> None:
    """A KSampler run after the mask node is bit-identical to one before it."""
    import nodes as comfy_nodes

    positive = _tiny().encode_prompt(tiny_clip, PROMPT)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def ksampler() -> torch.Tensor:
        return comfy_nodes.common_ksampler(
            tiny_unet, 3, 4, 5.0, "euler", "normal", positive, positive, latent
        )[0]["samples"]

    before = ksampler()
    options = repr(tiny_unet.model_options)
    source = {
        "samples": tiny_vae.encode(torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2)))
    }
    _run(nodes, model=tiny_unet, clip=tiny_clip, latent=source, **_inputs())
    assert repr(tiny_unet.model_options) == options
    assert torch.equal(ksampler(), before)


@pytest.mark.parametrize("method", ["cross_attention", "noise_difference"])
def test_works_with_lora_and_controlnet_and_costs_a_few_rows(
    nodes, tiny_unet, tiny_clip, tiny_vae, method: str
) -> None:
    """A LoRA'd model and an original conditioning carrying a real ControlNet: the mask's forwards
    get the control; cross_attention costs ``samples`` rows, noise_difference twice that, no CFG (the
    inversion of the same image costs T rows: 50 at the paper's setting)."""
    import comfy.controlnet
    from comfy_server import tiny_files_module

    import nodes as comfy_nodes

    key = "diffusion_model.out.2.weight"
    delta = (
        torch.randn(tiny_unet.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(5)) * 0.2
    )
    lora = tiny_unet.clone()
    lora.add_patches({key: ("diff", (delta,))}, 1.0)
    counter = ForwardRecorder()
    lora.set_model_unet_function_wrapper(counter)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = tiny_files_module().write_tiny_controlnet(Path(folder) / "cn.safetensors")
        control_net = comfy.controlnet.load_controlnet(str(path))
    encoded = _tiny().encode_prompt(tiny_clip, PROMPT)
    hint = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(9))
    original, _ = comfy_nodes.ControlNetApplyAdvanced().apply_controlnet(
        encoded, encoded, control_net, hint, 1.0, 0.0, 1.0
    )
    source = {
        "samples": tiny_vae.encode(torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2)))
    }
    mask, soft, _ = _run(
        nodes,
        model=lora,
        clip=tiny_clip,
        latent=source,
        original=original,
        **_inputs(method=method, draws=6),
    )
    assert torch.isfinite(soft).all() and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert sum(counter.row_counts()) == (6 if method == "cross_attention" else 12)
    assert all(call["control"] for call in counter.calls)


def test_flow_transformers_refuse_cross_attention_before_any_model_call_and_take_noise_difference(
    nodes,
) -> None:
    tiny = _tiny()
    for family in ("sd3", "flux"):
        model, clip, vae = (
            tiny.build_tiny_family_model(family, seed=0),
            tiny.build_tiny_family_clip(family, seed=3),
            tiny.build_tiny_family_vae(family, seed=4),
        )
        counter = ForwardRecorder()
        model.set_model_unet_function_wrapper(counter)
        latent = {"samples": vae.encode(torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(2)))}
        assert latent["samples"].shape[1] == 16
        with pytest.raises(Exception, match="no cross-attention layers") as refused:
            _run(nodes, model=model, clip=clip, latent=latent, **_inputs())
        assert "noise_difference" in str(refused.value) and counter.calls == []
        mask, _, _ = _run(
            nodes, model=model, clip=clip, latent=latent, **_inputs(method="noise_difference", draws=3)
        )
        assert mask.shape == (1, 64, 64) and sum(counter.row_counts()) == 6


def test_a_mismatched_original_is_refused_before_any_model_call(
    nodes, tiny_unet, tiny_clip, tiny_vae
) -> None:
    counter = ForwardRecorder()
    model = tiny_unet.clone()
    model.set_model_unet_function_wrapper(counter)
    other = _tiny().encode_prompt(tiny_clip, "a cat on a mat")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(Exception, match=r"'original'.*not this clip's encoding"):
        _run(nodes, model=model, clip=tiny_clip, latent=latent, original=other, **_inputs())
    with pytest.raises(Exception, match=r"'source'.*not found"):
        _run(nodes, model=model, clip=tiny_clip, latent=latent, **_inputs(source="horse"))
    assert counter.calls == []


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_capture_sees_every_cross_attention_layer_of_the_unet(pack, family: str) -> None:
    """SD1.x (conv proj_in, 8 heads) and SDXL (linear proj_in, 64-channel heads, `adm`) layouts: every
    cross-attention layer of the UNet reports once per forward, at its own resolution."""
    import sys

    mask_nodes = sys.modules[f"{pack.__name__}.nodes.mask_nodes"]
    comfy_host = sys.modules[f"{pack.__name__}.nodes.comfy_host"]
    from oir_core.phrase_masks import AttentionMaps, find_phrase_mask

    tiny = _tiny()
    model, clip = tiny.build_tiny_family_model(family, seed=0), tiny.build_tiny_family_clip(family, seed=3)
    layers = [m for m in model.model.diffusion_model.modules() if type(m).__name__ == "BasicTransformerBlock"]
    maps = AttentionMaps((8, 8), mask_nodes.phrase_positions(clip, PROMPT, "dog", 0))
    host = comfy_host.ComfyHost(
        mask_nodes.capture_cross_attention(model, maps), tiny.encode_prompt(clip, PROMPT), None, [], None, 1.0
    )
    found = find_phrase_mask(
        host,
        torch.randn(4, 8, 8),
        method="cross_attention",
        sigma=1.0,
        samples=3,
        seed=0,
        flow=False,
        threshold=0.5,
        attention=maps,
    )
    assert len(layers) > 0 and len(maps.layers) == len(layers)
    assert maps.maps == 3 * len(layers)  # every layer once per draw
    assert found.mask.shape == (8, 8) and float(found.soft.max()) == pytest.approx(1.0)
