"""Search metric maths (ARCHITECTURE.md §4.4): normalization, guard, combination, ties, masked MSE, driver."""

from __future__ import annotations

import json
import math

import pytest
import torch

from oir_core.errors import OIRInputError
from oir_core.metric import (
    CandidateScorer,
    ColorTargetScorer,
    ScoreTable,
    combine_scores,
    masked_mse,
    minmax_normalize,
    score_table,
    search_scores,
    select_index,
)


def test_minmax_normalize_maps_to_unit_interval() -> None:
    norm, constant = minmax_normalize(torch.tensor([2.0, -1.0, 0.5]))
    assert not constant
    assert torch.allclose(norm, torch.tensor([1.0, 0.0, 0.5], dtype=torch.float64))


def test_minmax_guard_all_equal_gives_zeros() -> None:
    for values in ([0.3, 0.3, 0.3], [-5.0], [1e6, 1e6 + 1e-5, 1e6]):
        norm, constant = minmax_normalize(torch.tensor(values, dtype=torch.float64))
        assert constant
        assert torch.equal(norm, torch.zeros(len(values), dtype=torch.float64))
    # a real, small spread is not swallowed by the guard
    norm, constant = minmax_normalize(torch.tensor([0.0, 1e-6]))
    assert not constant and norm.tolist() == [0.0, 1.0]


def test_combine_and_select_ties_go_to_smaller_step() -> None:
    e = torch.tensor([1.0, 0.0, 0.5])
    f = torch.tensor([0.0, 1.0, 0.5])
    combined = combine_scores(e, f, (0.5, 0.5))
    assert combined.tolist() == [0.5, 0.5, 0.5]
    assert select_index([30, 10, 20], combined) == 1  # step 10, though at position 1
    assert select_index([5, 40, 2], combined) == 2
    assert select_index([1, 2, 3], combine_scores(e, f, (1.0, 0.0))) == 0
    assert select_index([1, 2, 3], combine_scores(e, f, (0.0, 1.0))) == 1


def test_official_one_to_one_sum_has_same_argmax_as_average() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        e, f = torch.randn(7, generator=gen), torch.randn(7, generator=gen)
        en, fn = minmax_normalize(e)[0], minmax_normalize(f)[0]
        steps = list(range(1, 8))
        assert select_index(steps, combine_scores(en, fn, (1, 1))) == select_index(
            steps, combine_scores(en, fn, (0.5, 0.5))
        )


def test_score_table_worked_example() -> None:
    steps = [1, 2, 3, 4]
    editing = torch.tensor([0.20, 0.30, 0.25, 0.30])
    fidelity = torch.tensor([-0.0, -0.4, -0.1, -0.2])
    table = score_table(steps, editing, fidelity)
    e_n = [0.0, 1.0, 0.5, 1.0]
    f_n = [1.0, 0.0, 0.75, 0.5]
    assert table.editing_norm == pytest.approx(e_n)
    assert table.fidelity_norm == pytest.approx(f_n)
    assert table.combined == pytest.approx([0.5 * (a + b) for a, b in zip(e_n, f_n, strict=True)])
    assert table.chosen_step == 4 and table.chosen_index == 3  # 0.75 beats 0.625 and 0.5
    assert table.editing == pytest.approx(editing.tolist()) and table.fidelity == pytest.approx(
        fidelity.tolist()
    )
    data = json.loads(json.dumps(table.to_dict()))
    assert data["chosen_step"] == 4 and data["weights"] == [0.5, 0.5]
    assert set(data) >= {"steps", "editing", "fidelity", "editing_norm", "fidelity_norm", "combined"}
    assert not data["editing_constant"] and not data["fidelity_constant"]
    assert math.copysign(1.0, data["fidelity"][0]) == 1.0  # no "-0.0" in the report


def test_all_equal_guard_lets_the_other_score_decide() -> None:
    table = score_table([1, 2, 3], torch.full((3,), 0.27), torch.tensor([-0.3, -0.1, -0.2]))
    assert table.editing_constant and not table.fidelity_constant
    assert table.editing_norm == [0.0, 0.0, 0.0]
    assert table.chosen_step == 2
    both = score_table([7, 3, 5], torch.ones(3), torch.zeros(3))
    assert both.editing_constant and both.fidelity_constant
    assert both.combined == [0.0, 0.0, 0.0] and both.chosen_step == 3


def test_score_table_refuses_bad_input() -> None:
    with pytest.raises(OIRInputError, match="NaN") as info:
        score_table([1, 2], torch.tensor([0.1, float("nan")]), torch.zeros(2))
    assert "steps [2]" in str(info.value)
    with pytest.raises(OIRInputError, match="duplicates"):
        score_table([1, 1], torch.zeros(2), torch.zeros(2))
    with pytest.raises(OIRInputError, match="entries"):
        score_table([1, 2, 3], torch.zeros(2), torch.zeros(2))
    with pytest.raises(OIRInputError, match="whole numbers"):
        score_table([1.5, 2], torch.zeros(2), torch.zeros(2))
    for weights in [(-1, 1), (0, 0), (float("nan"), 1), (1,)]:
        with pytest.raises(OIRInputError) as info:
            score_table([1, 2], torch.zeros(2), torch.zeros(2), weights)
        assert info.value.input_name == "weights"


def test_masked_mse_reductions() -> None:
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # [1,2,2]
    b = torch.zeros(2, 2)
    keep = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert masked_mse(a, b, keep, "all").item() == pytest.approx((1 + 16) / 4)
    assert masked_mse(a, b, keep, "kept").item() == pytest.approx((1 + 16) / 2)
    # nothing kept: nothing to preserve, every candidate scores 0 instead of dividing by zero
    assert masked_mse(torch.rand(3, 2, 2), b, torch.zeros(2, 2), "kept").tolist() == [0.0, 0.0, 0.0]


def _color_scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Original: grey; mask: a centre square; candidates drift red inside and add noise outside."""
    h, w = 24, 20
    original = torch.full((h, w, 3), 0.5)
    mask = torch.zeros(h, w)
    mask[6:18, 4:14] = 1.0
    inside = mask.bool()
    candidates = []
    for t in range(6):
        c = original.clone()
        c[inside] = torch.tensor([0.5 + 0.1 * t, 0.5 - 0.1 * t, 0.5 - 0.1 * t])
        c[~inside] += 0.02 * t * t  # deeper inversion, worse background
        candidates.append(c.clamp(0, 1))
    return torch.stack(candidates), original, mask


def test_color_scorer_properties() -> None:
    candidates, original, mask = _color_scene()
    scorer = ColorTargetScorer()
    assert isinstance(scorer, CandidateScorer)
    editing, fidelity = scorer.score(candidates, original, mask, "Red")
    assert torch.all(editing[1:] > editing[:-1])  # redder inside with t
    assert torch.all(fidelity[1:] < fidelity[:-1])  # noisier outside with t
    assert fidelity[0] == 0
    # the mask may come at another resolution (nearest resize to the image)
    small = mask[::2, ::2]
    e2, f2 = scorer.score(candidates, original, small, "#ff0000")
    assert torch.allclose(e2, editing) and torch.allclose(f2, fidelity)
    # fidelity ignores changes inside the mask, editing ignores changes outside
    changed = candidates.clone()
    changed[:, mask.bool()] = 0.9
    assert torch.equal(scorer.score(changed, original, mask, "red")[1], fidelity)
    changed = candidates.clone()
    changed[:, ~mask.bool()] = 0.1
    assert torch.equal(scorer.score(changed, original, mask, "red")[0], editing)
    with pytest.raises(OIRInputError, match="colour"):
        scorer.score(candidates, original, mask, "sparkly")
    with pytest.raises(OIRInputError, match="empty"):
        scorer.score(candidates, original, torch.zeros(4, 4), "red")


def test_search_scores_full_table_and_chunking() -> None:
    candidates, original, mask = _color_scene()
    steps = [3, 8, 13, 18, 23, 28]
    scorer = ColorTargetScorer()
    whole = search_scores(scorer, steps, candidates, original, mask, "red", chunk_size=100)
    assert isinstance(whole, ScoreTable) and whole.steps == steps
    e, f = scorer.score(candidates, original, mask, "red")
    assert whole.editing == pytest.approx(e.tolist()) and whole.fidelity == pytest.approx(f.tolist())
    # the trade-off is interior: neither the shallowest nor the deepest candidate wins
    assert whole.chosen_step not in (3, 28)
    for chunk in (1, 2, 4):
        assert search_scores(scorer, steps, candidates, original, mask, "red", chunk_size=chunk) == whole
    editing_only = search_scores(scorer, steps, candidates, original, mask, "red", weights=(1, 0))
    assert editing_only.chosen_step == 28
    fidelity_only = search_scores(scorer, steps, candidates, original, mask, "red", weights=(0, 1))
    assert fidelity_only.chosen_step == 3


class _CountingScorer:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def score(self, candidates, original, mask, target_text):  # type: ignore[no-untyped-def]
        self.sizes.append(candidates.shape[0])
        return candidates.mean(dim=(1, 2, 3)), -candidates.std(dim=(1, 2, 3))


def test_search_scores_calls_scorer_in_chunks_and_validates() -> None:
    candidates = torch.rand(7, 4, 4, 3, generator=torch.Generator().manual_seed(0))
    scorer = _CountingScorer()
    search_scores(scorer, list(range(1, 8)), candidates, candidates[0], torch.ones(4, 4), "x", chunk_size=3)
    assert scorer.sizes == [3, 3, 1]
    with pytest.raises(OIRInputError, match="chunk_size"):
        search_scores(
            scorer, list(range(1, 8)), candidates, candidates[0], torch.ones(4, 4), "x", chunk_size=0
        )
    with pytest.raises(OIRInputError, match="entries"):
        search_scores(scorer, [1, 2], candidates, candidates[0], torch.ones(4, 4), "x")
    with pytest.raises(OIRInputError, match="size differs"):
        search_scores(scorer, list(range(1, 8)), candidates, torch.rand(5, 4, 3), torch.ones(4, 4), "x")
    with pytest.raises(OIRInputError, match=r"\[N,H,W,3\]"):
        search_scores(scorer, [1], torch.rand(4, 4, 3), candidates[0], torch.ones(4, 4), "x")
