"""Step settings and their checks: which steps to search, overrides, the reassembly's R and r.

Plain Python (no torch), so the ``oir-edit`` command checks a spec's numbers without importing the
engine's tensor code. ``oir_core.search`` and ``oir_core.reassembly`` use these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from .errors import OIRInputError
from .options import BACKGROUND_MODES, MAX_FEATHER

SearchMode = Literal["exhaustive", "coarse_to_fine", "custom"]

_RANGE = re.compile(r"^(\d+)\s*(?:-\s*(\d+)\s*(?::\s*(\d+))?)?$")


def parse_steps(text: str, steps: int, input_name: str = "custom_steps") -> list[int]:
    """Parse a step list such as ``"1-50"``, ``"5, 10, 20-30:2"`` into sorted unique steps in ``1..T``."""
    chosen: set[int] = set()
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts:
        raise OIRInputError(
            input_name, text, "no steps given", f"write steps like '1-{steps}' or '5, 10, 20-30:2'"
        )
    for part in parts:
        match = _RANGE.match(part)
        if not match:
            raise OIRInputError(
                input_name,
                part,
                "not a step, range 'a-b' or strided range 'a-b:s'",
                f"write whole steps, ranges or strided ranges separated by commas, e.g. '5, 10, 20-30:2' "
                f"or '1-{steps}' for every step",
            )
        first = int(match.group(1))
        last = int(match.group(2) or first)
        stride = int(match.group(3) or 1)
        if stride < 1 or last < first:
            raise OIRInputError(
                input_name, part, "ranges must ascend with a positive stride", "write e.g. '10-30:5'"
            )
        chosen.update(range(first, last + 1, stride))
    outside = sorted(s for s in chosen if not 1 <= s <= steps)
    if outside:
        raise OIRInputError(
            input_name,
            outside,
            f"steps must lie in 1..{steps} ({levels_phrase(steps)})",
            f"remove {outside} from the list (e.g. '1-{steps}' for every step), or raise the inversion's "
            f"steps until its levels reach {max(outside)}",
        )
    return sorted(chosen)


def coarse_steps(steps: int, stride: int) -> list[int]:
    """Every ``stride``-th step ``stride, 2 stride, ... <= T`` (aligned with the stride sub-schedule)."""
    if stride < 1:
        raise OIRInputError("coarse_stride", stride, "must be at least 1", "use e.g. 5")
    if stride > steps:
        raise OIRInputError(
            "coarse_stride", stride, f"larger than {levels_phrase(steps)}", f"use at most {steps}"
        )
    return list(range(stride, steps + 1, stride))


def refine_steps(best: int, radius: int, steps: int) -> list[int]:
    """Steps within ``radius`` of ``best``, clipped to ``1..T``."""
    if radius < 0:
        raise OIRInputError("refine_radius", radius, "must not be negative", "use e.g. 2")
    return list(range(max(1, best - radius), min(steps, best + radius) + 1))


def coarse_round_steps(steps: int, stride: int) -> list[int]:
    """Step 1 (the unedited end of both scores) and every ``stride``-th step."""
    return sorted({1, *coarse_steps(steps, stride)})


def _override_example(entries: Sequence[str], steps: int) -> str:
    """``entries`` with every entry that is not ``auto`` or a step in ``1..steps`` replaced by ``auto``:
    a valid ``step_override`` close to what was typed, for the error's fix."""

    def valid(entry: str) -> bool:
        return entry in ("", "auto") or (entry.isdecimal() and 1 <= int(entry) <= steps)

    return ", ".join(entry if valid(entry) and entry else "auto" for entry in entries)


def parse_step_overrides(text: str, pair_count: int, steps: int) -> list[int | None]:
    """Parse the manual per-pair override: ``""`` or ``"auto, 23"`` (one entry per pair).

    ``auto`` (or an empty entry) keeps the search's choice. Fewer entries than pairs are padded
    with ``auto``; more are refused.
    """
    entries = [entry.strip().lower() for entry in text.split(",")] if text.strip() else []
    if len(entries) > pair_count:
        raise OIRInputError(
            "step_override",
            text,
            f"{len(entries)} entries for {pair_count} edit pairs",
            f"write {pair_count} comma-separated entries, one per pair in chain order, each 'auto' or a "
            f"step, e.g. '{_override_example(entries[:pair_count], steps)}'",
        )
    overrides: list[int | None] = []
    for pair, entry in enumerate(entries):
        if entry in ("", "auto"):
            overrides.append(None)
            continue
        if not entry.isdecimal() or not 1 <= int(entry) <= steps:
            raise OIRInputError(
                "step_override",
                entry,
                f"pair {pair + 1}: not 'auto' or a step in 1..{steps} ({levels_phrase(steps)})",
                f"write 'auto' or a whole step from 1 to {steps} as entry {pair + 1}, e.g. "
                f"'{_override_example(entries, steps)}' ('auto' keeps the search's choice)",
            )
        overrides.append(int(entry))
    return overrides + [None] * (pair_count - len(overrides))


def format_step_overrides(overrides: Sequence[int | None]) -> str:
    """The inverse of :func:`parse_step_overrides` (what the frontend writes into the widget)."""
    return ", ".join("auto" if step is None else str(step) for step in overrides)


def levels_note(steps: int, levels: int, scheduler: str, why: str = "") -> str | None:
    """The one message a user needs when the schedule gives another number of levels than ``steps``.

    ComfyUI's schedulers turn ``steps`` into a sigma list; OIR inverts through every level of it, so
    ``T`` (the candidates, ``step_override``, ``custom_steps``, ``R`` and ``r``) is the number of
    levels, not the typed number (ARCHITECTURE.md §4.1). ``why`` is the scheduler's reason, when
    known. ``None`` when they agree.
    """
    if levels == steps:
        return None
    reason = f" ({why})" if why else ""
    return (
        f"steps = {steps} gave {levels} denoising levels with the {scheduler} schedule{reason}. "
        f"OIR inverts through every level, so the search's candidates are numbered 1-{levels} (one per "
        f"level), and step_override, custom_steps, reassembly_step and reinversion_steps count "
        f"these {levels} levels"
    )


MODEL_LEVELS = 1000
"""The noise levels of the discrete-time models OIR runs (SD1.x, SD2, SDXL; SD3 and Flux's flow
``model_sampling`` too): the ``len(model_sampling.sigmas)`` ComfyUI's schedulers step through."""


def most_levels(steps: int, scheduler: str) -> int:
    """The most denoising levels ComfyUI's ``scheduler`` can make of ``steps``, without the model.

    ``ddim_uniform`` walks the model's 1000 levels ``1000 // steps`` at a time from level 1, so a
    ``steps`` that does not divide 1000 gets one level more (6 -> 7); every other scheduler makes at
    most ``steps`` (``beta`` can make fewer: it drops repeated levels). What the server counts is
    exact (OIR DDIM Inversion reads the sigmas); this bound lets a check without the model accept
    every level the server would, and leave the refusal of a level too many to the server.
    """
    if scheduler != "ddim_uniform" or steps < 1:
        return steps
    return len(range(1, MODEL_LEVELS, max(MODEL_LEVELS // steps, 1)))


def levels_phrase(levels: int) -> str:
    """How every message names ``T``: the inversion's levels (which may differ from the typed steps)."""
    return f"the inversion's {levels} levels"


AUTO = -1
"""``reassembly_step`` / ``reinversion_steps`` value meaning "follow the step count"."""

AUTO_FRACTION = 0.2
"""``auto`` R and r as a fraction of ``T``: the paper's 10 of 50."""


def resolve_reassembly(steps: int, reassembly_step: int, reinversion_steps: int) -> tuple[int, int]:
    """``(R, r)`` with :data:`AUTO` (-1) replaced by ``round(T / 5)`` each (paper: 10 and 10 of 50).

    Auto values always fit: ``R < T`` and ``R + r <= T`` for every ``T >= 2`` (``T = 2``: 0 and 0;
    ``T = 5``: 1 and 1), so a graph whose steps are lowered never breaks at reassembly.
    """
    auto = round(steps * AUTO_FRACTION)
    merge_level = min(auto, steps - 1) if reassembly_step == AUTO else reassembly_step
    reinvert = max(0, min(auto, steps - merge_level)) if reinversion_steps == AUTO else reinversion_steps
    return merge_level, reinvert


def validate_reassembly(steps: int, reassembly_step: int, reinversion_steps: int) -> tuple[int, int]:
    """``(R, r)`` after :func:`resolve_reassembly`, checked: ``0 <= R < T``, ``0 <= r``, ``R + r <= T``."""
    reassembly_step, reinversion_steps = resolve_reassembly(steps, reassembly_step, reinversion_steps)
    if reassembly_step < 0 or reassembly_step >= steps:
        raise OIRInputError(
            "reassembly_step",
            reassembly_step,
            f"must lie in 0..{steps - 1} for {levels_phrase(steps)}",
            "lower it (the paper uses 10 of 50), raise steps, or use -1 (auto: a fifth of the steps)",
        )
    if reinversion_steps < 0:
        raise OIRInputError(
            "reinversion_steps", reinversion_steps, "must not be negative", "use 0 or more, or -1 (auto)"
        )
    if reassembly_step + reinversion_steps > steps:
        raise OIRInputError(
            "reinversion_steps",
            reinversion_steps,
            f"reassembly_step + reinversion_steps = {reassembly_step + reinversion_steps} exceeds "
            f"{levels_phrase(steps)}",
            f"use at most {steps - reassembly_step} re-inversion steps, or -1 (auto: a fifth of the steps)",
        )
    return reassembly_step, reinversion_steps


def validate_background(background: str, feather: int) -> tuple[str, int]:
    """Check the reassembly's ``background`` choice and ``feather`` width (ARCHITECTURE.md §4.5)."""
    if background not in BACKGROUND_MODES:
        raise OIRInputError(
            "background", background, "is not one of the options", f"use one of {BACKGROUND_MODES}"
        )
    if isinstance(feather, bool) or int(feather) != feather or not 0 <= int(feather) <= MAX_FEATHER:
        raise OIRInputError(
            "feather",
            feather,
            f"must be a whole number of latent cells in 0..{MAX_FEATHER}",
            "use 0 for a hard edge, 2-4 for a soft one",
        )
    return background, int(feather)
