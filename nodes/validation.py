"""Submit-time checks (ComfyUI's ``validate_inputs``): what can be refused before anything runs.

- ComfyUI 0.3.64 does not check the options of V3 combo inputs when a prompt arrives over the API
  (0.33 does), so an unknown ``search_mode`` used to be refused only when the node ran, after the
  inversion. Each node that has combos declares ``validate_inputs`` with exactly those combos as
  arguments: ComfyUI calls it when the prompt is queued, on both hosts, and still checks every
  other input itself.
- OIR DDIM Inversion checks the ``R`` and ``r`` of every reassembly its trajectory feeds (read from
  the queued prompt) before its first model call, so a graph whose reassembly cannot fit never
  runs the inversion or the search.
"""

from __future__ import annotations

from typing import Any

from comfy_api.latest import io

from ..oir_core.errors import OIRInputError
from ..oir_core.steps import AUTO, validate_reassembly


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


def reassemblies_of(prompt: dict[str, Any] | None, trajectory: Any) -> list[dict[str, Any]]:
    """The inputs of every OIR Object Reassembly in the queued prompt that reads ``trajectory`` (a link)."""
    found = []
    for node in (prompt or {}).values():
        if isinstance(node, dict) and node.get("class_type") == "OIRObjectReassembly":
            inputs = node.get("inputs") or {}
            if isinstance(trajectory, list) and inputs.get("trajectory") == trajectory:
                found.append(inputs)
    return found


def refuse_unfit_reassembly(prompt: dict[str, Any] | None, inversion_id: str | None, levels: int) -> None:
    """Raise if an OIR Object Reassembly fed by this inversion cannot fit its ``levels`` (``T``).

    Called by OIR DDIM Inversion once it knows ``T`` and before its first model call: the queued
    prompt names every node that reads this trajectory, and their constant ``reassembly_step`` and
    ``reinversion_steps``. (ComfyUI gives ``validate_inputs`` neither the prompt nor linked values,
    and does not promise to run a lazy reassembly check before the search, so this is the earliest
    point that knows both.) Linked values are left to the reassembly's own check.
    """
    for inputs in reassemblies_of(prompt, [str(inversion_id), 0]):
        reassembly, reinversion = inputs.get("reassembly_step"), inputs.get("reinversion_steps")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (reassembly, reinversion)):
            validate_reassembly(levels, reassembly, reinversion)


def reassembly_levels_downstream(
    prompt: dict[str, Any] | None, search_id: str | None, steps: int
) -> list[int]:
    """The levels ``R`` (``auto`` resolved for ``T = steps``) of every reassembly that shares this
    search's trajectory and gives ``reassembly_step`` and ``reinversion_steps`` as constants: the
    search keeps its candidates' latents there, so the reassembly need not denoise the pairs again.
    A linked or unfit value keeps nothing (the reassembly then denoises, as it always could)."""
    own = ((prompt or {}).get(str(search_id)) or {}).get("inputs") or {}
    levels = set()
    for inputs in reassemblies_of(prompt, own.get("trajectory")):
        reassembly, reinversion = inputs.get("reassembly_step", AUTO), inputs.get("reinversion_steps", AUTO)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (reassembly, reinversion)):
            try:
                levels.add(validate_reassembly(steps, reassembly, reinversion)[0])
            except OIRInputError:
                continue
    return sorted(levels)


def mask_rules_downstream(prompt: dict[str, Any] | None, search_id: str | None) -> tuple[str, str]:
    """``(overlap, mask_geometry)`` of the reassembly that shares this search's trajectory.

    The search node is the first with both the masks and the latent grid; it checks them with the
    rules the reassembly will use (read from the queued prompt; ``later_wins``/``official``, the
    reassembly's defaults, when there is none or they are linked).
    """
    own = ((prompt or {}).get(str(search_id)) or {}).get("inputs") or {}
    for inputs in reassemblies_of(prompt, own.get("trajectory")):
        overlap, geometry = inputs.get("overlap"), inputs.get("mask_geometry", "official")
        if isinstance(overlap, str) and isinstance(geometry, str):
            return overlap, geometry
    return "later_wins", "official"
