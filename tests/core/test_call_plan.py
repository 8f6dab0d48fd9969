"""``plan_call_rows``: the static split of a stage's rows into model calls (ARCHITECTURE.md §5)."""

from __future__ import annotations

import pytest

from oir_core.host import ROW_WORK_PER_CALL, plan_call_rows

SD15_512_ROW = 860e6 * 64 * 64 * 2
"""SD1.5's UNet parameters x a 512² image's 64² latent positions x cond and uncond."""


def test_the_smallest_bound_sets_the_rows_and_is_named() -> None:
    assert plan_call_rows(40, 1000, 1.0, "cpu").to_dict() == {
        "rows_per_call": 40, "limited_by": "level", "memory_rows": 1000,
        "latency_rows": int(ROW_WORK_PER_CALL["cpu"]),
    }
    assert plan_call_rows(40, 7, 1.0, "cpu").limited_by == "memory"
    on_gpu = plan_call_rows(100, 100, SD15_512_ROW, "accelerator")
    # a few seconds' worth of SD1.5 rows on a GPU: more than one, far fewer than a whole level
    assert on_gpu.limited_by == "cancel_latency" and 10 <= on_gpu.rows_per_call <= 60
    assert plan_call_rows(100, 100, SD15_512_ROW, "cpu").rows_per_call == 1


def test_max_batch_replaces_the_latency_bound_but_not_memory() -> None:
    assert plan_call_rows(100, 100, SD15_512_ROW, "cpu", user_max_batch=8).rows_per_call == 8
    assert plan_call_rows(100, 3, SD15_512_ROW, "cpu", user_max_batch=8).limited_by == "memory"


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        plan_call_rows(0, 1, 1.0, "cpu")
