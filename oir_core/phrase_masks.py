"""Masks from words: where the diffusion model itself places an object (ARCHITECTURE.md §4.7).

OIR needs one mask per edited object. Two signals of the model localise a phrase of the original
prompt without a segmentation model:

- **cross-attention** (the signal Prompt-to-Prompt edits with): at every cross-attention layer of a
  UNet, the attention probability of each image position on the phrase's tokens. The aggregation
  rule (:class:`AttentionMaps`): per layer, the probabilities of the phrase's tokens are summed
  and averaged over heads, giving an ``[h, w]`` map at that layer's resolution; each map is resized
  bilinearly to the latent grid; all layers (every block, every resolution) and all noise samples
  count equally. Flow transformers (SD3, Flux) have no cross-attention layer: text and image attend
  jointly, and this method refuses them.
- **noise difference** (DiffEdit, Couairon et al., ICLR 2023, §3.1): the latent noised to one level
  with several noise draws, denoised once with the original and once with the guided prompt (the
  object replaced); where the two predictions differ is the object. The map is the mean over draws
  and channels of ``|x0_original - x0_guided|`` (at one noise level this is DiffEdit's noise
  difference times ``1/sigma``, or ``(1 - sigma)/sigma`` for flow models: the same map once
  normalised). It works for every model family.

Both maps are min-max normalised to ``[0, 1]`` (the *soft* mask); the mask is ``soft >= threshold``.
The engine works on model-space latents ``[C, h, w]`` and returns maps on the latent grid; the
caller brings them to the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import OIRInputError
from .host import Host, Stage
from .metric import minmax_normalize
from .prompts import find_phrase
from .sampling import CallStats, ChunkedDenoiser

__all__ = [
    "AttentionMaps",
    "PhraseMask",
    "find_phrase_mask",
    "noise_difference_map",
    "noised_samples",
    "phrase_token_positions",
    "phrase_word_ids",
    "threshold_map",
]


@dataclass(frozen=True)
class PhraseMask:
    """A mask found from a phrase.

    Attributes:
        soft: ``[h, w]`` in ``[0, 1]`` on the latent grid (min-max normalised map).
        mask: ``[h, w]`` 0/1, ``soft >= threshold``.
        model_rows: model rows evaluated (per CFG branch; the mask runs without CFG).
    """

    soft: Tensor
    mask: Tensor
    model_rows: int


def phrase_word_ids(words: Sequence[str], phrase: str, occurrence: int = 0) -> list[int]:
    """1-based ids of the words of ``words`` that the phrase covers (ComfyUI's word ids).

    ``words`` are the prompt's words as the tokenizer saw them (emphasis syntax already removed),
    joined by single spaces for matching; the phrase is matched by the prompt builder's rules
    (whole words, case-insensitive, ``occurrence`` 1-based, 0 = it occurs exactly once).

    Raises:
        OIRInputError: the phrase is missing, ambiguous, or ``occurrence`` is out of range.
    """
    text = " ".join(words)
    start, end = find_phrase(text, phrase, occurrence or None)
    ids: list[int] = []
    position = 0
    for index, word in enumerate(words, start=1):
        word_start, word_end = position, position + len(word)
        if word_start < end and start < word_end:
            ids.append(index)
        position = word_end + 1
    return ids


def phrase_token_positions(token_word_ids: Sequence[Sequence[int]], word_ids: Sequence[int]) -> list[int]:
    """Positions in the encoded context ``[.., tokens, D]`` of the tokens of ``word_ids``.

    Args:
        token_word_ids: per tokenizer chunk (ComfyUI encodes a prompt in chunks of 77 tokens and
            concatenates them), the word id of every token (0 for start, end and padding).
        word_ids: the phrase's word ids (:func:`phrase_word_ids`).
    """
    wanted = set(word_ids)
    positions: list[int] = []
    offset = 0
    for chunk in token_word_ids:
        positions.extend(offset + i for i, word in enumerate(chunk) if word in wanted)
        offset += len(chunk)
    return positions


class AttentionMaps:
    """Accumulates cross-attention maps of a phrase over layers, heads, rows and levels.

    Args:
        latent_hw: ``(h, w)`` of the latent grid every layer's map is resized to.
        token_positions: the phrase's positions in the context (:func:`phrase_token_positions`).
    """

    def __init__(self, latent_hw: tuple[int, int], token_positions: Sequence[int]) -> None:
        if not token_positions:
            raise ValueError("token_positions must name at least one token")
        self.latent_hw = (int(latent_hw[0]), int(latent_hw[1]))
        self.token_positions = list(token_positions)
        self.total = torch.zeros(self.latent_hw, dtype=torch.float32)
        self.maps = 0
        self.layers: set[tuple[object, ...]] = set()

    def add(self, probabilities: Tensor, layer_hw: tuple[int, int], layer: tuple[object, ...] = ()) -> None:
        """Add one layer's attention probabilities ``[B, heads, h*w, tokens]`` (rows of one call)."""
        rows, _, positions, tokens = probabilities.shape
        h, w = int(layer_hw[0]), int(layer_hw[1])
        if positions != h * w:
            raise ValueError(f"{positions} query positions do not form a {h}x{w} layer")
        if max(self.token_positions) >= tokens:
            raise ValueError(
                f"the phrase's token {max(self.token_positions)} is beyond the context ({tokens})"
            )
        phrase = probabilities[..., self.token_positions].float().sum(-1).mean(1)  # [B, h*w]
        maps = phrase.reshape(rows, 1, h, w)
        if (h, w) != self.latent_hw:
            maps = F.interpolate(maps, size=self.latent_hw, mode="bilinear", align_corners=False)
        self.total += maps.sum(0)[0].cpu()
        self.maps += rows
        self.layers.add(layer)

    def mean(self) -> Tensor:
        """``[h, w]`` the mean map (every layer and row equally)."""
        if self.maps == 0:
            raise ValueError("no cross-attention layer was seen")
        return self.total / self.maps


def threshold_map(values: Tensor, threshold: float, rows: int) -> PhraseMask:
    """The soft mask (``values`` min-max normalised as the search's scores are; a constant map gives
    zeros) and the mask ``soft >= threshold``."""
    soft = minmax_normalize(values.flatten())[0].to(torch.float32).reshape(values.shape)
    return PhraseMask(soft=soft, mask=(soft >= threshold).float(), model_rows=rows)


def noised_samples(latent: Tensor, sigma: float, samples: int, seed: int, flow: bool) -> Tensor:
    """``[samples, C, h, w]``: the model-space latent ``[C, h, w]`` noised to ``sigma``.

    ``x = x0 + sigma * eps`` (noise and v-prediction models, k-diffusion sigma space) or
    ``x = (1 - sigma) * x0 + sigma * eps`` (flow models), with ``eps`` drawn on the CPU from ``seed``.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn((samples, *latent.shape), generator=generator, dtype=torch.float32)
    noise = noise.to(device=latent.device, dtype=latent.dtype)
    clean = latent.unsqueeze(0).expand_as(noise)
    scale = (1.0 - sigma) if flow else 1.0
    return clean * scale + noise * sigma


def _predict(host: Host, role: str, noisy: Tensor, sigma: float, stats: CallStats) -> Tensor:
    """``[N, C, h, w]`` clean estimates of ``noisy`` at ``sigma`` under ``role`` (``original``, or
    ``guided`` with every row on guided prompt 0), chunked as every stage is (``ChunkedDenoiser``)."""
    rows = noisy.shape[0]
    stage = Stage(role, torch.tensor([sigma]), rows, tuple(noisy.shape[1:]), "phrase mask", rows)  # type: ignore[arg-type]
    ids = None if role == "original" else torch.zeros(rows, dtype=torch.long)

    def body(denoiser, max_batch):  # type: ignore[no-untyped-def]
        return ChunkedDenoiser(denoiser, max_batch, stats)(noisy, torch.tensor(float(sigma)), ids)

    return host.run(stage, body)


def noise_difference_map(host: Host, noisy: Tensor, sigma: float, stats: CallStats) -> Tensor:
    """``[h, w]``: DiffEdit's map, the mean over rows and channels of ``|x0_original - x0_guided|``,
    from the original prompt and guided prompt 0 on the same noisy latents ``[N, C, h, w]``."""
    original = _predict(host, "original", noisy, sigma, stats)
    guided = _predict(host, "guided", noisy, sigma, stats)
    return (original.float() - guided.float()).abs().mean(dim=(0, 1)).cpu()


def find_phrase_mask(
    host: Host,
    latent: Tensor,
    *,
    method: str,
    sigma: float,
    samples: int,
    seed: int,
    flow: bool,
    threshold: float,
    attention: AttentionMaps | None = None,
) -> PhraseMask:
    """The phrase's mask on the latent grid (module docstring: both methods and their rules).

    Args:
        host: runs the model; the ``original`` role carries the original prompt, the ``guided``
            role (noise difference only) the prompt with the object replaced. No CFG (cfg 1).
        latent: ``[C, h, w]`` the source latent in model space.
        method: ``"cross_attention"`` (``attention`` must be the accumulator the host's attention
            capture fills) or ``"noise_difference"``.
        sigma: the noise level the latent is brought to.
        samples: noise draws (rows per prompt).
        seed: seed of the noise draws.
        flow: the model is a rectified-flow model (how noise is mixed in).
        threshold: the mask is ``soft >= threshold``.
    """
    noisy = noised_samples(latent, sigma, samples, seed, flow)
    stats = CallStats()
    if method == "cross_attention":
        if attention is None:
            raise ValueError("cross_attention needs the host's AttentionMaps")
        _predict(host, "original", noisy, sigma, stats)
        return threshold_map(attention.mean(), threshold, stats.rows)
    if method == "noise_difference":
        return threshold_map(noise_difference_map(host, noisy, sigma, stats), threshold, stats.rows)
    raise OIRInputError("method", method, "unknown method", "use cross_attention or noise_difference")


def check_mask_settings(threshold: float, samples: int, strength: float) -> None:
    """Refuse settings outside their ranges (before any model call)."""
    if not 0.0 < threshold <= 1.0:
        raise OIRInputError("threshold", threshold, "must be in (0, 1]", "use e.g. 0.5")
    if samples < 1:
        raise OIRInputError("draws", samples, "must be at least 1", "use e.g. 10 (DiffEdit's choice)")
    if not 0.0 < strength < 1.0:
        raise OIRInputError(
            "noise_strength", strength, "must be in (0, 1)", "use e.g. 0.5 (DiffEdit's choice)"
        )
