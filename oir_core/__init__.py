"""OIR engine: Object-aware Inversion and Reassembly (Yang et al., ICLR 2024), host-agnostic.

Plain PyTorch; never imports ComfyUI. A host (ComfyUI's nodes, a test, a benchmark) provides
denoisers through :class:`oir_core.host.Host`; see ARCHITECTURE.md §3-4 for the algorithm.
"""

from .candidates import CandidateSet, exhaustive_steps, generate_candidates
from .errors import OIRInputError, OIRInterrupted
from .host import Denoiser, FunctionHost, Host, Stage
from .inversion import InversionTrajectory, invert
from .masks import region_masks, resize_mask
from .reassembly import ReassemblyResult, reassemble
from .sampling import CallStats, inversion_step, ode_step

__all__ = [
    "CallStats",
    "CandidateSet",
    "Denoiser",
    "FunctionHost",
    "Host",
    "InversionTrajectory",
    "OIRInputError",
    "OIRInterrupted",
    "ReassemblyResult",
    "Stage",
    "exhaustive_steps",
    "generate_candidates",
    "inversion_step",
    "invert",
    "ode_step",
    "reassemble",
    "region_masks",
    "resize_mask",
]
