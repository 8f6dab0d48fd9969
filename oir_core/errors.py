"""Errors raised by the OIR engine.

Every refusal of bad input is an :class:`OIRInputError` that names the input, the offending value
and the fix, so a ComfyUI user sees one actionable line instead of a stack trace.
"""

from __future__ import annotations

from typing import Any


class OIRInputError(ValueError):
    """A user-facing input is invalid.

    Args:
        input_name: the node input, CLI flag or function argument at fault (e.g. ``"reassembly_step"``).
        value: the offending value (shown with ``repr``, shortened).
        problem: what is wrong with it.
        fix: what the user should do instead.
    """

    def __init__(self, input_name: str, value: Any, problem: str, fix: str) -> None:
        self.input_name = input_name
        self.value = value
        self.problem = problem
        self.fix = fix
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"OIR: input '{input_name}' = {shown}: {problem}. Fix: {fix}.")


class OIRInterrupted(RuntimeError):
    """Raised by the engine when a progress callback asks to stop."""
