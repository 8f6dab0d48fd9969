"""Objects carried between OIR nodes on the pack's own sockets (``OIR_*`` types).

They hold ComfyUI CONDITIONINGs and engine results but never import ComfyUI, and are frozen so a
cached output cannot be changed by a downstream node.
"""

from __future__ import annotations

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
        eligible: per candidate, whether it may be chosen (coarse-to-fine keeps its approximate
            coarse candidates to anchor the score ranges); ``None``: all.
        grid_layout: per pair, the grid geometry of the preview image (for the frontend).
    """

    edit: OIREdit
    candidates: CandidateSet
    images: Tensor
    steps: int
    mode: str
    coarse: CandidateSet | None = None
    coarse_best: tuple[int, ...] = ()
    eligible: tuple[bool, ...] | None = None
    grid_layout: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def float_images(self) -> Tensor:
        """``[N, H, W, 3]`` float32 0..1 (ComfyUI's IMAGE layout) of the stored 8-bit candidates."""
        return self.images.float() / 255.0


@dataclass(frozen=True)
class ChosenSteps:
    """Output of the Mask Metric Scorer (socket ``OIR_STEPS``).

    Attributes:
        steps: the step ``t_k*`` used for each pair (after manual overrides).
        searched: the search's own choice for each pair.
        tables: the full score table per pair.
        overridden: per pair, whether a manual override replaced the search's choice.
    """

    steps: tuple[int, ...]
    searched: tuple[int, ...]
    tables: tuple[ScoreTable, ...]
    overridden: tuple[bool, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "searched": list(self.searched),
            "overridden": list(self.overridden),
            "tables": [table.to_dict() for table in self.tables],
        }
