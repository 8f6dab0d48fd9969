"""OIR Phrase Mask: an object's mask from the diffusion model itself (ARCHITECTURE.md §4.7).

The node finds where a phrase of the original prompt lies in the source latent, with the engine's
two methods (:mod:`oir_core.phrase_masks`): the phrase's cross-attention (captured through
ComfyUI's own ``attn2`` replace patches on a clone of the MODEL) or DiffEdit's noise difference
between the original prompt and the prompt with the object replaced. Its MASK feeds OIR Edit Pair
like a painted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from comfy_api.latest import io
from torch import Tensor

from ..oir_core.errors import OIRInputError
from ..oir_core.masks import resize_mask_nearest
from ..oir_core.options import LATENT_FACTOR
from ..oir_core.phrase_masks import (
    AttentionMaps,
    check_mask_settings,
    find_phrase_mask,
    phrase_token_positions,
    phrase_word_ids,
)
from ..oir_core.prompts import EditPairText, build_prompts, check_target, find_phrase
from .comfy_host import ComfyHost, is_flow_model, model_space_in
from .conditioning import check_conditioning, inherit_conditioning
from .sampling_nodes import single_latent

CATEGORY = "OIR/edit"
METHODS = ("cross_attention", "noise_difference")


# --------------------------------------------------------------------------------------------------
# The phrase's tokens, as ComfyUI's CLIP tokenizer lays them out
# --------------------------------------------------------------------------------------------------


def _clip_l_tokenizer(clip: Any) -> tuple[Any, str]:
    """ComfyUI's CLIP ``SDTokenizer`` of ``clip`` whose token positions the context follows, and the
    key of its tokens: CLIP-L for SD1.x and SDXL (CLIP-G's positions are the same), CLIP-H for SD2.x."""
    tokenizer = clip.tokenizer
    inner, key = getattr(tokenizer, "clip_l", None), "l"
    if inner is None and isinstance(getattr(tokenizer, "clip", None), str):  # SD1Tokenizer and kin (SD2: "h")
        inner, key = getattr(tokenizer, tokenizer.clip, None), str(getattr(tokenizer, "clip_name", "l"))
    if inner is None or not hasattr(inner, "tokenizer"):
        raise OIRInputError(
            "clip",
            type(tokenizer).__name__,
            "has no CLIP-L tokenizer, so the phrase's tokens cannot be found",
            "use the checkpoint's own CLIP (SD1.x, SD2.x or SDXL) or method noise_difference",
        )
    return inner, key


def phrase_positions(clip: Any, prompt: str, phrase: str, occurrence: int) -> list[int]:
    """Positions of ``phrase`` (its ``occurrence``) in the context ComfyUI encodes ``prompt`` to.

    The prompt is split the way ComfyUI's tokenizer splits it (emphasis ``(word:1.2)`` and escapes
    parsed by ComfyUI's own ``token_weights``), each word is tokenized alone (CLIP's BPE never joins
    across spaces), and the words' tokens are laid over the tokens ComfyUI produced (start, end and
    padding skipped; chunks of 77 concatenated).
    """
    import comfy.sd1_clip

    tokenizer, key = _clip_l_tokenizer(clip)
    words: list[str] = []
    for segment, _ in comfy.sd1_clip.token_weights(comfy.sd1_clip.escape_important(prompt), 1.0):
        words.extend(comfy.sd1_clip.unescape_important(segment).split())
    end = -1 if tokenizer.tokenizer_adds_end_token else None
    word_tokens = [tokenizer.tokenizer(word)["input_ids"][tokenizer.tokens_start : end] for word in words]
    chunks = clip.tokenize(prompt, return_word_ids=True)[key]
    laid: list[list[int]] = []  # per chunk: our word id (1-based) of every token, 0 elsewhere
    flat = [(token, word) for word, tokens in enumerate(word_tokens, start=1) for token in tokens]
    cursor = 0
    for chunk in chunks:
        ids = []
        for token, _, comfy_word in chunk:
            is_id = not isinstance(token, Tensor)  # textual-inversion embeddings are vectors
            if comfy_word != 0 and cursor < len(flat) and is_id and int(token) == flat[cursor][0]:
                ids.append(flat[cursor][1])
                cursor += 1
            else:
                ids.append(0)
        laid.append(ids)
    if cursor != len(flat):
        raise OIRInputError(
            "original_prompt",
            prompt,
            "its tokens could not be matched word by word (an embedding or a custom tokenizer?)",
            "write the prompt without embeddings, or use method noise_difference",
        )
    return phrase_token_positions(laid, phrase_word_ids(words, phrase, occurrence))


# --------------------------------------------------------------------------------------------------
# Cross-attention capture through ComfyUI's attn2 replace patches
# --------------------------------------------------------------------------------------------------


def cross_attention_blocks(model: Any) -> list[tuple[str, int]]:
    """The UNet blocks (``("input", i)``, ``("middle", 0)``, ``("output", i)``) holding cross-attention."""
    network = model.get_model_object("diffusion_model")

    def has_cross_attention(module: torch.nn.Module) -> bool:
        return any(hasattr(m, "attn2") and m.attn2 is not None for m in module.modules())

    blocks: list[tuple[str, int]] = []
    for name in ("input", "output"):
        for index, block in enumerate(getattr(network, f"{name}_blocks", []) or []):
            if has_cross_attention(block):
                blocks.append((name, index))
    middle = getattr(network, "middle_block", None)
    if middle is not None and has_cross_attention(middle):
        blocks.append(("middle", 0))
    return blocks


def capture_cross_attention(model: Any, maps: AttentionMaps) -> Any:
    """A clone of ``model`` whose every cross-attention layer adds its probabilities to ``maps``.

    Each layer still computes its output as before: with a patch the user already set for it
    (IP-Adapter and the like), else with ComfyUI's ``optimized_attention``. Only rows of the
    conditional branch are recorded. The user's MODEL is not changed. A MODEL split by ComfyUI's
    MultiGPU CFG Split runs this node on its first device only (a warning says so, ARCHITECTURE.md §9).
    """
    from comfy.ldm.modules.attention import optimized_attention

    blocks = cross_attention_blocks(model)
    if not blocks:
        raise OIRInputError(
            "method",
            "cross_attention",
            "this model has no cross-attention layers (flow transformers such as SD3 and Flux attend "
            "to text and image jointly)",
            "use method noise_difference, which works for every model",
        )
    clone = model.clone()
    if clone.get_additional_models_with_key("multigpu"):
        # ComfyUI's MultiGPU CFG Split would run a call's conds on several devices at once, each in
        # its own thread; one map gathered in one place, in one order, needs one device.
        clone.set_additional_models("multigpu", [])
        logging.warning(
            "OIR Phrase Mask: cross_attention runs on one device (MultiGPU CFG Split is not used for "
            "this node: the attention maps are gathered in one place); the edit's nodes still split"
        )
    options = clone.model_options.setdefault("transformer_options", {})
    replaced = options.setdefault("patches_replace", {}).setdefault("attn2", {})

    def recorder(previous: Callable[..., Tensor] | None) -> Callable[..., Tensor]:
        def attention(q: Tensor, k: Tensor, v: Tensor, extra_options: dict[str, Any]) -> Tensor:
            heads = int(extra_options["n_heads"])
            rows, positions, inner = q.shape
            head = inner // heads
            qh = q.view(rows, positions, heads, head).transpose(1, 2).float()
            kh = k.view(k.shape[0], k.shape[1], heads, head).transpose(1, 2).float()
            probabilities = (qh @ kh.transpose(-1, -2) * head**-0.5).softmax(-1)  # [B, heads, N, T]
            branches = list(extra_options.get("cond_or_uncond", [0]))
            per_branch = rows // max(len(branches), 1)
            keep = [
                row
                for i, b in enumerate(branches)
                if b == 0
                for row in range(i * per_branch, (i + 1) * per_branch)
            ]
            shape = extra_options.get("activations_shape") or extra_options["original_shape"]
            if keep:
                layer = (*extra_options.get("block", ()), extra_options.get("block_index", 0))
                maps.add(probabilities[keep], (int(shape[-2]), int(shape[-1])), layer)
            if previous is not None:
                return previous(q, k, v, extra_options)
            return optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"))

        return attention

    for key in list(replaced):
        replaced[key] = recorder(replaced[key])
    for block in blocks:
        if block not in replaced:
            replaced[block] = recorder(None)
    return clone


# --------------------------------------------------------------------------------------------------
# The node
# --------------------------------------------------------------------------------------------------


def _to_image(values: Tensor, mode: str) -> Tensor:
    """``[h, w]`` latent-grid map -> ``[1, 8h, 8w]`` MASK (``nearest`` or ``bilinear``)."""
    size = (values.shape[0] * LATENT_FACTOR, values.shape[1] * LATENT_FACTOR)
    if mode == "nearest":
        return resize_mask_nearest(values[None].float(), size)
    grid = values[None, None].float()
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False).clamp(0, 1)[0]


class OIRPhraseMask(io.ComfyNode):
    """An object's MASK from the model itself: the phrase's cross-attention or DiffEdit's noise difference."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRPhraseMask",
            display_name="OIR Phrase Mask",
            category=CATEGORY,
            description=(
                "Finds the object a phrase of the original prompt names, with no painted mask: "
                "cross_attention = where the model's cross-attention puts the phrase's tokens (SD1.x, "
                "SD2.x, SDXL); noise_difference = where the prediction changes when the phrase is "
                "replaced by the target (DiffEdit; every model). Its mask feeds OIR Edit Pair."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (LoRA and patches apply)."),
                io.Clip.Input("clip", tooltip="The checkpoint's text encoder."),
                io.Latent.Input("latent", tooltip="VAE Encode of the source image."),
                io.String.Input(
                    "original_prompt",
                    default="a dog sitting next to a gift",
                    multiline=True,
                    tooltip="The original prompt (the same as the Guided Prompt Builder's).",
                ),
                io.String.Input("source", default="dog", tooltip="The phrase naming the object."),
                io.Int.Input(
                    "occurrence",
                    default=0,
                    min=0,
                    max=64,
                    tooltip="Which occurrence of 'source' (1-based); 0 = it occurs exactly once.",
                ),
                io.String.Input(
                    "target",
                    default="cat",
                    tooltip="What the object becomes (noise_difference compares the prompts with each).",
                ),
                io.Combo.Input(
                    "method",
                    options=list(METHODS),
                    default="cross_attention",
                    tooltip="cross_attention: the phrase tokens' attention, every layer/head/resolution "
                    "averaged (UNet models); noise_difference: DiffEdit's |prediction(original) - "
                    "prediction(target)| (every model, twice the rows).",
                ),
                io.Float.Input(
                    "threshold",
                    default=0.5,
                    min=0.01,
                    max=1.0,
                    step=0.01,
                    tooltip="The mask is the normalised map >= this (DiffEdit: 0.5).",
                ),
                io.Float.Input(
                    "noise_strength",
                    default=0.5,
                    min=0.01,
                    max=0.99,
                    step=0.01,
                    tooltip="How far along the model's schedule the latent is noised (DiffEdit: 0.5).",
                ),
                io.Int.Input(
                    "draws", default=10, min=1, max=64, tooltip="Noise draws averaged (DiffEdit: 10)."
                ),
                io.Int.Input(
                    "draw_seed", default=0, min=0, max=2**32 - 1, tooltip="Seed of the noise draws."
                ),
                io.Conditioning.Input(
                    "original",
                    optional=True,
                    tooltip="Optional: the original prompt encoded, with a ControlNet or hooks attached "
                    "(must encode original_prompt); default: original_prompt encoded by clip.",
                ),
            ],
            outputs=[
                io.Mask.Output(
                    display_name="mask", tooltip="The object's mask at image resolution, for OIR Edit Pair."
                ),
                io.Mask.Output(
                    display_name="soft_mask", tooltip="The normalised map (0..1) before the threshold."
                ),
                io.Image.Output(display_name="preview", tooltip="The soft map in grey, the mask in red."),
            ],
        )

    @classmethod
    def execute(
        cls,
        model: Any,
        clip: Any,
        latent: dict,
        original_prompt: str,
        source: str,
        occurrence: int,
        target: str,
        method: str,
        threshold: float,
        noise_strength: float,
        draws: int,
        draw_seed: int,
        original: list | None = None,
    ) -> io.NodeOutput:
        if method not in METHODS:
            raise OIRInputError("method", method, "unknown method", f"use one of {list(METHODS)}")
        check_mask_settings(threshold, draws, noise_strength)
        pixels = single_latent(latent)
        find_phrase(original_prompt, source, occurrence or None)  # refused before anything runs
        clean = model_space_in(model, pixels)[0].float()
        encoded = clip.encode_from_tokens_scheduled(clip.tokenize(original_prompt))
        if original is None:
            original = encoded
        else:
            check_conditioning(original, "original")
            given, expected = original[0][0].float(), encoded[0][0].float()
            if given.shape != expected.shape or not torch.allclose(given, expected, atol=1e-4):
                raise OIRInputError(
                    "original",
                    f"conditioning {tuple(given.shape)}",
                    "is not this clip's encoding of original_prompt, so the phrase's tokens would not "
                    "be where the node looks",
                    "connect the CLIP Text Encode of the same prompt (and the same CLIP), or leave "
                    "'original' unconnected",
                )
        sigma = float(model.get_model_object("model_sampling").percent_to_sigma(1.0 - noise_strength))
        maps = None
        if method == "cross_attention":
            maps = AttentionMaps(
                tuple(clean.shape[-2:]), phrase_positions(clip, original_prompt, source, occurrence)
            )
            host = ComfyHost(capture_cross_attention(model, maps), original, None, [], None, cfg=1.0)
        else:
            # the guided prompt exactly as the Guided Prompt Builder writes one (its matching rules)
            pair = EditPairText(source, check_target(source, target), occurrence or None)
            guided_text = build_prompts(original_prompt, [pair]).guided[0]
            guided_encoded = clip.encode_from_tokens_scheduled(clip.tokenize(guided_text))
            guided = inherit_conditioning(original, guided_encoded, encoded[0][1].keys())
            host = ComfyHost(model, original, None, [guided], None, cfg=1.0)
        found = find_phrase_mask(
            host,
            clean,
            method=method,
            sigma=sigma,
            samples=draws,
            seed=draw_seed,
            flow=is_flow_model(model),
            threshold=threshold,
            attention=maps,
        )
        mask = _to_image(found.mask, "nearest")
        soft = _to_image(found.soft, "bilinear")
        preview = torch.stack(
            [torch.maximum(soft[0], mask[0]), soft[0] * (1 - mask[0]), soft[0] * (1 - mask[0])], -1
        )
        return io.NodeOutput(mask, soft, preview[None])
