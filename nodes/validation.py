"""Submit-time checks (ComfyUI's ``validate_inputs``): what can be refused before anything runs.

ComfyUI 0.3.64 does not check the options of V3 combo inputs when a prompt arrives over the API
(0.33 does), so an unknown ``search_mode`` used to be refused only when the node ran, after the
inversion. Each node that has combos declares ``validate_inputs`` with exactly those combos as
arguments: ComfyUI then calls it when the prompt is queued and answers ``400`` with the message,
on both hosts, and still checks every other input itself.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..oir_core.errors import OIRInputError


def refuse_unknown_choices(node: type[io.ComfyNode], **values: Any) -> bool | str:
    """``True``, or the one-line refusal of the first combo value outside the node's options.

    Values ComfyUI does not pass (inputs fed by a link) arrive as ``None`` and are not checked here.
    """
    for item in node.define_schema().inputs:
        if not isinstance(item, io.Combo.Input) or values.get(item.id) is None:
            continue
        if values[item.id] not in item.options:
            return str(
                OIRInputError(
                    item.id, values[item.id], "is not one of the options", f"use one of {list(item.options)}"
                )
            )
    return True
