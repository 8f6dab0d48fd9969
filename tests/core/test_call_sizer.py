"""``CallSizer``: rows per model call that keep one call near its time budget (the cancel latency)."""

from __future__ import annotations

import pytest

from oir_core.host import CallSizer


def run(sizer: CallSizer, seconds_per_row: float, calls: int) -> list[int]:
    """Sizes of ``calls`` consecutive full-size calls on a model taking ``seconds_per_row``."""
    sizes = []
    for _ in range(calls):
        sizes.append(sizer.rows)
        sizer.observe(sizer.rows, sizer.rows * seconds_per_row)
    return sizes


def test_a_fast_model_grows_to_the_memory_limit() -> None:
    sizes = run(CallSizer(limit=100, budget_s=2.0), seconds_per_row=0.001, calls=6)
    assert sizes == [8, 16, 32, 64, 100, 100]


def test_a_slow_model_is_held_to_the_time_budget() -> None:
    # 0.25 s per row, 2 s budget: 8 rows take exactly the budget, so no call exceeds it
    assert run(CallSizer(limit=100, budget_s=2.0), seconds_per_row=0.25, calls=5) == [8] * 5
    # 0.5 s per row: the first call (8 rows, 4 s) is twice the budget; every later one fits it
    sizes = run(CallSizer(limit=100, budget_s=2.0), seconds_per_row=0.5, calls=5)
    assert sizes == [8, 4, 4, 4, 4] and all(rows * 0.5 <= 2.0 for rows in sizes[1:])


def test_one_row_that_exceeds_the_budget_is_still_run() -> None:
    assert run(CallSizer(limit=10, budget_s=1.0), seconds_per_row=5.0, calls=3) == [8, 1, 1]


def test_a_partial_call_does_not_grow_the_size() -> None:
    """The last chunk of a level is smaller; its speed says nothing about a full call."""
    sizer = CallSizer(limit=100, budget_s=2.0)
    sizer.observe(3, 0.01)
    assert sizer.rows == 8


def test_start_and_limit_bound_the_first_call() -> None:
    assert CallSizer(limit=3, budget_s=1.0).rows == 3
    assert CallSizer(limit=100, budget_s=1.0, start=20).rows == 20
    with pytest.raises(ValueError, match="limit >= 1"):
        CallSizer(limit=0, budget_s=1.0)
