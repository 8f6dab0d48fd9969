"""Coarse-to-fine design variants against the search's restated targets (one table, CPU, minutes).

Each variant is built from engine parts (``generate_candidates`` / ``denoise_candidates`` on a
:class:`~oir_core.sampling.SubSchedule`, the same scorers and the same final choice over the whole
pool as ``oir_core.search.coarse_to_fine_candidates``) and run on ``bench_coarse_to_fine.py``'s cases:
the smooth analytic family and the noisy two-peaked family at 4 % and 1 % noise. Per variant:

- the two-object edit's UNet rows over a plain generation (T = 50, K = 2: shared rows, then per pair
  and CFG branch the search's rows and the reassembly's exact walk from the chosen step to R = 10),
  uniform over the coarse best step (what ``bench_edit.py`` reports) where the window depends on
  that step only, and otherwise over where the search *landed* in these cases (marked "landed");
- the chosen step within ±1 of the exhaustive choice, per family, and the p95 score regret.

Targets (the issue's): rows mean ≤ 6×, worst ≤ 8×; smooth ±1 ≥ 95 %; noisy ±1 within 5 points of
the family's noise ceiling, p95 regret ≤ 0.05. The first row is the shipped design and must equal
``bench_coarse_to_fine.py``'s numbers. Not part of ``run_all.py`` (it chooses no setting, it
explains one).

Run: ``python benchmarks/bench_c2f_variants.py`` (no ComfyUI needed; ``--only growing`` for a subset).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import benchlib
import torch
from bench_coarse_to_fine import Case, NoisyTwoPeakScorer, make_case, make_noisy_case, to_image
from benchlib import fmt_pct, fmt_ratio

from oir_core.candidates import CandidateSet, denoise_candidates, exhaustive_steps, generate_candidates
from oir_core.metric import ScoreTable, search_scores
from oir_core.sampling import SubSchedule, lockstep_total_rows
from oir_core.search import COARSE_TAIL
from oir_core.steps import coarse_round_steps, refine_steps

REASSEMBLY_STEP = 10
"""``R`` (paper: 10): the reassembly walks the chosen step exactly down to it."""


@dataclass(frozen=True)
class DeepSchedule(SubSchedule):
    """:class:`SubSchedule` with a wider stride above level ``deep_from`` (a cheaper coarse walk)."""

    deep_stride: int = 10
    deep_from: int = 20

    def next_level(self, level: int) -> int:
        if level > self.deep_from:
            return max(self.deep_from, (level - 1) // self.deep_stride * self.deep_stride)
        return super().next_level(level)


SHIPPED_SCHEDULE = SubSchedule(stride=5, tail=COARSE_TAIL)
"""The shipped coarse-to-fine sub-schedule (stride 5, fine tail 3)."""


@dataclass(frozen=True)
class Variant:
    """One coarse-to-fine design.

    Attributes:
        window: ``symmetric`` (``radius`` around the coarse best), ``one-sided`` (b ± 1 and 2, 3 steps
            towards the better coarse neighbour), ``vertex`` (``radius`` around the vertex of the
            parabola through the best and its coarse neighbours), ``growing`` (b ± 1, then one step
            outwards per round while the pool's best lies on the window's edge, up to ``radius``) or
            ``growing-once`` (b ± 1 and b ± 2 towards the better coarse neighbour, then at most one
            step outwards, up to ``radius``).
        extra: steps added to the coarse round.
        far_radius: the symmetric window's radius above step 30 (``None``: ``radius``).
        coarse_above_30: the coarse spacing above step 30 (``None``: the stride).
        second: a second symmetric window of ``second_radius`` on the second-best coarse local
            maximum when its score is within ``second`` of the best (``None``: never).
    """

    name: str
    schedule: SubSchedule = SHIPPED_SCHEDULE
    window: str = "symmetric"
    radius: int = 2
    extra: tuple[int, ...] = ()
    far_radius: int | None = None
    coarse_above_30: int | None = None
    second: float | None = None
    second_radius: int = 2

    def coarse_steps(self, steps: int) -> list[int]:
        base = coarse_round_steps(steps, self.schedule.stride)
        if self.coarse_above_30 is not None:
            base = [s for s in base if s <= 30 or s % self.coarse_above_30 == 0]
        return sorted({*base, *(s for s in self.extra if 1 <= s <= steps)})

    @property
    def static(self) -> bool:
        """Whether the window depends on the coarse best step only (uniform row bound applies)."""
        return self.window == "symmetric" and self.second is None


VARIANTS = (
    Variant("shipped: radius 2, fine tail 3"),
    Variant("fine tail 2", schedule=SubSchedule(5, 2)),
    Variant("radius 1", radius=1),
    Variant("stride 10 above level 20", schedule=DeepSchedule(5, COARSE_TAIL, 10, 20)),
    Variant("stride 10 above level 30", schedule=DeepSchedule(5, COARSE_TAIL, 10, 30)),
    Variant("second window (radius 2) on a second coarse peak within 0.15", second=0.15),
    Variant("second window (radius 1) on a second coarse peak within 0.15", second=0.15, second_radius=1),
    Variant("one-sided window", window="one-sided"),
    Variant("window on the parabola's vertex, radius 1", window="vertex", radius=1),
    Variant("window on the parabola's vertex, radius 2", window="vertex", radius=2),
    Variant("coarse round adds steps 2, 3", extra=(2, 3)),
    Variant("coarse spacing 10 above step 30, radius 3 there", coarse_above_30=10, far_radius=3),
    Variant("growing window to radius 3", window="growing", radius=3),
    Variant("growing window to radius 3, coarse adds 2, 3, 7", window="growing", radius=3, extra=(2, 3, 7)),
    Variant("growing once, to radius 3", window="growing-once", radius=3),
    Variant("growing once, to radius 3, coarse adds 2, 3", window="growing-once", radius=3, extra=(2, 3)),
)


def table_of(case: Case, candidates: CandidateSet) -> ScoreTable:
    """The scorer's table over ``candidates`` (normalised over them, as the nodes do)."""
    steps, latents = candidates.for_pair(0)
    return search_scores(case.scorer, steps, to_image(latents), case.original, case.mask, case.color)


def joined(parts: Sequence[CandidateSet], schedule: SubSchedule) -> CandidateSet:
    return CandidateSet(
        pair_ids=[p for part in parts for p in part.pair_ids],
        steps=[s for part in parts for s in part.steps],
        latents=torch.cat([part.latents for part in parts]),
        schedule=schedule,
    )


def better_side(table: ScoreTable, index: int) -> int:
    """``+1`` when the best coarse step's upper coarse neighbour scores higher than its lower one."""
    left = table.combined[index - 1] if index > 0 else -math.inf
    right = table.combined[index + 1] if index + 1 < len(table.steps) else -math.inf
    return 1 if right > left else -1


def local_maxima(values: Sequence[float]) -> list[int]:
    padded = [-math.inf, *values, -math.inf]
    return [
        i - 1 for i in range(1, len(padded) - 1) if padded[i] >= padded[i - 1] and padded[i] > padded[i + 1]
    ]


def static_window(v: Variant, table: ScoreTable, steps: int) -> list[int]:
    """The refinement steps of a one-round window."""
    index = table.chosen_index
    best = table.steps[index]
    if v.window == "one-sided":
        side = better_side(table, index)
        window = [best - 1, best + 1, best + 2 * side, best + 3 * side]
    elif v.window == "vertex":
        centre = best
        if 0 < index < len(table.steps) - 1:
            xs = table.steps[index - 1 : index + 2]
            ys = table.combined[index - 1 : index + 2]
            d = (xs[0] - xs[1]) * (xs[0] - xs[2]) * (xs[1] - xs[2])
            a = (xs[2] * (ys[1] - ys[0]) + xs[1] * (ys[0] - ys[2]) + xs[0] * (ys[2] - ys[1])) / d
            b = (
                xs[2] ** 2 * (ys[0] - ys[1]) + xs[1] ** 2 * (ys[2] - ys[0]) + xs[0] ** 2 * (ys[1] - ys[2])
            ) / d
            vertex = -b / (2 * a) if a < 0 else best
            centre = round(min(max(vertex, (xs[0] + xs[1]) / 2), (xs[1] + xs[2]) / 2))
        window = list(range(centre - v.radius, centre + v.radius + 1))
    else:
        radius = v.far_radius if v.far_radius is not None and best > 30 else v.radius
        window = refine_steps(best, radius, steps)
    chosen = set(window)
    if v.second is not None:
        maxima = sorted(local_maxima(table.combined), key=lambda i: -table.combined[i])
        others = [i for i in maxima if i != index and table.combined[i] >= table.combined[index] - v.second]
        if others:
            chosen |= set(refine_steps(table.steps[others[0]], v.second_radius, steps))
    return sorted(s for s in chosen if 1 <= s <= steps)


def run_variant(v: Variant, case: Case, coarse: CandidateSet, ranked: ScoreTable) -> tuple[int, int]:
    """``(chosen step, model rows)`` of one variant on one case, given its scored coarse round."""
    steps = case.trajectory.steps
    parts, rows = [coarse], coarse.stats.rows

    def refine(new: Sequence[int]) -> int:
        nonlocal rows
        new = [s for s in new if 1 <= s <= steps and s not in coarse.steps]
        if new:
            got = denoise_candidates(case.host, case.trajectory, [0] * len(new), new, schedule=v.schedule)
            parts.append(got)
            rows += got.stats.rows
        return table_of(case, joined(parts, v.schedule)).chosen_step

    best = ranked.chosen_step
    if not v.window.startswith("growing"):
        return refine(static_window(v, ranked, steps)), rows
    low, high = max(1, best - 1), min(steps, best + 1)
    first = [best - 1, best + 1]
    if v.window == "growing-once":
        side = better_side(ranked, ranked.chosen_index)
        first.append(best + 2 * side)
        low, high = (low, min(steps, best + 2)) if side > 0 else (max(1, best - 2), high)
    chosen = refine(first)
    for _ in range(1 if v.window == "growing-once" else v.radius):
        if chosen == low and best - low < v.radius and low > 1:
            low -= 1
            grown = low
        elif chosen == high and high - best < v.radius and high < steps:
            high += 1
            grown = high
        else:
            break
        if grown in coarse.steps:  # already scored: the window stops growing
            break
        chosen = refine([grown])
    return chosen, rows


def edit_ratio(pair_rows: float, steps: int) -> float:
    """Two pairs like this one over a plain generation (CFG rows twice, shared rows as bench_edit)."""
    shared = steps + 10 + 2 * (REASSEMBLY_STEP + 10)
    return (shared + 2 * 2 * pair_rows) / (2 * steps)


def uniform_rows(v: Variant, steps: int) -> tuple[float, float]:
    """``(mean, worst)`` edit ratio of a static window, uniform over the coarse best step."""
    coarse = v.coarse_steps(steps)
    base = lockstep_total_rows(coarse, 0, v.schedule)
    per_best = []
    for best in coarse:
        radius = v.far_radius if v.far_radius is not None and best > 30 else v.radius
        new = [s for s in refine_steps(best, radius, steps) if s not in coarse]
        per_best.append(base + lockstep_total_rows(new, 0, v.schedule) + max(0, best - REASSEMBLY_STEP))
    return edit_ratio(sum(per_best) / len(per_best), steps), edit_ratio(max(per_best), steps)


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="T (paper: 50)")
    parser.add_argument("--cases", type=int, default=200, help="cases per family")
    parser.add_argument("--only", default="", help="run the variants whose name contains this")
    args = parser.parse_args()
    benchlib.apply_common(args)
    print(benchlib.machine_line(args.device))
    steps = args.steps
    families: dict[str, list[Case]] = {
        "smooth": [make_case(args.seed * 100_003 + i, steps, args.device) for i in range(args.cases)],
        **{
            f"{round(100 * noise)} %": [
                make_noisy_case(args.seed * 100_003 + 50_000 + i, steps, args.device, noise)
                for i in range(args.cases)
            ]
            for noise in (0.04, 0.01)
        },
    }
    reference: dict[str, list[tuple[int, list[float]]]] = {}
    ceilings: dict[str, float] = {}
    for name, cases in families.items():
        reference[name], redrawn = [], []
        for case in cases:
            found = generate_candidates(case.host, case.trajectory, [exhaustive_steps(steps)])
            table = table_of(case, found)
            reference[name].append((table.chosen_step, table.combined))
            scorer = case.scorer
            if isinstance(scorer, NoisyTwoPeakScorer):
                other = NoisyTwoPeakScorer(scorer.decoy, scorer.penalty, scorer.noise, salt=b"re-drawn")
                images = to_image(found.for_pair(0)[1])
                redrawn.append(
                    search_scores(other, found.steps, images, case.original, case.mask, case.color)
                )
        if redrawn:
            hits = [abs(r.chosen_step - e) <= 1 for r, (e, _) in zip(redrawn, reference[name])]
            ceilings[name] = sum(hits) / len(hits)
    header = "| variant | rows mean / worst | smooth ±1 | " + " | ".join(
        f"{name}: ±1 (≥ {fmt_pct(ceilings[name] - 0.05)}) / p95 regret" for name in ceilings
    )
    print(header + " |\n|---|---|---|" + "---|" * len(ceilings))
    coarse_cache: dict[tuple[str, int, tuple[int, ...], SubSchedule], tuple[CandidateSet, ScoreTable]] = {}
    for v in VARIANTS:
        if args.only and args.only not in v.name:
            continue
        start = time.perf_counter()
        cells, landed = [], []
        for name, cases in families.items():
            hits, regrets = 0, []
            for i, case in enumerate(cases):
                key = (name, i, tuple(v.coarse_steps(steps)), v.schedule)
                if key not in coarse_cache:
                    coarse = generate_candidates(
                        case.host, case.trajectory, [v.coarse_steps(steps)], schedule=v.schedule
                    )
                    coarse_cache[key] = (coarse, table_of(case, coarse))
                chosen, rows = run_variant(v, case, *coarse_cache[key])
                exhaustive, curve = reference[name][i]
                hits += abs(chosen - exhaustive) <= 1
                regrets.append(curve[exhaustive - 1] - curve[chosen - 1])
                landed.append(rows + max(0, chosen - REASSEMBLY_STEP))
            p95 = sorted(regrets)[max(0, math.ceil(0.95 * len(regrets)) - 1)]
            cells.append(f"{fmt_pct(hits / len(cases))}" + ("" if name == "smooth" else f" / {p95:.3f}"))
        landed_mean, landed_worst = (
            edit_ratio(sum(landed) / len(landed), steps),
            edit_ratio(max(landed), steps),
        )
        if v.static:
            mean, worst = uniform_rows(v, steps)
            rows_cell = f"{fmt_ratio(mean)} / {fmt_ratio(worst)} (landed {fmt_ratio(landed_mean)})"
        else:
            rows_cell = f"landed {fmt_ratio(landed_mean)} / {fmt_ratio(landed_worst)}"
        print(
            f"| {v.name} | {rows_cell} | {' | '.join(cells)} |  ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
