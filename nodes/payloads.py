"""Objects carried between OIR nodes on the pack's own sockets (``OIR_*`` types).

They hold ComfyUI CONDITIONINGs and engine results but never import ComfyUI, and are frozen so a
cached output cannot be changed by a downstream node.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..oir_core.candidates import CandidateSet
from ..oir_core.edit import EditPair
from ..oir_core.metric import ScoreTable
from ..oir_core.prompts import PromptPlan

Conditioning = list[list[Any]]


@dataclass(frozen=True)
class OIREdit:
    """Output of the Guided Prompt Builder (socket ``OIR_EDIT``).

    Attributes:
        pairs: the edit pairs, in chain order.
        plan: every prompt string (original, target, guided, score texts).
        guided_encodings: ``K`` CONDITIONINGs of the guided prompts, as the text encoder made them.
        encoder_keys: the dict keys the text encoder itself produces (``pooled_output``, ...); every
            other key of a user's conditioning (``control``, ``hooks``, areas) is inherited by the
            guided prompts (see :func:`nodes.conditioning.inherit_conditioning`).
    """

    pairs: tuple[EditPair, ...]
    plan: PromptPlan
    guided_encodings: tuple[Conditioning, ...]
    encoder_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SearchRecipe:
    """What the search's candidates were made with, held by reference (ComfyUI's cache holds these
    objects anyway). The reassembly reuses the search's latents only when it was given the very same
    objects and numbers: anything else may change the path, and it then denoises as before."""

    model: Any
    trajectory: Any
    edit: Any
    original: Any
    negative: Any
    cfg: float

    def differences(self, other: SearchRecipe) -> list[str]:
        """The inputs (by name) that are not the same objects / values in ``other``."""
        names = ("model", "trajectory", "edit", "original", "negative")
        found = [name for name in names if getattr(self, name) is not getattr(other, name)]
        return found + (["cfg"] if self.cfg != other.cfg else [])


@dataclass(frozen=True)
class CandidateBundle:
    """Output of the Parallel Step Search (socket ``OIR_CANDIDATES``).

    Attributes:
        edit: the edit the candidates were made for.
        candidates: the candidates to choose from (model-space latents, pair-major).
        images: ``[N, H, W, 3]`` uint8, the decoded candidates, same order (8-bit as the official
            code keeps them: a quarter of float32's memory in the node cache; see :meth:`float_images`).
        steps: the trajectory's step count ``T``.
        mode: the search mode used.
        coarse: the coarse round of a coarse-to-fine search, or ``None``.
        coarse_best: the best coarse step per pair, or empty.
        grid_layout: per pair, the grid geometry of the preview image (for the frontend).
        recipe: the search's inputs, for the reassembly's reuse check (``None``: reuse nothing).
        key: :func:`candidates_key` of these candidates: the search's strip and the scorer's chart
            carry it, so the frontend matches scores to the strip showing the same candidates.
    """

    edit: OIREdit
    candidates: CandidateSet
    images: Tensor
    steps: int
    mode: str
    coarse: CandidateSet | None = None
    coarse_best: tuple[int, ...] = ()
    grid_layout: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    recipe: SearchRecipe | None = None
    key: str = ""

    def float_images(self) -> Tensor:
        """``[N, H, W, 3]`` float32 0..1 (ComfyUI's IMAGE layout) of the stored 8-bit candidates."""
        return self.images.float() / 255.0


def candidates_key(images: Tensor, layouts: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str:
    """A name for one set of candidates, from what the frontend shows of them: the 8-bit pictures
    ``[N, H, W, 3]`` and the grid layouts (pairs, steps, geometry).

    The search's strip and the scorer's chart both carry it (``ui``), so the strip takes the
    scores meant for its own candidates, whatever the order ComfyUI sends the two nodes' results in
    (a cached re-queue sends them independently) and wherever the nodes sit (a subgraph, a reroute).
    The same candidates always get the same key; others, in practice, never do.
    """
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps(list(layouts), sort_keys=True).encode("utf-8"))
    digest.update(str(tuple(images.shape)).encode("ascii"))
    digest.update(images.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ChosenSteps:
    """Output of the Mask Metric Scorer (socket ``OIR_STEPS``).

    Attributes:
        steps: the step ``t_k*`` used for each pair (after manual overrides).
        searched: the search's own choice for each pair.
        tables: the full score table per pair.
        overridden: per pair, whether a manual override replaced the search's choice.
        search: the candidates the steps were chosen from (the reassembly reuses their latents).
    """

    steps: tuple[int, ...]
    searched: tuple[int, ...]
    tables: tuple[ScoreTable, ...]
    overridden: tuple[bool, ...]
    search: CandidateBundle | None = None

    def searched_latents(self, recipe: SearchRecipe, level: int) -> tuple[list[Tensor | None], list[str]]:
        """Per pair, the search's latent of the chosen candidate at reassembly level ``level``, and
        per pair why there is none (``""`` when there is one).

        A latent is reused only when the reassembly has exactly the search's inputs
        (:class:`SearchRecipe`), the search kept that level, and the chosen step was computed
        exactly (coarse-to-fine candidates are approximations, and so is an override to a step the
        search did not try).
        """
        count = len(self.steps)
        bundle = self.search
        if bundle is None or bundle.recipe is None:
            return [None] * count, ["the search kept no latents"] * count
        differing = bundle.recipe.differences(recipe)
        if differing:
            reason = f"the reassembly's {', '.join(differing)} differ from the search's"
            return [None] * count, [reason] * count
        if not bundle.candidates.schedule.is_full:
            reason = (
                f"{bundle.mode} only approximated its candidates (sub-schedule stride "
                f"{bundle.candidates.schedule.stride}); the reassembly denoises the chosen step exactly"
            )
            return [None] * count, [reason] * count
        kept = sorted(bundle.candidates.kept)
        if not kept:
            reason = "the search kept no latents (no reassembly with constant R and r in its prompt)"
            return [None] * count, [reason] * count
        if level not in kept:
            reason = f"the search kept level(s) {kept}, not R = {level} (re-run the search to reuse)"
            return [None] * count, [reason] * count
        latents: list[Tensor | None] = []
        reasons: list[str] = []
        for pair, step in enumerate(self.steps):
            latent = bundle.candidates.kept_latent(pair, step, level)
            latents.append(latent)
            reasons.append(
                "" if latent is not None else f"step {step} was not computed exactly by the search"
            )
        return latents, reasons

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "searched": list(self.searched),
            "overridden": list(self.overridden),
            "tables": [table.to_dict() for table in self.tables],
        }
