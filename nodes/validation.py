"""Submit-time checks (ComfyUI's ``validate_inputs``): what can be refused before anything runs.

- ComfyUI 0.3.64 does not check the options of V3 combo inputs when a prompt arrives over the API
  (0.33 does), so an unknown ``search_mode`` used to be refused only when the node ran, after the
  inversion. Each node that has combos declares ``validate_inputs`` with exactly those combos as
  arguments: ComfyUI calls it when the prompt is queued, on both hosts, and still checks every
  other input itself.
- OIR DDIM Inversion checks the ``R`` and ``r`` of every reassembly its trajectory feeds (read from
  the queued prompt) before its first model call, so a graph whose reassembly cannot fit never
  runs the inversion or the search.
- OIR DDIM Inversion and OIR Parallel Step Search refuse to start when no output node that uses
  their results will run (:func:`refuse_unused_results`): ComfyUI runs a prompt as long as one
  output node validates, so a graph whose scorer or save branch was refused would otherwise pay
  for a whole search that nothing reads.
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


SEARCH_NODE = "OIRParallelStepSearch"
"""An output node only so that a cached run re-sends its strip (ARCHITECTURE.md §5): its own display
does not make the model calls before it worth running."""


def outputs_to_execute(node_id: str) -> list[str] | None:
    """The output nodes ComfyUI executes for the prompt running now (which holds ``node_id``), or
    ``None`` if unknown.

    ComfyUI's ``/prompt`` validates every output node, drops those that fail (with their branches)
    and queues ``(number, prompt_id, prompt, extra_data, outputs_to_execute, ...)``; its worker sets
    ``PromptServer.instance.last_prompt_id`` and moves the item to ``currently_running`` before
    executing it (ComfyUI 0.3.64 and 0.33). The item counts only if its prompt holds ``node_id``.
    """
    try:
        from server import PromptServer
    except ImportError:  # not inside a ComfyUI server
        return None
    instance = getattr(PromptServer, "instance", None)
    queue = getattr(instance, "prompt_queue", None)
    prompt_id = getattr(instance, "last_prompt_id", None)
    if queue is None or prompt_id is None or not hasattr(queue, "get_current_queue_volatile"):
        return None
    running, _ = queue.get_current_queue_volatile()
    for item in running:
        if (
            isinstance(item, (list, tuple))
            and len(item) > 4
            and item[1] == prompt_id
            and isinstance(item[2], dict)
            and node_id in item[2]
            and isinstance(item[4], (list, tuple, set))
        ):
            return [str(node_id) for node_id in item[4]]
    return None


def readers_of(prompt: dict[str, Any]) -> dict[str, set[str]]:
    """``node id -> ids of the nodes with an input linked to one of its outputs``."""
    readers: dict[str, set[str]] = {}
    for reader, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in (inputs or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
                readers.setdefault(str(value[0]), set()).add(str(reader))
    return readers


def downstream_of(readers: dict[str, set[str]], node_id: str) -> set[str]:
    """Every node that reads ``node_id``'s outputs, directly or through other nodes (``readers``:
    :func:`readers_of`)."""
    found: set[str] = set()
    todo = [node_id]
    while todo:
        for reader in readers.get(todo.pop(), ()):
            if reader not in found:
                found.add(reader)
                todo.append(reader)
    return found


def refuse_unused_results(prompt: dict[str, Any] | None, node_id: str | None, node_name: str) -> None:
    """Raise before any model call if no output node that reads this node's results will run.

    Which outputs run is ComfyUI's decision at queue time (``outputs_to_execute``: the output nodes
    that validated, or the partial-run targets); the queued prompt says which nodes read this one.
    OIR Parallel Step Search's own display does not count. Nothing is refused when either is unknown
    (a direct call, a node ComfyUI added while running, another executor).
    """
    if not isinstance(prompt, dict) or str(node_id) not in prompt:
        return
    outputs = outputs_to_execute(str(node_id))
    if outputs is None:
        return
    links = readers_of(prompt)
    readers = downstream_of(links, str(node_id))
    searches = {
        i for i, node in prompt.items() if isinstance(node, dict) and node.get("class_type") == SEARCH_NODE
    }
    if any(output in readers and output not in searches for output in outputs):
        return
    ends = sorted(reader for reader in readers if not links.get(reader) and reader not in searches)
    named = ", ".join(f"{i} ({_title(prompt[i])})" for i in ends[:4]) or "none"
    raise OIRInputError(
        node_name,
        f"node {node_id}",
        f"none of the outputs that use its results will run (ComfyUI runs only {sorted(outputs)}; "
        f"the outputs fed by this node: {named}), so its model calls would be wasted",
        "fix the errors ComfyUI listed for the other nodes (e.g. a missing link, such as the Mask Metric "
        "Scorer's scorer) and queue the whole graph",
    )


def _title(node: Any) -> str:
    meta = node.get("_meta") if isinstance(node, dict) else None
    title = meta.get("title") if isinstance(meta, dict) else None
    return str(title or (node.get("class_type") if isinstance(node, dict) else "?"))
