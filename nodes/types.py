"""The pack's own socket types. Each carries a frozen payload from :mod:`nodes.payloads`."""

from __future__ import annotations

from comfy_api.latest import io

EditPairs = io.Custom("OIR_EDIT_PAIRS")
"""A tuple of :class:`oir_core.edit.EditPair`, in chain order."""

OIREditType = io.Custom("OIR_EDIT")
"""A :class:`nodes.payloads.OIREdit`."""

Trajectory = io.Custom("OIR_TRAJECTORY")
"""An :class:`oir_core.inversion.InversionTrajectory`."""

Candidates = io.Custom("OIR_CANDIDATES")
"""A :class:`nodes.payloads.CandidateBundle`."""

ChosenStepsType = io.Custom("OIR_STEPS")
"""A :class:`nodes.payloads.ChosenSteps`."""

Scorer = io.Custom("OIR_SCORER")
"""The search metric (:class:`oir_core.metric.SearchMetric`): a loaded CLIP scorer and its weights."""
