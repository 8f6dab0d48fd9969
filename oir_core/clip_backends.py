"""CLIP from local files, two backends, with our masked-attention image encoder (ARCHITECTURE.md §6).

OIR's editing score ``S_e`` (paper §"search metric"; ARCHITECTURE.md §4.4) embeds a candidate with CLIP's
ViT while restricting attention to the edited region. The libraries' own forwards cannot take a
per-image additive bias on every layer in a version-stable way, so this module runs the vision tower
itself, block by block, from the library's own modules and weights, and checks (in tests) that with
a neutral bias it reproduces the library's ``get_image_features`` / ``encode_image``.

Backends and file conventions (never a network access, never a name-derived hyper-parameter):

- ``transformers``: a folder with ``config.json`` (a ``CLIPConfig``, ``model_type == "clip"``) and
  ``model.safetensors`` (or sharded ``model.safetensors.index.json``; a ``pytorch_model.bin`` only if
  it loads with ``torch.load(weights_only=True)``). Optional ``preprocessor_config.json`` supplies
  ``image_mean``/``image_std``/``size``/``crop_size``; without it CLIP's training normalization and
  ``vision_config.image_size`` are used. The tokenizer is read from the folder (``tokenizer.json`` or
  ``vocab.json`` + ``merges.txt``); a folder without tokenizer files falls back to open_clip's
  ``SimpleTokenizer``, which ships the original CLIP BPE vocabulary inside the package and gives
  the same ids as OpenAI's tokenizer, provided the text model has CLIP's 49,408-token vocabulary.
- ``open_clip``: a checkpoint ``<name>.safetensors`` (or a weights-only pickle ``.pt/.pth/.bin/.ckpt``)
  plus a sidecar ``<name>.json`` holding ``{"architecture": "ViT-B-16"}`` (a built-in open_clip
  architecture), optionally ``"model_cfg": {...}`` (a full open_clip model config, for custom or tiny
  architectures; then ``architecture`` is only a label) and ``"preprocess_cfg": {"mean": [...],
  "std": [...]}``. The ``architecture`` argument of :func:`load_clip` can replace the sidecar. A
  folder in open_clip's ``local-dir`` layout (``open_clip_config.json`` with ``model_cfg`` and
  ``preprocess_cfg``, plus ``open_clip_model.safetensors``) works too. The model is built directly
  from the config (``open_clip.CLIP(**model_cfg)``, exactly what ``create_model`` does for a plain ViT
  CLIP), which never touches the network; towers that would download (timm / Hugging Face text
  towers) and non-ViT or non-class-token-pooled towers are refused.
"""

from __future__ import annotations

import copy
import difflib
import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import OIRInputError
from .options import SCORER_BACKENDS

__all__ = [
    "BACKENDS",
    "CLIP_MEAN",
    "CLIP_STD",
    "ClipModel",
    "ClipPreprocess",
    "OpenClipModel",
    "TransformersClipModel",
    "load_clip",
    "load_state_dict_file",
]

Backend = Literal["auto", "transformers", "open_clip"]
BACKENDS: tuple[str, ...] = SCORER_BACKENDS
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin", ".ckpt")

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
"""Per-channel mean CLIP was trained with (OpenAI); the default when a model states none."""
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""Per-channel std CLIP was trained with (OpenAI); the default when a model states none."""

_OPENAI_VOCAB_SIZE = 49408


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIP image preprocessing, read from the model's config.

    Attributes:
        resize_size: the image's shortest side is resized to this (bicubic, antialiased).
        crop_size: then a centred ``crop_size²`` square is cut; equals the ViT's input size.
        mean: per-channel normalization mean (RGB).
        std: per-channel normalization std (RGB).
    """

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


# --------------------------------------------------------------------------------------------------
# Model wrappers


class ClipModel(ABC):
    """A loaded CLIP, frozen, on one device, with our masked vision forward.

    A host that manages device memory (ComfyUI) sets :attr:`before_use` to a callable that puts the
    weights on the compute device; :meth:`ready` calls it before every use, so the weights may be
    offloaded in between (ARCHITECTURE.md §5).

    Attributes:
        backend: ``"transformers"`` or ``"open_clip"``.
        path: the file or folder it was loaded from.
        dtype: the precision it runs in (:attr:`device`: where its weights are now).
        model: the library's ``nn.Module``.
        before_use: the host's loading hook, ``None`` when the weights never move.
        image_size: the ViT's square input size ``S``.
        patch_size: the ViT's patch size ``p``; the token grid is ``(S/p)²`` plus CLS.
        preprocess: the image preprocessing of :class:`ClipPreprocess`.
    """

    backend: str
    path: Path
    dtype: torch.dtype
    image_size: int
    patch_size: int
    preprocess: ClipPreprocess
    model: nn.Module
    before_use: Callable[[], None] | None = None

    @property
    def device(self) -> torch.device:
        """Where the weights are now (inputs are moved there)."""
        return next(self.model.parameters()).device

    def ready(self) -> torch.device:
        """Run the host's loading hook (if any); the device the weights are then on."""
        if self.before_use is not None:
            self.before_use()
        return self.device

    @property
    def grid_size(self) -> int:
        """Patches per side, ``S // p``."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Vision tokens ``L = 1 + (S/p)²`` (CLS first)."""
        return 1 + self.grid_size**2

    @abstractmethod
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """``[T, D]`` projected text features (CLIP's ``get_text_features``), float32."""

    @abstractmethod
    def encode_image(self, pixels: Tensor) -> Tensor:
        """``[N, D]`` the library's own image features for preprocessed ``pixels: [N,3,S,S]``."""

    @abstractmethod
    def encode_image_masked(self, pixels: Tensor, attn_bias: Tensor) -> Tensor:
        """``[N, D]`` image features with ``attn_bias: [N, L, L]`` added to every layer's attention logits.

        Output is pooled CLS → post-layernorm → projection, as the library's image features. Every
        row of ``attn_bias`` must keep at least one finite entry (CLS is always attendable).
        """


class TransformersClipModel(ClipModel):
    """A transformers ``CLIPModel`` (see module docstring for the folder layout)."""

    backend = "transformers"

    def __init__(
        self,
        model: nn.Module,
        tokenize: Callable[[Sequence[str]], tuple[Tensor, Tensor | None]],
        path: Path,
        dtype: torch.dtype,
        preprocess: ClipPreprocess,
    ) -> None:
        self.model = model
        self._tokenize = tokenize
        self.path = path
        self.dtype = dtype
        vision = model.config.vision_config
        self.image_size = int(vision.image_size)
        self.patch_size = int(vision.patch_size)
        self.preprocess = preprocess

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        ids, attention = self._tokenize(texts)
        out = self.model.text_model(
            input_ids=ids.to(self.device),
            attention_mask=None if attention is None else attention.to(self.device),
        )
        pooled = out.pooler_output if hasattr(out, "pooler_output") else out[1]
        return self.model.text_projection(pooled).float()

    @torch.inference_mode()
    def encode_image(self, pixels: Tensor) -> Tensor:
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        # transformers 5 returns a model output whose pooler_output holds the projected features.
        features = out if isinstance(out, Tensor) else out.pooler_output
        return features.float()

    @torch.inference_mode()
    def encode_image_masked(self, pixels: Tensor, attn_bias: Tensor) -> Tensor:
        vision = self.model.vision_model
        h = vision.embeddings(pixels.to(self.device, self.dtype))
        h = vision.pre_layrnorm(h)
        # [N,1,L,L]: one bias per image, shared by all heads, as the paper's mask.
        bias = attn_bias.to(self.device, h.dtype).unsqueeze(1)
        for layer in vision.encoder.layers:
            h = _transformers_layer(layer, h, bias)
        pooled = vision.post_layernorm(h[:, 0])
        return self.model.visual_projection(pooled).float()


def _transformers_layer(layer: nn.Module, h: Tensor, bias: Tensor) -> Tensor:
    """One ``CLIPEncoderLayer`` (pre-LN attention + MLP) with an additive attention bias.

    Written against the layer's own sub-modules rather than its ``forward`` so the bias is applied the
    same way whatever attention implementation (eager/sdpa/flash) the model was configured with.
    """
    attn = layer.self_attn
    x = layer.layer_norm1(h)
    n, length, width = x.shape
    heads = attn.num_heads
    q = attn.q_proj(x).view(n, length, heads, -1).transpose(1, 2)
    k = attn.k_proj(x).view(n, length, heads, -1).transpose(1, 2)
    v = attn.v_proj(x).view(n, length, heads, -1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
    h = h + attn.out_proj(o.transpose(1, 2).reshape(n, length, width))
    return h + layer.mlp(layer.layer_norm2(h))


class OpenClipModel(ClipModel):
    """An open_clip ``CLIP`` with a plain ViT image tower (see module docstring for the files)."""

    backend = "open_clip"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[..., Tensor],
        path: Path,
        architecture: str,
        dtype: torch.dtype,
        preprocess: ClipPreprocess,
    ) -> None:
        self.model = model
        self._tokenizer = tokenizer
        self.path = path
        self.architecture = architecture
        self.dtype = dtype
        visual = model.visual
        self.image_size = int(_square(visual.image_size, "image_size", path))
        self.patch_size = int(_square(visual.patch_size, "patch_size", path))
        self.preprocess = preprocess

    @torch.inference_mode()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        ids = self._tokenizer(list(texts)).to(self.device)
        return self.model.encode_text(ids).float()

    @torch.inference_mode()
    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels.to(self.device, self.dtype)).float()

    @torch.inference_mode()
    def encode_image_masked(self, pixels: Tensor, attn_bias: Tensor) -> Tensor:
        visual = self.model.visual
        x = visual.conv1(pixels.to(self.device, self.dtype))  # [N, D, g, g]
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        x = visual.ln_pre(x)
        blocks = visual.transformer.resblocks
        heads = blocks[0].attn.num_heads
        # Both open_clip block types take a float [N*heads, L, L] mask, batch-major.
        mask = attn_bias.to(self.device, x.dtype).repeat_interleave(heads, dim=0)
        # open_clip < 3 runs its blocks sequence-first; newer versions batch-first.
        batch_first = getattr(visual.transformer, "batch_first", False)
        if not batch_first:
            x = x.transpose(0, 1)
        for block in blocks:
            x = block(x, attn_mask=mask)
        if not batch_first:
            x = x.transpose(0, 1)
        # Class-token pooling: layer-norming the CLS row equals pooling after layer-norming all rows.
        pooled = visual.ln_post(x[:, 0])
        return (pooled @ visual.proj).float()


def _square(value: Any, name: str, path: Path) -> int:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if pair[0] != pair[1]:
        raise OIRInputError(
            "clip_model", str(path), f"non-square ViT {name} {pair} is not supported", "use a square ViT CLIP"
        )
    return int(pair[0])


# --------------------------------------------------------------------------------------------------
# Weight files


def load_state_dict_file(path: str | Path, input_name: str = "clip_model") -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a weights-only pickle, on the CPU.

    Pickle files (``.pt/.pth/.bin/.ckpt``) are loaded with ``torch.load(weights_only=True)``, which
    refuses arbitrary objects: unpickling those could run code. A ``{"state_dict": {...}}`` wrapper and
    a DataParallel ``module.`` prefix are unwrapped.

    Raises:
        OIRInputError: missing file, unsupported suffix, corrupt file, a pickle that needs more than
            tensors, or contents that are not a tensor mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise OIRInputError(input_name, str(p), "file not found", "check the path or put the file there")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(p), device="cpu")
        except Exception as error:
            raise OIRInputError(
                input_name,
                str(p),
                f"cannot be read as safetensors ({type(error).__name__}: {error})",
                "re-download or re-export the checkpoint; the file is corrupt or truncated",
            ) from error
    elif suffix in PICKLE_SUFFIXES:
        try:
            data = torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise OIRInputError(
                input_name,
                str(p),
                "this pickle checkpoint holds more than tensors and was refused, because loading it "
                "could run arbitrary code",
                "convert it to .safetensors (load it once in a trusted session and save the state dict "
                "with safetensors.torch.save_file)",
            ) from error
        except Exception as error:
            raise OIRInputError(
                input_name,
                str(p),
                f"cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error})",
                "re-download the checkpoint or convert it to .safetensors",
            ) from error
    else:
        raise OIRInputError(
            input_name,
            str(p),
            f"unsupported checkpoint type {suffix!r}",
            "use a .safetensors file (or a weights-only .pt/.pth/.bin/.ckpt)",
        )
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not data:
        raise OIRInputError(input_name, str(p), "holds no state dict", "point at a model weights file")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise OIRInputError(
            input_name,
            str(p),
            f"holds non-tensor entries such as {bad[0]!r}",
            "save only the model's state dict (name → tensor)",
        )
    state = dict(data)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------------
# Loading


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise OIRInputError(
            "device", device, f"is not a torch device ({error})", "use 'cpu' or 'cuda'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OIRInputError("device", device, "CUDA is not available here", "use 'cpu'")
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
    return dev


def _detect_backend(path: Path) -> str:
    if path.is_dir():
        if (path / "config.json").is_file():
            return "transformers"
        if (path / "open_clip_config.json").is_file():
            return "open_clip"
        raise OIRInputError(
            "clip_model",
            str(path),
            "folder has neither config.json (transformers) nor open_clip_config.json (open_clip)",
            "point at a transformers CLIP folder or an open_clip .safetensors checkpoint",
        )
    if path.is_file():
        if path.suffix.lower() == ".safetensors" or path.suffix.lower() in PICKLE_SUFFIXES:
            return "open_clip"
        raise OIRInputError(
            "clip_model",
            str(path),
            f"unsupported file type {path.suffix!r}",
            "use a .safetensors open_clip checkpoint or a transformers CLIP folder",
        )
    raise OIRInputError(
        "clip_model",
        str(path),
        "file or folder not found",
        "put the CLIP folder or checkpoint at that path (or correct the path)",
    )


def load_clip(
    path: str | Path,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    architecture: str | None = None,
) -> ClipModel:
    """Load a CLIP from local files, frozen, onto ``device``.

    Nothing is cached here: a host keeps the loaded model as long as it needs it (ComfyUI: its node
    cache, freed by "Free model and node cache"), so no hidden copy outlives it.

    Args:
        path: a transformers CLIP folder, an open_clip checkpoint file, or an open_clip local-dir folder.
        backend: ``"transformers"``, ``"open_clip"``, or ``"auto"`` (a folder with ``config.json`` is
            transformers, a checkpoint file or an ``open_clip_config.json`` folder is open_clip).
        device: compute device; ``None`` means CUDA when available, else CPU.
        dtype: parameter dtype (``torch.float32`` default; ``float16``/``bfloat16`` on GPUs).
        architecture: open_clip only: a built-in architecture name, replacing the sidecar's.

    Returns:
        A frozen :class:`ClipModel` in eval mode.

    Raises:
        OIRInputError: missing or corrupt files, refused pickles, unknown/unsupported architectures,
            weights that do not match the config, an unknown backend.
    """
    if backend not in BACKENDS:
        raise OIRInputError("backend", backend, "unknown CLIP backend", f"use one of {BACKENDS}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise OIRInputError(
            "dtype", dtype, "must be a floating torch dtype", "use torch.float32 or torch.float16"
        )
    p = Path(path).expanduser()
    chosen = _detect_backend(p) if backend == "auto" else backend
    if not p.exists():
        raise OIRInputError(
            "clip_model",
            str(p),
            "file or folder not found",
            "put the CLIP folder or checkpoint at that path (or correct the path)",
        )
    dev = _resolve_device(device)
    if chosen == "transformers":
        return _load_transformers(p, dev, dtype)
    return _load_open_clip(p, dev, dtype, architecture)


def _freeze(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    module = module.to(device=device, dtype=dtype).eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _read_json(path: Path, input_name: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OIRInputError(
            input_name,
            str(path),
            f"is not valid JSON ({error})",
            "re-download the file from the model's repository (it must be the original JSON)",
        ) from error
    if not isinstance(data, dict):
        raise OIRInputError(
            input_name,
            str(path),
            "must hold a JSON object",
            "re-download the file from the model's repository (it must be the original JSON)",
        )
    return data


def _triple(value: Any, name: str, source: Path) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3:
        raise OIRInputError(
            name,
            value,
            f"in {source} must be three numbers (RGB)",
            "write three numbers, e.g. [0.4815, 0.4578, 0.4082] (CLIP's image_mean)",
        )
    if name.endswith("std") and any(v <= 0 for v in values):
        raise OIRInputError(
            name,
            value,
            f"in {source} must be positive",
            "write three positive numbers, e.g. [0.2686, 0.2613, 0.2758] (CLIP's image_std)",
        )
    return (values[0], values[1], values[2])


# ---- transformers


def _transformers_weights(folder: Path) -> dict[str, Tensor]:
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return load_state_dict_file(single)
    if index.is_file():
        weight_map = _read_json(index, "clip_model").get("weight_map", {})
        state: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            state.update(load_state_dict_file(folder / shard))
        return state
    for name in ("pytorch_model.bin", "pytorch_model.pt", "model.pt"):
        if (folder / name).is_file():
            return load_state_dict_file(folder / name)
    raise OIRInputError(
        "clip_model",
        str(folder),
        "no weights found (model.safetensors, model.safetensors.index.json or pytorch_model.bin)",
        "copy the model's weight files into the folder",
    )


def _transformers_preprocess(folder: Path, image_size: int) -> ClipPreprocess:
    config_path = folder / "preprocessor_config.json"
    if not config_path.is_file():
        return ClipPreprocess(image_size, image_size, CLIP_MEAN, CLIP_STD)
    cfg = _read_json(config_path, "clip_model")
    mean = _triple(cfg.get("image_mean", CLIP_MEAN), "image_mean", config_path)
    std = _triple(cfg.get("image_std", CLIP_STD), "image_std", config_path)
    size = cfg.get("size", image_size)
    if isinstance(size, dict):
        size = size.get("shortest_edge", size.get("height", image_size))
    crop = cfg.get("crop_size", image_size)
    if isinstance(crop, dict):
        if crop.get("height", image_size) != crop.get("width", image_size):
            raise OIRInputError(
                "clip_model", str(config_path), f"non-square crop_size {crop}", "use a square crop"
            )
        crop = crop.get("height", image_size)
    if int(crop) != image_size or int(size) < int(crop):
        raise OIRInputError(
            "clip_model",
            str(config_path),
            f"crop_size {crop} / size {size} do not fit the ViT's image_size {image_size}",
            "use the preprocessor_config.json that came with these weights",
        )
    return ClipPreprocess(int(size), int(crop), mean, std)


def _transformers_tokenizer(
    folder: Path, text_config: Any
) -> Callable[[Sequence[str]], tuple[Tensor, Tensor | None]]:
    context = int(text_config.max_position_embeddings)
    has_files = (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    )
    if has_files:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:
            raise OIRInputError(
                "clip_model",
                str(folder),
                f"the tokenizer files cannot be loaded ({type(error).__name__}: {error})",
                "copy tokenizer.json (or vocab.json and merges.txt) from the model's repository",
            ) from error

        def tokenize(texts: Sequence[str]) -> tuple[Tensor, Tensor | None]:
            enc = tokenizer(
                list(texts), padding=True, truncation=True, max_length=context, return_tensors="pt"
            )
            return enc["input_ids"], enc["attention_mask"]

        return tokenize

    # No tokenizer files: open_clip's SimpleTokenizer carries the original CLIP BPE (same ids as
    # OpenAI's/transformers' CLIP tokenizer). It only fits a text model with that vocabulary and an
    # EOS id the pooling can find (49407, or the legacy 2 meaning "argmax id", which is 49407 too).
    eos = getattr(text_config, "eos_token_id", None)
    if int(text_config.vocab_size) != _OPENAI_VOCAB_SIZE or eos not in (2, _OPENAI_VOCAB_SIZE - 1):
        raise OIRInputError(
            "clip_model",
            str(folder),
            "the folder has no tokenizer files and the text model does not use CLIP's standard vocabulary",
            "copy tokenizer.json (or vocab.json and merges.txt) from the model's repository into the folder",
        )
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer(context_length=context)

    def tokenize_simple(texts: Sequence[str]) -> tuple[Tensor, Tensor | None]:
        # Causal attention means the zero padding after EOS never reaches the pooled EOS token.
        return simple(list(texts), context_length=context), None

    return tokenize_simple


def _load_transformers(folder: Path, device: torch.device, dtype: torch.dtype) -> ClipModel:
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise OIRInputError(
            "clip_model",
            str(folder),
            "is not a transformers CLIP folder (no config.json)",
            "point at the folder holding config.json and model.safetensors",
        )
    from transformers import CLIPConfig, CLIPModel

    raw = _read_json(folder / "config.json", "clip_model")
    if raw.get("model_type") != "clip":
        raise OIRInputError(
            "clip_model",
            str(folder),
            f"config.json has model_type {raw.get('model_type')!r}, not 'clip'",
            "use a full CLIP model (text and vision towers), e.g. openai/clip-vit-base-patch16",
        )
    try:
        config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:
        raise OIRInputError(
            "clip_model", str(folder), f"config.json is invalid ({error})", "use the model's original config"
        ) from error
    state = _transformers_weights(folder)
    model = CLIPModel(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids are derived buffers that older checkpoints saved and newer ones omit.
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise OIRInputError(
            "clip_model",
            str(folder),
            f"weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})",
            "use the config.json that was saved with these weights",
        )
    image_size = int(config.vision_config.image_size)
    return TransformersClipModel(
        model=_freeze(model, device, dtype),
        tokenize=_transformers_tokenizer(folder, config.text_config),
        path=folder,
        dtype=dtype,
        preprocess=_transformers_preprocess(folder, image_size),
    )


# ---- open_clip


def _open_clip_files(path: Path, architecture: str | None) -> tuple[Path, dict[str, Any]]:
    """``(checkpoint, spec)`` where spec holds architecture, optional model_cfg and preprocess_cfg."""
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise OIRInputError(
                "clip_model",
                str(path),
                "folder has no open_clip_config.json",
                "point at an open_clip .safetensors checkpoint (with its <name>.json) or use backend "
                "'transformers' for a folder with config.json",
            )
        spec = _read_json(path / "open_clip_config.json", "clip_model")
        if "model_cfg" not in spec:
            raise OIRInputError(
                "clip_model",
                str(path),
                "open_clip_config.json has no model_cfg",
                "use open_clip's local-dir layout",
            )
        for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors"):
            if (path / name).is_file():
                return path / name, {"architecture": architecture or path.name, **spec}
        raise OIRInputError(
            "clip_model", str(path), "no open_clip_model.safetensors in the folder", "copy the weights there"
        )
    sidecar = path.with_suffix(".json")
    spec = _read_json(sidecar, "clip_model") if sidecar.is_file() else {}
    if architecture is not None and architecture != spec.get("architecture"):
        # The caller names another architecture, so the sidecar's custom config describes a different one.
        spec = {k: v for k, v in spec.items() if k != "model_cfg"}
        spec["architecture"] = architecture
    if not spec.get("architecture"):
        raise OIRInputError(
            "architecture",
            None,
            f"the architecture of {path.name} is unknown (no {sidecar.name} next to it)",
            f'write {sidecar.name} with {{"architecture": "ViT-B-16"}} (the open_clip model name) '
            "or pass the architecture",
        )
    return path, spec


def _open_clip_config(spec: Mapping[str, Any]) -> dict[str, Any]:
    import open_clip

    arch = str(spec["architecture"])
    cfg = spec.get("model_cfg")
    if cfg is None:
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            raise OIRInputError(
                "architecture",
                arch,
                "is not an open_clip architecture",
                f"use an open_clip model name such as {close or ['ViT-B-16', 'ViT-L-14']}, "
                'or give "model_cfg" in the sidecar json',
            )
    if not isinstance(cfg, Mapping):
        raise OIRInputError("model_cfg", cfg, "must be a JSON object", "use an open_clip model config")
    cfg = copy.deepcopy(dict(cfg))
    vision = cfg.get("vision_cfg", {})
    text = cfg.get("text_cfg", {})
    unsupported = [
        ("vision_cfg.timm_model_name", "timm_model_name" in vision),
        ("text_cfg.hf_model_name", "hf_model_name" in text),
        ("text_cfg.hf_tokenizer_name", "hf_tokenizer_name" in text),
        ("multimodal_cfg", "multimodal_cfg" in cfg),
        ("vision_cfg.attentional_pool", bool(vision.get("attentional_pool", False))),
        ("vision_cfg.pool_type", vision.get("pool_type", "tok") != "tok"),
        ("vision_cfg.layers (ResNet)", isinstance(vision.get("layers"), (list, tuple))),
    ]
    found = [name for name, bad in unsupported if bad]
    if found:
        raise OIRInputError(
            "architecture",
            arch,
            f"is not supported by the masked encoder ({', '.join(found)})",
            "use a plain ViT CLIP with class-token pooling (e.g. ViT-B-16, ViT-L-14)",
        )
    return cfg


def _load_open_clip(
    path: Path, device: torch.device, dtype: torch.dtype, architecture: str | None
) -> ClipModel:
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    checkpoint, spec = _open_clip_files(path, architecture)
    cfg = _open_clip_config(spec)
    arch = str(spec["architecture"])
    custom_text = bool(cfg.pop("custom_text", False))
    tokenizer_kwargs = dict(cfg.get("text_cfg", {}).get("tokenizer_kwargs", {}) or {})
    try:
        model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**cfg)
    except Exception as error:
        raise OIRInputError(
            "model_cfg",
            arch,
            f"cannot build the model ({type(error).__name__}: {error})",
            "fix the model config",
        ) from error
    state = load_state_dict_file(checkpoint)
    state.pop("text.transformer.embeddings.position_ids", None)
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise OIRInputError(
            "architecture",
            arch,
            f"does not match the checkpoint {checkpoint.name} ({str(error).splitlines()[0]})",
            "give the architecture these weights were trained with (e.g. ViT-B-16 vs ViT-B-32, "
            "-quickgelu variants for OpenAI weights)",
        ) from error
    if int(model.vocab_size) < _OPENAI_VOCAB_SIZE:
        raise OIRInputError(
            "model_cfg",
            arch,
            f"text vocab_size {model.vocab_size} is smaller than the CLIP tokenizer's {_OPENAI_VOCAB_SIZE}",
            "use a text tower with CLIP's vocabulary",
        )
    image_size = _square(model.visual.image_size, "image_size", path)
    pp = dict(spec.get("preprocess_cfg", {}) or {})
    preprocess = ClipPreprocess(
        resize_size=image_size,
        crop_size=image_size,
        mean=_triple(pp.get("mean", CLIP_MEAN), "preprocess_cfg.mean", checkpoint),
        std=_triple(pp.get("std", CLIP_STD), "preprocess_cfg.std", checkpoint),
    )
    tokenizer = SimpleTokenizer(context_length=int(model.context_length), **tokenizer_kwargs)
    return OpenClipModel(
        model=_freeze(model, device, dtype),
        tokenizer=tokenizer,
        path=path,
        architecture=arch,
        dtype=dtype,
        preprocess=preprocess,
    )
