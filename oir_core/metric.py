"""The OIR search metric: score maths, the scorer protocol and the search driver.

OIR picks, for each edit pair, the inversion step whose candidate best trades *editability inside
the mask* against *fidelity outside it* (paper §"search metric"; ARCHITECTURE.md §4.4):

1. ``S_e(t)``: how well the masked region of candidate ``t`` matches the target phrase (CLIP, see
   :mod:`oir_core.clip_scorer`).
2. ``S_ne(t) = -MSE(candidate_t, original)`` outside the mask.
3. Each score is min-max normalized over the candidates, ``S = w_e·Ŝ_e + w_ne·Ŝ_ne`` (default
   0.5/0.5; the official code sums 1:1, which has the same argmax), and the chosen step is the argmax,
   ties going to the smaller step.

**All-equal guard.** When every candidate has the same value of one score (within
``1e-9 · max(1, max|score|)``), min-max normalization is undefined (the official code divides by
zero). That score's normalized values are then all ``0.0`` and flagged ``constant`` in the table, so
the *other* score alone decides the argmax. When both are constant, every combined score is 0 and the
smallest step wins.

This module is pure tensor maths plus a cheap, weight-free scorer (:class:`ColorTargetScorer`) so the
search can be tested and benchmarked without a CLIP model.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from .errors import OIRInputError
from .masks import as_mask_batch, resize_mask_nearest

__all__ = [
    "DEFAULT_COLORS",
    "DEFAULT_WEIGHTS",
    "CandidateScorer",
    "ColorTargetScorer",
    "ScoreTable",
    "SearchMetric",
    "as_mask_batch",
    "check_candidates",
    "combine_scores",
    "masked_mse",
    "minmax_normalize",
    "resize_mask_nearest",
    "score_table",
    "search_scores",
    "select_index",
]

DEFAULT_WEIGHTS: tuple[float, float] = (0.5, 0.5)
"""``(w_editing, w_fidelity)`` of ARCHITECTURE.md §4.4."""

_GUARD_RTOL = 1e-9


# --------------------------------------------------------------------------------------------------
# Input checks shared by every scorer


def check_candidates(candidates: Tensor, original: Tensor) -> None:
    """Validate ``candidates: [N,H,W,3]`` and ``original: [H,W,3]`` (ComfyUI IMAGE layout, 0..1).

    Raises:
        OIRInputError: wrong rank / channel count, size mismatch, no candidates, non-finite values.
    """
    if not isinstance(candidates, Tensor) or candidates.ndim != 4 or candidates.shape[-1] != 3:
        raise OIRInputError(
            "candidates",
            getattr(candidates, "shape", candidates),
            "must be an image batch [N,H,W,3]",
            "pass decoded candidate images as a ComfyUI IMAGE tensor",
        )
    if candidates.shape[0] == 0:
        raise OIRInputError(
            "candidates", tuple(candidates.shape), "holds no candidates", "search at least 1 step"
        )
    if not isinstance(original, Tensor) or original.ndim != 3 or original.shape[-1] != 3:
        raise OIRInputError(
            "original",
            getattr(original, "shape", original),
            "must be one image [H,W,3]",
            "pass the original image (take image[0] of a ComfyUI IMAGE batch)",
        )
    if tuple(original.shape) != tuple(candidates.shape[1:]):
        raise OIRInputError(
            "original",
            tuple(original.shape),
            f"size differs from the candidates' {tuple(candidates.shape[1:])}",
            "decode candidates at the original image's size (crop the image to a multiple of 8 first)",
        )


def masked_mse(a: Tensor, b: Tensor, keep: Tensor, reduction: Literal["all", "kept"] = "kept") -> Tensor:
    """Squared error between ``a`` and ``b`` where ``keep`` is 1 (the non-edited region).

    Args:
        a: ``[N, *S]`` candidates.
        b: ``[*S]`` or ``[N, *S]`` reference.
        keep: 0/1 weights broadcastable to ``[N, *S]``.
        reduction: ``"all"``: mean over *all* elements, zeros included (the official code's S_ne on
            CLIP tensors); ``"kept"``: sum over kept elements / their count (a true mean outside the
            mask). With nothing kept, ``"kept"`` returns 0 for every candidate: there is nothing to
            preserve, so fidelity cannot tell candidates apart.

    Returns:
        ``[N]`` float32 mean squared errors.
    """
    diff = (a.float() - b.float()) * keep.float()
    sq = diff.square().flatten(1)
    if reduction == "all":
        return sq.mean(dim=1)
    count = torch.broadcast_to(keep.float(), a.shape).flatten(1).sum(dim=1)
    return torch.where(count > 0, sq.sum(dim=1) / count.clamp_min(1.0), torch.zeros_like(count))


# --------------------------------------------------------------------------------------------------
# Normalization, combination, selection


def minmax_normalize(scores: Tensor) -> tuple[Tensor, bool]:
    """Min-max normalize ``scores: [N]`` to 0..1 over the candidates.

    Returns:
        ``(normalized [N] float64, constant)``. ``constant`` is True when all scores are equal (within
        ``1e-9 · max(1, max|score|)``); the normalized values are then all 0 (the module's guard).
    """
    s = scores.detach().to(torch.float64).flatten()
    lo, hi = s.min(), s.max()
    span = hi - lo
    tol = _GUARD_RTOL * max(1.0, float(s.abs().max()))
    if float(span) <= tol:
        return torch.zeros_like(s), True
    return (s - lo) / span, False


def _check_weights(weights: Sequence[float]) -> tuple[float, float]:
    try:
        w_e, w_ne = (float(w) for w in weights)
    except (TypeError, ValueError):
        raise OIRInputError(
            "weights", weights, "must be two numbers (editing, fidelity)", "use e.g. (0.5, 0.5)"
        ) from None
    if not (math.isfinite(w_e) and math.isfinite(w_ne)) or w_e < 0 or w_ne < 0 or w_e + w_ne == 0:
        raise OIRInputError(
            "weights",
            weights,
            "must be finite, non-negative and not both zero",
            "use e.g. (0.5, 0.5); (1, 0) ranks by editability only",
        )
    return w_e, w_ne


def combine_scores(editing_norm: Tensor, fidelity_norm: Tensor, weights: Sequence[float]) -> Tensor:
    """``S = w_e·Ŝ_e + w_ne·Ŝ_ne`` for ``[N]`` normalized scores; returns ``[N]`` float64."""
    w_e, w_ne = _check_weights(weights)
    return w_e * editing_norm.to(torch.float64) + w_ne * fidelity_norm.to(torch.float64)


def select_index(steps: Sequence[int], combined: Tensor) -> int:
    """Index of the best candidate: argmax of ``combined: [N]``, ties to the smaller step.

    Ties are exact equality (equal normalized inputs give bit-identical combined scores); a 1e-12
    slack absorbs the last-bit noise of summing in a different order.
    """
    c = combined.to(torch.float64)
    best = float(c.max())
    tied = [i for i in range(len(steps)) if float(c[i]) >= best - 1e-12]
    return min(tied, key=lambda i: steps[i])


@dataclass(frozen=True)
class ScoreTable:
    """The full search table for one edit pair (ARCHITECTURE.md §4.4), in candidate order.

    Attributes:
        steps: inversion step ``t`` of each candidate.
        editing: raw ``S_e`` per candidate.
        fidelity: raw ``S_ne`` per candidate (``-MSE``, so higher is better).
        editing_norm: min-max normalized ``S_e`` (all 0 when ``editing_constant``).
        fidelity_norm: min-max normalized ``S_ne`` (all 0 when ``fidelity_constant``).
        combined: ``w_e·Ŝ_e + w_ne·Ŝ_ne``.
        chosen_index: the argmax's position in these lists.
        chosen_step: ``steps[chosen_index]``, the pair's optimal inversion step ``t_k*``.
        weights: ``(w_e, w_ne)``.
        editing_constant: all ``S_e`` equal, so only fidelity decided.
        fidelity_constant: all ``S_ne`` equal, so only editability decided.
    """

    steps: list[int]
    editing: list[float]
    fidelity: list[float]
    editing_norm: list[float]
    fidelity_norm: list[float]
    combined: list[float]
    chosen_index: int
    chosen_step: int
    weights: tuple[float, float]
    editing_constant: bool = False
    fidelity_constant: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists of Python floats/ints)."""
        return {
            "steps": list(self.steps),
            "editing": list(self.editing),
            "fidelity": list(self.fidelity),
            "editing_norm": list(self.editing_norm),
            "fidelity_norm": list(self.fidelity_norm),
            "combined": list(self.combined),
            "chosen_index": self.chosen_index,
            "chosen_step": self.chosen_step,
            "weights": list(self.weights),
            "editing_constant": self.editing_constant,
            "fidelity_constant": self.fidelity_constant,
        }


def _check_steps(steps: Sequence[int], n: int) -> list[int]:
    out: list[int] = []
    for s in steps:
        try:
            if isinstance(s, bool):
                raise TypeError
            out.append(operator.index(s))
        except TypeError:
            raise OIRInputError(
                "steps", list(steps), "must be whole numbers", "pass inversion step indices"
            ) from None
    if len(out) != n:
        raise OIRInputError(
            "steps", out, f"has {len(out)} entries for {n} candidates", "give one step per candidate"
        )
    if len(set(out)) != len(out):
        raise OIRInputError("steps", out, "contains duplicates", "give each candidate its own step")
    return out


def score_table(
    steps: Sequence[int],
    editing: Tensor,
    fidelity: Tensor,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
) -> ScoreTable:
    """Normalize, combine and select from raw ``[N]`` scores (ARCHITECTURE.md §4.4).

    Raises:
        OIRInputError: mismatched lengths, duplicate steps, bad weights or non-finite scores.
    """
    e = editing.detach().to(torch.float64).flatten().cpu()
    f = fidelity.detach().to(torch.float64).flatten().cpu()
    step_list = _check_steps(steps, e.numel())
    if f.numel() != e.numel():
        raise OIRInputError(
            "fidelity",
            f.numel(),
            f"has a different length than editing ({e.numel()})",
            "score every candidate",
        )
    if e.numel() == 0:
        raise OIRInputError("steps", step_list, "no candidates to choose from", "search at least 1 step")
    for name, s in (("editing", e), ("fidelity", f)):
        if not torch.isfinite(s).all():
            bad = [step_list[i] for i in torch.nonzero(~torch.isfinite(s)).flatten().tolist()]
            raise OIRInputError(
                "candidates",
                f"steps {bad}",
                f"the {name} score is NaN or inf (the candidate images hold NaN/inf)",
                "decode in float32 or lower the CFG scale",
            )
    w = _check_weights(weights)
    e_n, e_const = minmax_normalize(e)
    f_n, f_const = minmax_normalize(f)
    combined = combine_scores(e_n, f_n, w)
    idx = select_index(step_list, combined)
    return ScoreTable(
        steps=step_list,
        # + 0.0 turns IEEE -0.0 (from negating a zero MSE) into 0.0 for the JSON report.
        editing=(e + 0.0).tolist(),
        fidelity=(f + 0.0).tolist(),
        editing_norm=e_n.tolist(),
        fidelity_norm=f_n.tolist(),
        combined=combined.tolist(),
        chosen_index=idx,
        chosen_step=step_list[idx],
        weights=w,
        editing_constant=e_const,
        fidelity_constant=f_const,
    )


# --------------------------------------------------------------------------------------------------
# Scorers


@runtime_checkable
class CandidateScorer(Protocol):
    """Raw search scores for one edit pair's candidates.

    ``score(candidates [N,H,W,3], original [H,W,3], mask [H,W] or [1,H,W], target_text)`` returns
    ``(editing [N], fidelity [N])``: higher is better for both (fidelity is ``-MSE``). Images are float
    0..1; the mask is 0..1 at any resolution and marks the pair's *edited* region. Implementations
    must score each candidate independently of the others in the batch, so chunking is exact.
    """

    def score(
        self, candidates: Tensor, original: Tensor, mask: Tensor, target_text: str
    ) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class SearchMetric:
    """The whole search metric (ARCHITECTURE.md §4.4): a scorer and the weights ``(w_e, w_ne)``.

    One object serves every place that ranks candidates (the coarse-to-fine round and the final
    choice), so they cannot disagree on the scorer, its modes or the weights.
    """

    scorer: CandidateScorer
    weights: tuple[float, float] = DEFAULT_WEIGHTS

    def __post_init__(self) -> None:
        _check_weights(self.weights)


DEFAULT_COLORS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "gray": (0.5, 0.5, 0.5),
    "grey": (0.5, 0.5, 0.5),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "orange": (1.0, 0.5, 0.0),
}


class ColorTargetScorer:
    """A cheap deterministic :class:`CandidateScorer` that needs no weights (tests and benchmarks).

    - editing: ``-‖mean colour inside the mask − target colour‖₂``, the target colour looked up from
      ``target_text`` (a colour name of ``colors``, case-insensitive, or ``"#rrggbb"``);
    - fidelity: ``-MSE`` to the original over the pixels outside the mask (the ``pixels`` space).

    The mask is resized to the image (nearest) and thresholded at 0.5, like the CLIP scorer's.
    """

    def __init__(self, colors: Mapping[str, Sequence[float]] | None = None) -> None:
        table = DEFAULT_COLORS if colors is None else colors
        self.colors = {k.strip().lower(): tuple(float(c) for c in v) for k, v in table.items()}

    def target_color(self, target_text: str) -> Tensor:
        """``[3]`` RGB 0..1 for ``target_text``."""
        key = target_text.strip().lower()
        if key in self.colors:
            return torch.tensor(self.colors[key], dtype=torch.float32)
        if len(key) == 7 and key.startswith("#"):
            try:
                return torch.tensor([int(key[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])
            except ValueError:
                pass
        raise OIRInputError(
            "target_text",
            target_text,
            "is not a colour this scorer knows",
            f"use one of {sorted(self.colors)} or '#rrggbb'",
        )

    def score(
        self, candidates: Tensor, original: Tensor, mask: Tensor, target_text: str
    ) -> tuple[Tensor, Tensor]:
        check_candidates(candidates, original)
        m = as_mask_batch(mask)
        if m.shape[0] != 1:
            raise OIRInputError("mask", tuple(mask.shape), "must be one mask", "pass one mask per edit pair")
        inside = (resize_mask_nearest(m, tuple(candidates.shape[1:3])) > 0.5).float()[0]  # [H,W]
        target = self.target_color(target_text).to(candidates.device)
        n_in = inside.sum()
        if n_in == 0:
            raise OIRInputError("mask", tuple(mask.shape), "is empty", "paint the object to edit")
        mean_in = (candidates.float() * inside[None, :, :, None]).sum(dim=(1, 2)) / n_in  # [N,3]
        editing = -(mean_in - target).norm(dim=-1)
        fidelity = -masked_mse(candidates, original, (1.0 - inside)[None, :, :, None], reduction="kept")
        return editing.float(), fidelity.float()


def search_scores(
    scorer: CandidateScorer,
    steps: Sequence[int],
    candidates: Tensor,
    original: Tensor,
    mask: Tensor,
    target_text: str,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    chunk_size: int = 8,
) -> ScoreTable:
    """Score one pair's candidates in chunks and select its optimal step (ARCHITECTURE.md §4.4).

    Args:
        scorer: any :class:`CandidateScorer` (CLIP, or :class:`ColorTargetScorer`).
        steps: ``[N]`` inversion step of each candidate.
        candidates: ``[N,H,W,3]`` decoded candidates, 0..1 (may live on the CPU; each chunk is moved
            by the scorer).
        original: ``[H,W,3]`` the original image.
        mask: ``[H,W]`` or ``[1,H,W]`` this pair's mask.
        target_text: the pair's target phrase.
        weights: ``(w_e, w_ne)``.
        chunk_size: candidates scored per scorer call; bounds peak memory (50 × 512² at once would
            hold 50 CLIP activations).

    Returns:
        The full :class:`ScoreTable`.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise OIRInputError("chunk_size", chunk_size, "must be a whole number >= 1", "use e.g. 8")
    _check_weights(weights)
    check_candidates(candidates, original)
    step_list = _check_steps(steps, candidates.shape[0])
    editing: list[Tensor] = []
    fidelity: list[Tensor] = []
    for start in range(0, candidates.shape[0], chunk_size):
        e, f = scorer.score(candidates[start : start + chunk_size], original, mask, target_text)
        editing.append(e.detach().float().cpu().flatten())
        fidelity.append(f.detach().float().cpu().flatten())
    return score_table(step_list, torch.cat(editing), torch.cat(fidelity), weights)
