"""The step_override grammar is shared by Python and the frontend: both are checked against one file.

``fixtures/step_override_cases.json`` holds golden cases; this test pins ``oir_core.search`` to
them and ``step_override.test.mjs`` (``node --test tests/web/``) pins ``web/oir_chart_logic.js``
to the same cases, so the chart writes exactly what the node parses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oir_core.errors import OIRInputError
from oir_core.steps import format_step_overrides, parse_step_overrides

CASES = json.loads((Path(__file__).parent / "fixtures" / "step_override_cases.json").read_text("utf-8"))


@pytest.mark.parametrize("case", CASES["parse"], ids=lambda c: repr(c["text"]))
def test_python_parses_the_golden_cases(case: dict[str, Any]) -> None:
    if case["expect"] == "error":
        with pytest.raises(OIRInputError):
            parse_step_overrides(case["text"], case["pairs"], case["steps"])
    else:
        assert parse_step_overrides(case["text"], case["pairs"], case["steps"]) == case["expect"]


@pytest.mark.parametrize("case", CASES["format"], ids=lambda c: repr(c["overrides"]))
def test_python_formats_the_golden_cases(case: dict[str, Any]) -> None:
    assert format_step_overrides(case["overrides"]) == case["expect"]
    assert parse_step_overrides(case["expect"], len(case["overrides"]), 50) == case["overrides"]
