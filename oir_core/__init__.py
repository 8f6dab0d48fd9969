"""OIR engine: Object-aware Inversion and Reassembly (Yang et al., ICLR 2024), host-agnostic.

Plain PyTorch; never imports ComfyUI. A host (ComfyUI's nodes, a test, a benchmark) provides
denoisers through :class:`oir_core.host.Host`; see ARCHITECTURE.md §3-4 for the algorithm.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CallStats": ".sampling",
    "CandidateSet": ".candidates",
    "Denoiser": ".host",
    "FunctionHost": ".host",
    "Host": ".host",
    "InversionTrajectory": ".inversion",
    "OIRInputError": ".errors",
    "OIRInterrupted": ".errors",
    "ReassemblyResult": ".reassembly",
    "Stage": ".host",
    "exhaustive_steps": ".candidates",
    "generate_candidates": ".candidates",
    "inversion_step": ".sampling",
    "invert": ".inversion",
    "ode_step": ".sampling",
    "reassemble": ".reassembly",
    "region_masks": ".masks",
    "resize_mask": ".masks",
}
"""The package's public names and their modules, imported on first use (PEP 562): the torch-free
modules the ``oir-edit`` client (:mod:`oir_cli`) uses (``options``, ``prompts``, ``steps``,
``regions``, ``errors``) load without importing torch."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
