"""Declaring the edit: OIR Edit Pair and OIR Guided Prompt Builder."""

from __future__ import annotations

import json
from typing import Any

from comfy_api.latest import io

from ..oir_core.edit import EditPair, make_edit_pair, pair_texts
from ..oir_core.errors import OIRInputError
from ..oir_core.prompts import build_prompts
from .payloads import OIREdit
from .types import EditPairs, OIREditType

CATEGORY = "OIR/edit"


class OIREditPair(io.ComfyNode):
    """One object to change: its mask and its source/target phrases; chain them for more objects."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIREditPair",
            display_name="OIR Edit Pair",
            category=CATEGORY,
            description=(
                "Declares one object to edit: the mask of the object in the source image, the phrase "
                "that names it in the original prompt, and what it should become. Chain several pairs "
                "through 'edit_pairs' to edit several objects, each at its own optimal inversion step."
            ),
            inputs=[
                io.Mask.Input(
                    "mask", tooltip="Region of the object to edit (any resolution; painted, SAM, ...)."
                ),
                io.String.Input(
                    "source", default="dog", tooltip="Phrase of the original prompt naming the object."
                ),
                io.String.Input(
                    "target", default="cat", tooltip="What the object becomes; also the CLIP score text."
                ),
                io.Int.Input(
                    "occurrence",
                    default=0,
                    min=0,
                    max=64,
                    tooltip="Which occurrence of 'source' to replace (1-based); 0 = it occurs exactly once.",
                ),
                io.String.Input(
                    "guided_prompt",
                    default="",
                    multiline=True,
                    tooltip="Optional explicit guided prompt for this pair; empty = the original prompt "
                    "with only this pair replaced.",
                ),
                EditPairs.Input(
                    "edit_pairs", optional=True, tooltip="Earlier pairs of the chain (optional)."
                ),
            ],
            outputs=[
                EditPairs.Output(display_name="edit_pairs", tooltip="The chain with this pair appended.")
            ],
        )

    @classmethod
    def execute(
        cls,
        mask: Any,
        source: str,
        target: str,
        occurrence: int,
        guided_prompt: str = "",
        edit_pairs: tuple[EditPair, ...] | None = None,
    ) -> io.NodeOutput:
        earlier = tuple(edit_pairs or ())
        pair = make_edit_pair(mask, source, target, occurrence, guided_prompt, index=len(earlier) + 1)
        return io.NodeOutput((*earlier, pair))


class OIRGuidedPromptBuilder(io.ComfyNode):
    """Original, target and per-pair guided prompts, encoded with the checkpoint's CLIP."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OIRGuidedPromptBuilder",
            display_name="OIR Guided Prompt Builder",
            category=CATEGORY,
            description=(
                "Builds OIR's prompts from the original prompt and the edit pairs: the target prompt (every "
                "pair replaced) and one guided prompt per pair (only that pair replaced), matched whole-word "
                "and case-insensitively, and encodes them. Apply ControlNet or hooks to 'original' and "
                "'target'; the guided prompts inherit what 'original' carries."
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The text encoder of the checkpoint."),
                io.String.Input(
                    "original_prompt",
                    default="a dog sitting next to a gift",
                    multiline=True,
                    tooltip="Prompt describing the source image (P_o); every source phrase must occur in it.",
                ),
                EditPairs.Input("edit_pairs", tooltip="The chain of OIR Edit Pairs."),
                io.String.Input(
                    "target_prompt",
                    default="",
                    multiline=True,
                    tooltip="Optional explicit target prompt (P_t); empty = original, every pair replaced.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(display_name="original", tooltip="Encoded original prompt P_o."),
                io.Conditioning.Output(display_name="target", tooltip="Encoded target prompt P_t."),
                OIREditType.Output(display_name="oir_edit", tooltip="Pairs, prompts and guided encodings."),
                io.String.Output(display_name="prompts", tooltip="Every prompt as JSON, for checking."),
            ],
        )

    @classmethod
    def execute(
        cls, clip: Any, original_prompt: str, edit_pairs: tuple[EditPair, ...], target_prompt: str = ""
    ) -> io.NodeOutput:
        if clip is None:
            raise OIRInputError("clip", None, "no text encoder", "connect the checkpoint's CLIP output")
        pairs = tuple(edit_pairs or ())
        plan = build_prompts(original_prompt, pair_texts(pairs), target_prompt.strip() or None)

        def encode(text: str) -> list[list[Any]]:
            return clip.encode_from_tokens_scheduled(clip.tokenize(text))

        original = encode(plan.original)
        encoder_keys = frozenset().union(*(entry[1].keys() for entry in original))
        edit = OIREdit(
            pairs=pairs,
            plan=plan,
            guided_encodings=tuple(encode(text) for text in plan.guided),
            encoder_keys=encoder_keys,
        )
        return io.NodeOutput(original, encode(plan.target), edit, json.dumps(plan.to_dict(), indent=2))
