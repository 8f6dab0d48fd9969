// The search strip and the scorer's chart agree in every order of events a page sees: the strip's
// state (StripState) and the page-wide ScoreBoard, driven as web/oir_search_ui.js drives them.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ScoreBoard,
  StripState,
  candidatesKey,
  choicesByPair,
  scoreCharts,
  scoredKey,
  searchGrids,
} from "../../web/oir_chart_logic.js";

const layout = (pair) => ({ pair, steps: [1, 2, 3], columns: 3, thumb_width: 8, thumb_height: 8, bar: 2 });

/** A search node's payload for candidates `key` (two pairs). */
function searchOutput(key) {
  return {
    oir_images: [{ filename: `grid_${key}_0.png` }, { filename: `grid_${key}_1.png` }],
    oir_grid: [layout(0), layout(1)],
    oir_candidates: [key],
  };
}

/** A scorer's payload for candidates `key`, choosing `chosen[k]` for pair k. */
function scorerOutput(key, chosen) {
  return {
    oir_images: [{ filename: "s0.png" }, { filename: "s1.png" }],
    oir_scores: chosen.map((step, pair) => ({
      pair,
      source: "a",
      target: "b",
      chosen: step,
      searched: step,
      override: null,
      total_steps: 3,
      candidates: key,
      table: {
        steps: [1, 2, 3],
        editing_norm: [0, 0.5, 1],
        fidelity_norm: [1, 0.5, 0],
        combined: [0.1 * step, 0.2, 0.3],
        chosen_step: step,
      },
    })),
  };
}

/** What the page does for each message: the scorer records and offers, the search sets grids. */
function page() {
  const board = new ScoreBoard();
  const strips = new Set();
  return {
    board,
    strip() {
      const state = new StripState(board);
      strips.add(state);
      return state;
    },
    search(state, output) {
      state.setGrids(searchGrids(output), candidatesKey(output));
    },
    scorer(output) {
      const charts = scoreCharts(output);
      const key = scoredKey(charts);
      const choices = choicesByPair(charts);
      board.record(key, choices);
      for (const state of strips) state.offer(key, choices);
    },
  };
}

const chosenSteps = (state) => [...state.choices.values()].map((c) => c.chosen);

test("both nodes carry the same key, read from their payloads", () => {
  assert.equal(candidatesKey(searchOutput("k1")), "k1");
  assert.equal(scoredKey(scoreCharts(scorerOutput("k1", [2, 3]))), "k1");
  assert.equal(candidatesKey({ oir_grid: [] }), null);
  assert.equal(scoredKey(scoreCharts(scorerOutput("", [2, 3]))), null);
});

test("a cached re-queue after a reload: the scorer's result first, then the search's", () => {
  const p = page();
  const strip = p.strip(); // a fresh page: the strip is empty
  p.scorer(scorerOutput("k1", [2, 3]));
  assert.deepEqual(chosenSteps(strip), []); // nothing to shade yet
  p.search(strip, searchOutput("k1"));
  assert.deepEqual(chosenSteps(strip), [2, 3]);
});

test("the usual order, and the search's cached result sent again after the scorer's", () => {
  const p = page();
  const strip = p.strip();
  p.search(strip, searchOutput("k1"));
  p.scorer(scorerOutput("k1", [1, 2]));
  assert.deepEqual(chosenSteps(strip), [1, 2]);
  p.search(strip, searchOutput("k1"));
  assert.deepEqual(chosenSteps(strip), [1, 2]);
});

test("a partial re-run of the scorer alone (a new override) updates the strip", () => {
  const p = page();
  const strip = p.strip();
  p.search(strip, searchOutput("k1"));
  p.scorer(scorerOutput("k1", [1, 2]));
  p.scorer(scorerOutput("k1", [3, 2]));
  assert.deepEqual(chosenSteps(strip), [3, 2]);
});

test("new candidates drop the old scores until they are scored; late old scores are refused", () => {
  const p = page();
  const strip = p.strip();
  p.search(strip, searchOutput("k1"));
  p.scorer(scorerOutput("k1", [1, 2]));
  p.search(strip, searchOutput("k2"));
  assert.deepEqual(chosenSteps(strip), []);
  p.scorer(scorerOutput("k1", [3, 3])); // another scorer still scoring the old candidates
  assert.deepEqual(chosenSteps(strip), []);
  p.scorer(scorerOutput("k2", [2, 1]));
  assert.deepEqual(chosenSteps(strip), [2, 1]);
});

test("two searches on one page each take only their own candidates' scores", () => {
  const p = page();
  const first = p.strip();
  const second = p.strip();
  p.search(first, searchOutput("a"));
  p.search(second, searchOutput("b"));
  p.scorer(scorerOutput("b", [3, 1]));
  p.scorer(scorerOutput("a", [1, 1]));
  assert.deepEqual(chosenSteps(first), [1, 1]);
  assert.deepEqual(chosenSteps(second), [3, 1]);
});

test("the board keeps the newest keys only", () => {
  const board = new ScoreBoard(2);
  board.record("a", new Map());
  board.record("b", new Map());
  board.record("a", new Map()); // used again: now the newest
  board.record("c", new Map());
  assert.deepEqual([...board.byKey.keys()], ["a", "c"]);
  assert.equal(board.choicesFor("b"), null);
  assert.equal(board.choicesFor(null), null);
});
