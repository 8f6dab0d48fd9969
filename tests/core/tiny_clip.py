"""Tiny random-weight CLIP models saved to disk in both backends' formats, for the scorer tests.

Imported by plain ``import tiny_clip`` (pytest puts this folder on ``sys.path``). Nothing is
downloaded: the transformers model gets a tiny byte-level BPE tokenizer written here (every byte
and byte+``</w>`` is a token, no merges), the open_clip model uses open_clip's bundled CLIP BPE.

Weights are re-drawn with a larger spread than the libraries' initialisers (std ~ 1/sqrt(fan_in),
layer-norm gains near 1): with the stock 0.02 init every image embeds to nearly the same vector,
and the property tests would compare differences at the float-noise level.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

WIDTH = 32
LAYERS = 2
HEADS = 4
EMBED = 16
CONTEXT = 16
OPENAI_VOCAB = 49408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in chars], strict=True))


@torch.no_grad()
def spread_weights(model: nn.Module, seed: int) -> None:
    """Redraw every parameter deterministically (see module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
        lowered = name.lower()
        is_norm = any(tag in lowered for tag in ("norm", "ln_", "layrnorm"))
        if name.endswith("logit_scale"):
            continue
        if param.ndim <= 1 and is_norm and name.endswith("weight"):
            param.copy_(1.0 + 0.1 * noise)
        elif param.ndim <= 1:
            param.copy_(0.1 * noise if not name.endswith("class_embedding") else 0.5 * noise)
        else:
            fan_in = param[0].numel()
            param.copy_(noise / math.sqrt(fan_in))


def write_tiny_tokenizer(folder: Path) -> dict[str, int]:
    """Write ``vocab.json`` + ``merges.txt`` (+ transformers' own files); returns the special ids."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    tokenizer.save_pretrained(str(folder))
    return {
        "vocab_size": len(vocab),
        "bos_token_id": int(tokenizer.bos_token_id),
        "eos_token_id": int(tokenizer.eos_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
    }


def make_transformers_clip(
    folder: Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    with_tokenizer: bool = True,
    preprocessor: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Save a tiny transformers ``CLIPModel`` folder (``config.json`` + ``model.safetensors``).

    Args:
        with_tokenizer: write the tiny tokenizer; without it the text model gets CLIP's standard
            49,408-token vocabulary so the loader's open_clip-tokenizer fallback applies.
        preprocessor: written as ``preprocessor_config.json`` when given.
    """
    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    if with_tokenizer:
        special = write_tiny_tokenizer(folder)
    else:
        special = {
            "vocab_size": OPENAI_VOCAB,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        }
    config = CLIPConfig(
        text_config={
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "max_position_embeddings": CONTEXT,
            **special,
        },
        vision_config={
            "hidden_size": WIDTH,
            "intermediate_size": 2 * WIDTH,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=EMBED,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    spread_weights(model, seed)
    config.save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return folder


def open_clip_model_cfg(image_size: int = 32, patch_size: int = 8) -> dict[str, Any]:
    """A tiny open_clip model config (ViT image tower, CLIP text tower with CLIP's vocabulary)."""
    return {
        "embed_dim": EMBED,
        "vision_cfg": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": WIDTH,
            "layers": LAYERS,
            "head_width": WIDTH // HEADS,
            "mlp_ratio": 2.0,
        },
        "text_cfg": {
            "context_length": CONTEXT,
            "vocab_size": OPENAI_VOCAB,
            "width": WIDTH,
            "heads": HEADS,
            "layers": LAYERS,
            "mlp_ratio": 2.0,
        },
    }


def build_open_clip(model_cfg: dict[str, Any], seed: int = 0) -> nn.Module:
    """The open_clip ``CLIP`` for ``model_cfg``, with spread random weights."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg).eval()
    spread_weights(model, seed)
    return model


def make_open_clip(
    folder: Path,
    name: str = "tiny",
    *,
    image_size: int = 32,
    patch_size: int = 8,
    sidecar: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Save ``<name>.safetensors`` + ``<name>.json`` (architecture, model_cfg); returns its path.

    ``sidecar`` replaces the default sidecar content; pass ``{}`` to write none.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cfg = open_clip_model_cfg(image_size, patch_size)
    model = build_open_clip(cfg, seed)
    checkpoint = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    content = {"architecture": f"tiny-vit-{patch_size}", "model_cfg": cfg} if sidecar is None else sidecar
    if content:
        (folder / f"{name}.json").write_text(json.dumps(content), encoding="utf-8")
    return checkpoint
