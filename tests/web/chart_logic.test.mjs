// Shaping the nodes' ui payloads, chart geometry and hit-testing, markers and link walking.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  COLORS,
  NEUTRAL_CELL,
  axisTicks,
  chartFrame,
  chartMarkers,
  choicesByPair,
  originNode,
  polylineRuns,
  scoreCharts,
  scoreColor,
  searchGrids,
  stepAtX,
  stepReadout,
  viewUrl,
  xForStep,
  yForValue,
} from "../../web/oir_chart_logic.js";

/** A two-pair scorer payload shaped like nodes/scoring_nodes.py's `ui`. */
function scorerOutput() {
  const steps = [1, 2, 3, 4, 5];
  const layout = (pair) => ({ pair, steps, count: 5, columns: 3, rows: 2, thumb_width: 128, thumb_height: 128, bar: 16 });
  const table = (chosen) => ({
    steps,
    editing: [0.2, 0.21, 0.25, 0.3, 0.31],
    fidelity: [-0.01, -0.02, -0.05, -0.09, -0.2],
    editing_norm: [0, 0.09, 0.45, 0.91, 1],
    fidelity_norm: [1, 0.95, 0.79, 0.58, 0],
    combined: [0.5, 0.52, 0.62, 0.745, 0.5],
    chosen_index: steps.indexOf(chosen),
    chosen_step: chosen,
    weights: [0.5, 0.5],
    editing_constant: false,
    fidelity_constant: false,
  });
  return {
    oir_images: [
      { filename: "ComfyUI_temp_a_00001_.png", subfolder: "", type: "temp" },
      { filename: "ComfyUI_temp_a_00002_.png", subfolder: "", type: "temp" },
    ],
    animated: [false],
    oir_scores: [
      { pair: 0, source: "dog", target: "cat", chosen: 4, searched: 4, override: null, table: table(4), grid: layout(0) },
      { pair: 1, source: "gift", target: "cake", chosen: 2, searched: 4, override: 2, table: table(4), grid: layout(1) },
    ],
  };
}

test("scoreCharts shapes one chart per pair with its grid image", () => {
  const charts = scoreCharts(scorerOutput());
  assert.equal(charts.length, 2);
  const [first, second] = charts;
  assert.equal(first.title, "pair 1: dog → cat");
  assert.deepEqual(first.steps, [1, 2, 3, 4, 5]);
  assert.deepEqual(first.series.combined, [0.5, 0.52, 0.62, 0.745, 0.5]);
  assert.deepEqual(first.raw.fidelity, [-0.01, -0.02, -0.05, -0.09, -0.2]);
  assert.equal(first.image.filename, "ComfyUI_temp_a_00001_.png");
  assert.equal(second.image.filename, "ComfyUI_temp_a_00002_.png");
  assert.deepEqual([second.chosen, second.searched, second.override], [2, 4, 2]);
  assert.equal(second.grid.columns, 3);
  assert.equal(first.totalSteps, Infinity);
});

test("scoreCharts degrades: nothing, junk, gaps and missing images never throw", () => {
  assert.deepEqual(scoreCharts(undefined), []);
  assert.deepEqual(scoreCharts({ oir_images: [] }), []);
  assert.deepEqual(scoreCharts({ oir_scores: [null, 3, { table: { steps: [] } }, { table: { steps: ["a"] } }] }), []);
  const output = scorerOutput();
  delete output.oir_images;
  output.oir_scores[0].table.combined = [0.5, null, "x", Number.NaN, 1];
  delete output.oir_scores[0].grid;
  const [chart] = scoreCharts(output);
  assert.deepEqual(chart.series.combined, [0.5, null, null, null, 1]);
  assert.equal(chart.image, null);
  assert.equal(chart.grid, null);
});

test("scoreCharts takes T from the payload when the node sends it", () => {
  const output = scorerOutput();
  output.oir_scores[0].total_steps = 50;
  assert.equal(scoreCharts(output)[0].totalSteps, 50);
});

test("searchGrids pairs each layout with its image", () => {
  const output = { oir_images: [{ filename: "g0.png", type: "temp", subfolder: "" }], oir_grid: [scorerOutput().oir_scores[0].grid, { junk: 1 }], oir_stats: [{}] };
  const grids = searchGrids(output);
  assert.equal(grids.length, 1);
  assert.equal(grids[0].image.filename, "g0.png");
  assert.deepEqual(grids[0].layout.steps, [1, 2, 3, 4, 5]);
  assert.deepEqual(searchGrids(null), []);
});

test("choicesByPair gives the search strip the chosen step and scores per pair", () => {
  const choices = choicesByPair(scoreCharts(scorerOutput()));
  assert.equal(choices.get(0).chosen, 4);
  assert.equal(choices.get(1).chosen, 2);
  assert.equal(choices.get(0).scores.get(3), 0.62);
});

test("x is linear in the step value; y maps 0..1 to bottom..top", () => {
  const frame = chartFrame([21, 22, 25], 230, 120, { left: 30, right: 0, top: 10, bottom: 10 });
  assert.equal(xForStep(21, frame), 30);
  assert.equal(xForStep(25, frame), 230);
  assert.equal(xForStep(22, frame), 80); // sparse steps keep their true spacing
  assert.equal(yForValue(0, frame), 110);
  assert.equal(yForValue(1, frame), 10);
  assert.equal(yForValue(2, frame), 10); // clamped
  const single = chartFrame([7], 230, 120, { left: 30, right: 0 });
  assert.equal(xForStep(7, single), 130);
});

test("stepAtX finds the nearest step and nothing far outside the plot", () => {
  const steps = Array.from({ length: 50 }, (_, i) => i + 1);
  const frame = chartFrame(steps, 520, 120, { left: 30, right: 0 });
  for (const step of steps) {
    assert.equal(stepAtX(xForStep(step, frame), steps, frame), step);
    assert.equal(stepAtX(xForStep(step, frame) + 4, steps, frame), step); // spacing is 10 px
  }
  assert.equal(stepAtX(xForStep(10, frame) + 5, steps, frame), 10); // halfway: the smaller step
  assert.equal(stepAtX(25, steps, frame), 1); // just left of the plot: still the first step
  assert.equal(stepAtX(2, steps, frame), null); // over the y labels
  assert.equal(stepAtX(600, steps, frame), null);
  assert.equal(stepAtX(Number.NaN, steps, frame), null);
  assert.equal(stepAtX(100, [], frame), null);
  const single = chartFrame([7], 200, 100);
  assert.equal(stepAtX(100, [7], single), 7);
});

test("every step's x maps back to that step for sparse and unsorted sets", () => {
  const steps = [50, 5, 10, 20, 21, 22, 23, 24, 30, 40];
  const frame = chartFrame(steps, 400, 100);
  for (const step of steps) assert.equal(stepAtX(xForStep(step, frame), steps, frame), step);
});

test("polylineRuns breaks the line at gaps", () => {
  const frame = chartFrame([1, 2, 3, 4], 130, 110, { left: 30, right: 0, top: 10, bottom: 0 });
  assert.deepEqual(polylineRuns([1, 2, 3, 4], [0, 1, null, 0.5], frame), ["30,110 63.33,10", "130,60"]);
  assert.deepEqual(polylineRuns([1, 2], [null, null], frame), []);
});

test("axisTicks labels the ends and round steps without crowding", () => {
  const steps = Array.from({ length: 50 }, (_, i) => i + 1);
  const ticks = axisTicks(steps, chartFrame(steps, 300, 100));
  assert.equal(ticks[0], 1);
  assert.equal(ticks.at(-1), 50);
  const frame = chartFrame(steps, 300, 100);
  for (let i = 1; i < ticks.length; i++) assert.ok(xForStep(ticks[i], frame) - xForStep(ticks[i - 1], frame) >= 28);
  assert.deepEqual(axisTicks([7], frame), [7]);
  assert.deepEqual(axisTicks([], frame), []);
});

test("markers: the search's choice is shown only when an override displaced it", () => {
  const [auto, overridden] = scoreCharts(scorerOutput());
  assert.deepEqual(chartMarkers(auto, null), { chosen: 4, searched: null, next: null, status: "t=4 (search)" });
  const same = chartMarkers(overridden, 2);
  assert.equal(same.searched, 4);
  assert.equal(same.next, null);
  assert.match(same.status, /t=2 \(override; search: t=4\)/);
});

test("markers: a pending change shows the next run's step until the graph is queued", () => {
  const [auto, overridden] = scoreCharts(scorerOutput());
  assert.equal(chartMarkers(auto, 3).next, 3);
  assert.match(chartMarkers(auto, 3).status, /next run: t=3, queue to apply/);
  const back = chartMarkers(overridden, null); // clicked back to auto: the search's choice returns
  assert.equal(back.next, 4);
  assert.match(back.status, /next run: t=4 \(auto\)/);
  assert.match(chartMarkers(auto, undefined).status, /does not parse/);
  assert.equal(chartMarkers(auto, 4).next, null); // overriding with the search's own choice
  assert.match(chartMarkers(auto, 4).status, /next run: override/);
});

test("stepReadout lists the normalised scores of a step", () => {
  const [chart] = scoreCharts(scorerOutput());
  assert.equal(stepReadout(chart, 3), "t=3 · editing 0.45 · fidelity 0.79 · combined 0.62");
  assert.equal(stepReadout(chart, 99), "t=99");
});

test("viewUrl builds ComfyUI's /view route", () => {
  const url = viewUrl({ filename: "a b.png", subfolder: "x", type: "temp" }, (route) => `/api${route}`);
  assert.equal(url, "/api/view?filename=a+b.png&subfolder=x&type=temp");
  assert.equal(viewUrl({ filename: "c.png" }, (r) => r), "/view?filename=c.png&subfolder=&type=temp");
});

test("scoreColor shades from neutral ink to the combined colour", () => {
  assert.equal(scoreColor(null), NEUTRAL_CELL);
  assert.equal(scoreColor(Number.NaN), NEUTRAL_CELL);
  assert.equal(scoreColor(1), COLORS.combined);
  assert.equal(scoreColor(0), "rgb(45, 45, 52)");
  assert.equal(scoreColor(7), COLORS.combined);
});

test("originNode walks through reroutes to the producing node", () => {
  const search = { type: "OIRParallelStepSearch", inputs: {} };
  const reroute2 = { type: "Reroute", inputs: { 0: search } };
  const reroute1 = { type: "Reroute", inputs: { 0: reroute2 } };
  const scorer = { type: "OIRMaskMetricScorer", inputs: { candidates: reroute1 } };
  const inputNode = (node, name) => node.inputs[name] ?? null;
  const isReroute = (node) => node.type === "Reroute";
  assert.equal(originNode(scorer, "candidates", inputNode, isReroute), search);
  assert.equal(originNode({ inputs: {} }, "candidates", inputNode, isReroute), null);
  const loop = { type: "Reroute", inputs: {} };
  loop.inputs[0] = loop;
  assert.equal(originNode({ inputs: { candidates: loop } }, "candidates", inputNode, isReroute), null);
});

test("reassemblySummary names the background choice and its PSNR", async () => {
  const { reassemblySummary } = await import("../../web/oir_chart_logic.js");
  const report = (extra) => ({ oir_reassembly: [{ reassembly_step: 2, pairs: [], ...extra }] });
  assert.equal(
    reassemblySummary(report({ background: "preserve", feather: 2, background_psnr: 31.256 })),
    "background: preserve, feather 2 · background PSNR 31.26 dB vs the VAE round trip",
  );
  assert.equal(
    reassemblySummary(report({ background: "official", feather: 0, background_psnr: null })),
    "background: official · background PSNR connect a VAE to measure it",
  );
  assert.equal(reassemblySummary(report({})), null);
  assert.equal(reassemblySummary({}), null);
});

test("levelsSummary shows the inversion's note only when levels and steps differ", async () => {
  const { levelsSummary } = await import("../../web/oir_chart_logic.js");
  const note = "steps = 6 gave 7 denoising levels with the ddim_uniform schedule";
  assert.equal(levelsSummary({ oir_levels: [{ steps: 6, levels: 7, scheduler: "ddim_uniform", note }] }), note);
  assert.equal(levelsSummary({ oir_levels: [{ steps: 5, levels: 5, scheduler: "ddim_uniform", note: null }] }), null);
  assert.equal(levelsSummary({ oir_split: [] }), null);
  assert.equal(levelsSummary(undefined), null);
});

test("regionScoreSummary lists each pair's final CLIP score", async () => {
  const { regionScoreSummary } = await import("../../web/oir_chart_logic.js");
  const rows = [
    { pair: 0, source: "dog", target: "cat", score_text: "cat", clip_score: 0.305339 },
    { pair: 1, source: "gift", target: "cake", score_text: "cake", clip_score: 0.10760093 },
  ];
  assert.equal(
    regionScoreSummary({ oir_region_scores: rows }),
    "CLIP score in the mask: dog → cat 0.3053 · gift → cake 0.1076",
  );
  assert.equal(regionScoreSummary({ oir_region_scores: [{ source: "a", target: "b", clip_score: null }] }), null);
  assert.equal(regionScoreSummary({ oir_region_scores: [] }), null);
  assert.equal(regionScoreSummary(undefined), null);
});
