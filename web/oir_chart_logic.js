/**
 * Pure logic behind the OIR search chart: no DOM, no ComfyUI imports, so Node's test runner can
 * exercise every rule (tests/web/).
 *
 * - shaping the `ui` payloads of OIRMaskMetricScorer (`oir_scores`) and OIRParallelStepSearch
 *   (`oir_grid`) into chart models;
 * - chart geometry: step <-> x, score <-> y, nearest-step hit-testing;
 * - the `step_override` widget grammar, mirroring `oir_core/search.py`
 *   (`parse_step_overrides` / `format_step_overrides`) rule for rule;
 * - crop rectangles of one candidate inside a pair's grid image (`oir_core/figures.py::grid_geometry`).
 *
 * @module oir_chart_logic
 */

/** Colours of `oir_core/figures.py`, so the live chart and the node's `plot` image agree. */
export const COLORS = Object.freeze({
  editing: "rgb(66, 135, 245)",
  fidelity: "rgb(46, 204, 113)",
  combined: "rgb(235, 64, 52)",
  highlight: "rgb(255, 196, 0)",
});

/** The three plotted series, in drawing order (combined on top). */
export const SERIES = Object.freeze([
  Object.freeze({ key: "editing", label: "editing", color: COLORS.editing }),
  Object.freeze({ key: "fidelity", label: "fidelity", color: COLORS.fidelity }),
  Object.freeze({ key: "combined", label: "combined", color: COLORS.combined }),
]);

// ---------------------------------------------------------------------------------------------
// Payload shapes (what the nodes send; see nodes/scoring_nodes.py and nodes/sampling_nodes.py)
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {{filename: string, subfolder?: string, type?: string}} ImageRef
 *   One saved preview image, as in ComfyUI's `ui.images`.
 * @typedef {{pair: number, steps: number[], count: number, columns: number, rows: number,
 *   thumb_width: number, thumb_height: number, bar: number, header: number}} GridLayout
 *   Layout of one pair's candidate grid image (`grid_geometry` plus the pair and its steps).
 * @typedef {{x: number, y: number, width: number, height: number}} Rect
 * @typedef {{
 *   pair: number, title: string, source: string, target: string,
 *   steps: number[],
 *   series: {editing: (number|null)[], fidelity: (number|null)[], combined: (number|null)[]},
 *   raw: {editing: (number|null)[], fidelity: (number|null)[]},
 *   chosen: number, searched: number, override: number|null,
 *   constant: {editing: boolean, fidelity: boolean},
 *   weights: number[],
 *   totalSteps: number,
 *   image: ImageRef|null, grid: GridLayout|null,
 *   candidates: string|null
 * }} PairChart
 *   Everything one pair's chart needs, validated.
 */

/** @param {unknown} value @returns {number|null} a finite number or null (a gap in the curve) */
function finiteOrNull(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/** @param {unknown} value @returns {value is number} */
function isStep(value) {
  return Number.isInteger(value) && /** @type {number} */ (value) >= 0;
}

/**
 * A grid layout from the payload, or null when it is missing or inconsistent (the thumbnail is
 * then simply not shown: a bad layout must never crop the wrong candidate).
 * @param {unknown} value
 * @returns {GridLayout|null}
 */
export function gridLayout(value) {
  if (!value || typeof value !== "object") return null;
  const g = /** @type {Record<string, unknown>} */ (value);
  const steps = Array.isArray(g.steps) ? g.steps : null;
  const whole = ["columns", "thumb_width", "thumb_height"].every(
    (key) => Number.isInteger(g[key]) && /** @type {number} */ (g[key]) > 0,
  );
  if (!steps || !steps.every(isStep) || !whole) return null;
  if (!Number.isInteger(g.bar) || /** @type {number} */ (g.bar) < 0) return null;
  // `header` (the pair's title bar above the grid) is absent from payloads of older versions.
  const header = g.header === undefined ? 0 : g.header;
  if (!Number.isInteger(header) || /** @type {number} */ (header) < 0) return null;
  const columns = /** @type {number} */ (g.columns);
  return {
    pair: Number.isInteger(g.pair) ? /** @type {number} */ (g.pair) : 0,
    steps: /** @type {number[]} */ (steps),
    count: steps.length,
    columns,
    rows: Math.max(1, Math.ceil(steps.length / columns)),
    thumb_width: /** @type {number} */ (g.thumb_width),
    thumb_height: /** @type {number} */ (g.thumb_height),
    bar: /** @type {number} */ (g.bar),
    header: /** @type {number} */ (header),
  };
}

/**
 * Shapes the Mask Metric Scorer's `ui` payload (the `output` of ComfyUI's `executed` message)
 * into one chart model per edit pair. Malformed entries are skipped rather than thrown on: the
 * chart must degrade, never break the canvas.
 *
 * The k-th `oir_scores` entry goes with the k-th image of `oir_images` (one grid image per pair;
 * not `images`, which the frontend would draw on the node as a second copy of the grid).
 *
 * @param {unknown} output
 * @returns {PairChart[]}
 */
export function scoreCharts(output) {
  if (!output || typeof output !== "object") return [];
  const out = /** @type {Record<string, unknown>} */ (output);
  const entries = Array.isArray(out.oir_scores) ? out.oir_scores : [];
  const images = Array.isArray(out.oir_images) ? out.oir_images : [];
  /** @type {PairChart[]} */
  const charts = [];
  entries.forEach((entry, position) => {
    if (!entry || typeof entry !== "object") return;
    const e = /** @type {Record<string, any>} */ (entry);
    const table = e.table && typeof e.table === "object" ? e.table : null;
    const steps = table && Array.isArray(table.steps) ? table.steps : null;
    if (!steps || steps.length === 0 || !steps.every(isStep)) return;
    /** @param {string} key */
    const column = (key) => {
      const values = Array.isArray(table[key]) ? table[key] : [];
      return steps.map((_, i) => finiteOrNull(values[i]));
    };
    const pair = Number.isInteger(e.pair) ? e.pair : position;
    const searched = isStep(e.searched) ? e.searched : isStep(table.chosen_step) ? table.chosen_step : steps[0];
    const override = isStep(e.override) ? e.override : null;
    const chosen = isStep(e.chosen) ? e.chosen : (override ?? searched);
    const source = typeof e.source === "string" ? e.source : "";
    const target = typeof e.target === "string" ? e.target : "";
    const image = images[position];
    charts.push({
      pair,
      title: source || target ? `pair ${pair + 1}: ${source} → ${target}` : `pair ${pair + 1}`,
      source,
      target,
      steps: [...steps],
      series: { editing: column("editing_norm"), fidelity: column("fidelity_norm"), combined: column("combined") },
      raw: { editing: column("editing"), fidelity: column("fidelity") },
      chosen,
      searched,
      override,
      constant: { editing: table.editing_constant === true, fidelity: table.fidelity_constant === true },
      weights: Array.isArray(table.weights) ? table.weights.map(Number) : [],
      // T is not in the payload yet; without it an override is only checked for being >= 1.
      totalSteps: isStep(e.total_steps) && e.total_steps > 0 ? e.total_steps : Infinity,
      image: isImageRef(image) ? image : null,
      grid: gridLayout(e.grid),
      // The key of the candidates these scores belong to (the search sends the same one).
      candidates: typeof e.candidates === "string" && e.candidates ? e.candidates : null,
    });
  });
  return charts;
}

/**
 * @typedef {{pair: number, layout: GridLayout, image: ImageRef|null}} SearchGrid
 *   One pair's candidate grid as the Parallel Step Search sent it.
 */

/**
 * Shapes the Parallel Step Search's `ui` payload: one grid (layout + image) per pair.
 * @param {unknown} output
 * @returns {SearchGrid[]}
 */
export function searchGrids(output) {
  if (!output || typeof output !== "object") return [];
  const out = /** @type {Record<string, unknown>} */ (output);
  const layouts = Array.isArray(out.oir_grid) ? out.oir_grid : [];
  const images = Array.isArray(out.oir_images) ? out.oir_images : [];
  /** @type {SearchGrid[]} */
  const grids = [];
  layouts.forEach((value, position) => {
    const layout = gridLayout(value);
    if (!layout) return;
    const image = images[position];
    grids.push({ pair: layout.pair, layout, image: isImageRef(image) ? image : null });
  });
  return grids;
}

/**
 * Per pair (by pair index): the chosen step and the combined score per step, from the scorer's
 * charts; what the search node needs to highlight its grid.
 * @param {PairChart[]} charts
 * @returns {Map<number, {chosen: number, scores: Map<number, number|null>}>}
 */
export function choicesByPair(charts) {
  const choices = new Map();
  for (const chart of charts) {
    const scores = new Map(chart.steps.map((step, i) => [step, chart.series.combined[i]]));
    choices.set(chart.pair, { chosen: chart.chosen, scores });
  }
  return choices;
}

/**
 * The key of the candidates a Parallel Step Search's payload shows (`ui.oir_candidates`,
 * nodes/payloads.py::candidates_key), or null (a payload without one).
 * @param {unknown} output
 * @returns {string|null}
 */
export function candidatesKey(output) {
  const keys = /** @type {any} */ (output)?.oir_candidates;
  const key = Array.isArray(keys) ? keys[0] : null;
  return typeof key === "string" && key ? key : null;
}

/**
 * The key of the candidates a scorer's charts score (one key for all its pairs), or null.
 * @param {PairChart[]} charts
 * @returns {string|null}
 */
export function scoredKey(charts) {
  const keys = new Set(charts.map((chart) => chart.candidates));
  const [key] = keys;
  return keys.size === 1 && typeof key === "string" ? key : null;
}

/**
 * @typedef {Map<number, {chosen: number, scores: Map<number, number|null>}>} PairChoices
 *   What `choicesByPair` gives: per pair, the chosen step and the combined score per step.
 */

/**
 * The latest scores per candidates key, for every strip on the page. A strip looks its own
 * candidates up here whenever its grids arrive, and takes scores offered for its key; so the strip
 * and the chart agree in any order of ComfyUI's messages (a cached re-queue after a reload sends
 * the scorer's and the search's results independently), wherever the two nodes sit (subgraphs,
 * reroutes: no graph walk), and after a partial re-run of the scorer alone.
 */
export class ScoreBoard {
  /** @param {number} [limit] keys kept (oldest dropped first) */
  constructor(limit = 32) {
    this.limit = limit;
    /** @type {Map<string, PairChoices>} */
    this.byKey = new Map();
  }

  /** @param {string|null} key @param {PairChoices} choices */
  record(key, choices) {
    if (!key) return;
    this.byKey.delete(key); // re-inserted last: the newest
    this.byKey.set(key, choices);
    while (this.byKey.size > this.limit) this.byKey.delete(this.byKey.keys().next().value);
  }

  /** @param {string|null} key @returns {PairChoices|null} */
  choicesFor(key) {
    return key ? (this.byKey.get(key) ?? null) : null;
  }
}

/**
 * One search strip's state: its candidates (grids and key) and the scores it shows. Pure, so the
 * orders of events a page sees are tested as they happen (tests/web/strip_state.test.mjs).
 */
export class StripState {
  /** @param {ScoreBoard} board */
  constructor(board) {
    this.board = board;
    /** @type {SearchGrid[]} */
    this.grids = [];
    /** @type {string|null} */
    this.key = null;
    /** @type {PairChoices} */
    this.choices = new Map();
  }

  /**
   * New grids from the search node: the scores recorded for their key (if any) are shown at once.
   * A payload without a key keeps the earlier scores only when it shows the very same grids.
   * @param {SearchGrid[]} grids
   * @param {string|null} key
   */
  setGrids(grids, key) {
    const same = grids.length > 0 && JSON.stringify(grids) === JSON.stringify(this.grids);
    const recorded = this.board.choicesFor(key);
    this.choices = recorded ?? (same && key === this.key ? this.choices : new Map());
    this.grids = grids;
    this.key = key;
  }

  /**
   * Scores a scorer sent for candidates `key`; taken only when they are this strip's candidates.
   * @param {string|null} key
   * @param {PairChoices} choices
   * @returns {boolean} whether the strip changed
   */
  offer(key, choices) {
    if (!key || key !== this.key) return false;
    this.choices = choices;
    return true;
  }
}

/** @param {unknown} value @returns {value is ImageRef} */
export function isImageRef(value) {
  return !!value && typeof value === "object" && typeof /** @type {any} */ (value).filename === "string";
}

/**
 * The `/view` route of a saved image, as ComfyUI's own previews build it.
 * @param {ImageRef} ref
 * @param {(route: string) => string} apiURL e.g. `api.apiURL`
 * @returns {string}
 */
export function viewUrl(ref, apiURL) {
  const params = new URLSearchParams({
    filename: ref.filename,
    subfolder: ref.subfolder ?? "",
    type: ref.type ?? "temp",
  });
  return apiURL(`/view?${params}`);
}

// ---------------------------------------------------------------------------------------------
// Thumbnails
// ---------------------------------------------------------------------------------------------

/**
 * Where candidate `step` sits in its pair's grid image (pixels of that image): column
 * `i % columns`, row `floor(i / columns)` below the `header` (title) bar, each row
 * `thumb_height + bar` tall (the label bar is left out of the crop). Null when the step is not
 * in the grid.
 * @param {GridLayout} layout
 * @param {number} step
 * @returns {Rect|null}
 */
export function cropRect(layout, step) {
  const index = layout.steps.indexOf(step);
  if (index < 0) return null;
  return {
    x: (index % layout.columns) * layout.thumb_width,
    y: layout.header + Math.floor(index / layout.columns) * (layout.thumb_height + layout.bar),
    width: layout.thumb_width,
    height: layout.thumb_height,
  };
}

/**
 * Largest size of a `width` x `height` thumbnail that fits a `boxWidth` x `boxHeight` box,
 * keeping its aspect ratio.
 * @param {number} width @param {number} height @param {number} boxWidth @param {number} boxHeight
 * @returns {{width: number, height: number}}
 */
export function fitSize(width, height, boxWidth, boxHeight) {
  if (!(width > 0 && height > 0)) return { width: 0, height: 0 };
  const scale = Math.min(boxWidth / width, boxHeight / height);
  return { width: width * scale, height: height * scale };
}

// ---------------------------------------------------------------------------------------------
// Chart geometry and hit-testing
// ---------------------------------------------------------------------------------------------

/**
 * @typedef {{left: number, right: number, top: number, bottom: number, first: number, last: number}} Frame
 *   The plot area in pixels and the step range it spans (`first` at `left`, `last` at `right`).
 */

/**
 * The plot frame for `steps` inside a `width` x `height` chart with the given margins.
 * The x axis is linear in the step value (as `figures.py::plot_x`), so sparse step sets
 * (coarse-to-fine, custom lists) keep their true spacing.
 * @param {number[]} steps
 * @param {number} width @param {number} height
 * @param {{left?: number, right?: number, top?: number, bottom?: number}} [margin]
 * @returns {Frame}
 */
export function chartFrame(steps, width, height, margin = {}) {
  const { left = 30, right = 8, top = 8, bottom = 18 } = margin;
  const first = steps.length ? Math.min(...steps) : 0;
  const last = steps.length ? Math.max(...steps) : 0;
  return {
    left,
    right: Math.max(left + 1, width - right),
    top,
    bottom: Math.max(top + 1, height - bottom),
    first,
    last,
  };
}

/** Pixel column of `step` (a single-step chart puts it in the middle). @param {number} step @param {Frame} f */
export function xForStep(step, f) {
  if (f.last === f.first) return (f.left + f.right) / 2;
  return f.left + ((step - f.first) * (f.right - f.left)) / (f.last - f.first);
}

/** Pixel row of a normalised score (0 at the bottom, 1 at the top; clamped). @param {number} value @param {Frame} f */
export function yForValue(value, f) {
  const clamped = Math.min(1, Math.max(0, value));
  return f.bottom - clamped * (f.bottom - f.top);
}

/**
 * The step under pixel column `x`: the nearest candidate step, or null when `x` is outside the
 * plot area by more than half the typical spacing between steps (so hovering the y labels does
 * not select the first step). Ties go to the smaller step, like the search itself.
 * @param {number} x
 * @param {number[]} steps
 * @param {Frame} f
 * @returns {number|null}
 */
export function stepAtX(x, steps, f) {
  if (!steps.length || !Number.isFinite(x)) return null;
  let best = null;
  let bestDistance = Infinity;
  for (const step of steps) {
    const distance = Math.abs(xForStep(step, f) - x);
    if (distance < bestDistance || (distance === bestDistance && best !== null && step < best)) {
      best = step;
      bestDistance = distance;
    }
  }
  const spacing = steps.length > 1 ? (f.right - f.left) / (steps.length - 1) : (f.right - f.left) / 2;
  const slack = Math.max(4, spacing / 2);
  return x < f.left - slack || x > f.right + slack ? null : best;
}

/**
 * SVG `points` of one series; a null value breaks the line, so this returns one string per
 * unbroken run.
 * @param {number[]} steps
 * @param {(number|null)[]} values
 * @param {Frame} f
 * @returns {string[]}
 */
export function polylineRuns(steps, values, f) {
  /** @type {string[]} */
  const runs = [];
  /** @type {string[]} */
  let run = [];
  steps.forEach((step, i) => {
    const value = values[i];
    if (value === null || value === undefined) {
      if (run.length) runs.push(run.join(" "));
      run = [];
      return;
    }
    run.push(`${round2(xForStep(step, f))},${round2(yForValue(value, f))}`);
  });
  if (run.length) runs.push(run.join(" "));
  return runs;
}

/** @param {number} v */
function round2(v) {
  return Math.round(v * 100) / 100;
}

/**
 * Which steps get an x-axis label: the first, the last and round numbers in between, spaced so
 * that labels about `minGap` pixels apart never overlap.
 * @param {number[]} steps
 * @param {Frame} f
 * @param {number} [minGap]
 * @returns {number[]}
 */
export function axisTicks(steps, f, minGap = 28) {
  if (!steps.length) return [];
  const sorted = [...new Set(steps)].sort((a, b) => a - b);
  const first = sorted[0];
  const last = sorted[sorted.length - 1];
  if (first === last) return [first];
  const pixelsPerStep = (f.right - f.left) / (last - first);
  const nice = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000];
  const every = nice.find((n) => n * pixelsPerStep >= minGap) ?? last - first;
  const ticks = [first];
  for (let s = Math.ceil(first / every) * every; s < last; s += every) {
    if (s > first && (s - first) * pixelsPerStep >= minGap && (last - s) * pixelsPerStep >= minGap) {
      ticks.push(s);
    }
  }
  ticks.push(last);
  return ticks;
}

// ---------------------------------------------------------------------------------------------
// step_override: the grammar of oir_core/search.py, mirrored exactly
// ---------------------------------------------------------------------------------------------

/** Python's `str.isspace()` characters (differs from JS `\s`: has \x1c-\x1f, \x85; lacks \ufeff). */
const PY_SPACE = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
const PY_STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "gu");
/** Python's `str.isdecimal()` = Unicode general category Nd; `int()` accepts exactly these. */
const DECIMAL = /^\p{Nd}+$/u;
const IS_DECIMAL_CHAR = /^\p{Nd}$/u;

/** Python's `str.strip()` (no arguments). @param {string} text */
export function pyStrip(text) {
  return text.replace(PY_STRIP, "");
}

/**
 * Python's `int()` of a string of Nd digits. Unicode encodes every decimal digit set as runs of
 * ten consecutive code points 0..9, so a digit's value is its distance from the start of its
 * contiguous Nd block, modulo 10 (this also covers the adjacent runs of mathematical digits).
 * @param {string} digits a non-empty `\p{Nd}+` string
 * @returns {number}
 */
function decimalValue(digits) {
  let value = 0;
  for (const char of digits) {
    const code = /** @type {number} */ (char.codePointAt(0));
    let start = code;
    while (IS_DECIMAL_CHAR.test(String.fromCodePoint(start - 1))) start -= 1;
    value = value * 10 + ((code - start) % 10);
  }
  return value;
}

/** A `step_override` the node would refuse, with the Python side's wording. */
export class StepOverrideError extends Error {
  /** @param {string} entry @param {string} problem @param {string} example a valid text to type */
  constructor(entry, problem, example) {
    super(`step_override ${JSON.stringify(entry)}: ${problem}; type e.g. '${example}'`);
    this.name = "StepOverrideError";
    this.entry = entry;
    this.problem = problem;
    this.example = example;
  }
}

/**
 * `oir_core/steps.py::_override_example` in JS: the typed entries with every one that is not
 * `auto` or a step in `1..steps` replaced by `auto`, a valid text close to what was typed.
 * @param {string[]} entries stripped, lower-cased
 * @param {number} steps
 */
function overrideExample(entries, steps) {
  const valid = (entry) => {
    if (entry === "auto") return true;
    const value = DECIMAL.test(entry) ? decimalValue(entry) : NaN;
    return value >= 1 && value <= steps;
  };
  return entries.map((entry) => (valid(entry) ? entry : "auto")).join(", ");
}

/**
 * `oir_core/search.py::parse_step_overrides` in JS: `""` or `"auto, 23"`, one entry per pair;
 * `auto` (any case) or an empty entry keeps the search's choice; fewer entries than pairs are
 * padded with auto; more are refused; a step must be a whole number in `1..steps`.
 *
 * Python's `str.isdigit()` also accepts superscripts and circled digits that `int()` then
 * rejects (a ValueError, not an input error); here those are plain input errors.
 *
 * @param {string} text
 * @param {number} pairCount
 * @param {number} [steps] T; `Infinity` when unknown
 * @returns {(number|null)[]}
 * @throws {StepOverrideError}
 */
export function parseStepOverrides(text, pairCount, steps = Infinity) {
  const entries = pyStrip(text) ? text.split(",").map((entry) => pyStrip(entry).toLowerCase()) : [];
  if (entries.length > pairCount) {
    throw new StepOverrideError(
      text,
      `${entries.length} entries for ${pairCount} edit pairs`,
      overrideExample(entries.slice(0, pairCount), steps),
    );
  }
  /** @type {(number|null)[]} */
  const overrides = entries.map((entry, pair) => {
    if (entry === "" || entry === "auto") return null;
    const value = DECIMAL.test(entry) ? decimalValue(entry) : NaN;
    if (!(value >= 1 && value <= steps)) {
      const range = Number.isFinite(steps) ? `1..${steps}` : "1..T";
      throw new StepOverrideError(
        entry,
        `pair ${pair + 1}: not 'auto' or a step in ${range}`,
        overrideExample(entries, steps),
      );
    }
    return value;
  });
  while (overrides.length < pairCount) overrides.push(null);
  return overrides;
}

/**
 * `oir_core/search.py::format_step_overrides` in JS (its inverse).
 * @param {(number|null)[]} overrides
 * @returns {string}
 */
export function formatStepOverrides(overrides) {
  return overrides.map((step) => (step === null || step === undefined ? "auto" : String(step))).join(", ");
}

/**
 * The widget text after setting one pair's override by clicking the chart (`step` = null: back
 * to auto). The other pairs keep their entries even when they do not parse (the node reports
 * those; silently rewriting a user's text would hide the mistake). Extra entries beyond the pair
 * count are dropped, since the node would refuse them. All-auto collapses to `""`, the widget's
 * default, which the node reads as all auto too.
 * @param {string} text current widget value
 * @param {number} pairCount
 * @param {number} pair 0-based pair index
 * @param {number|null} step
 * @returns {string}
 */
export function withPairOverride(text, pairCount, pair, step) {
  const count = Math.max(pairCount, pair + 1);
  const entries = pyStrip(text ?? "") ? String(text).split(",").map((entry) => pyStrip(entry)) : [];
  const cells = Array.from({ length: count }, (_, i) => entries[i] ?? "");
  cells[pair] = step === null ? "auto" : String(step);
  const normal = cells.map((cell) => (cell === "" || cell.toLowerCase() === "auto" ? "auto" : cell));
  return normal.every((cell) => cell === "auto") ? "" : normal.join(", ");
}

/**
 * The override each pair will get on the next run, read from the widget's current text without
 * throwing: `{overrides, error}` where `error` is the node's complaint (null when it parses).
 * An entry that does not parse reads as `undefined` (unknown) for its pair.
 * @param {string} text
 * @param {number} pairCount
 * @param {number} [steps]
 * @returns {{overrides: (number|null|undefined)[], error: string|null}}
 */
export function readOverrides(text, pairCount, steps = Infinity) {
  try {
    return { overrides: parseStepOverrides(text ?? "", pairCount, steps), error: null };
  } catch (error) {
    if (!(error instanceof StepOverrideError)) throw error;
    const entries = pyStrip(text ?? "") ? String(text).split(",") : [];
    const overrides = Array.from({ length: pairCount }, (_, pair) => {
      try {
        return parseStepOverrides(entries[pair] ?? "", 1, steps)[0];
      } catch {
        return undefined;
      }
    });
    return { overrides, error: error.message };
  }
}

/**
 * What a click on `step` should write for this pair: clicking the step that is already the
 * pair's (pending) override goes back to auto; any other step becomes the override.
 * @param {number|null|undefined} pending the override the widget holds for this pair now
 * @param {number} step
 * @returns {number|null}
 */
export function clickedOverride(pending, step) {
  return pending === step ? null : step;
}

/**
 * The chart's markers and status text for one pair, given the override the widget holds now
 * (which may differ from the one the last run used, until the graph is queued again).
 * @param {PairChart} chart
 * @param {number|null|undefined} pending
 * @returns {{chosen: number, searched: number|null, next: number|null, status: string}}
 *   `searched`: the search's own choice when an override displaced it; `next`: the step the
 *   next run will use when it differs from `chosen`.
 */
export function chartMarkers(chart, pending) {
  const searched = chart.override !== null && chart.searched !== chart.chosen ? chart.searched : null;
  let status =
    chart.override !== null
      ? `t=${chart.chosen} (override; search: t=${chart.searched})`
      : `t=${chart.chosen} (search)`;
  /** @type {number|null} */
  let next = null;
  if (pending === undefined) {
    status += " · step_override does not parse";
  } else {
    const nextStep = pending ?? chart.searched;
    if (nextStep !== chart.chosen) {
      next = nextStep;
      status += ` · next run: t=${nextStep}${pending === null ? " (auto)" : ""}, queue to apply`;
    } else if ((pending ?? null) !== chart.override) {
      status += pending === null ? " · next run: auto" : " · next run: override";
    }
  }
  return { chosen: chart.chosen, searched, next, status };
}

/** Cell colour of a step with no score yet. */
export const NEUTRAL_CELL = "rgb(70, 70, 78)";

/**
 * Shade of a normalised combined score for the search strip: from the figures' grid ink (0) to
 * the combined curve's colour (1); neutral when there is no score.
 * @param {number|null} value
 * @returns {string}
 */
export function scoreColor(value) {
  if (value === null || value === undefined || !Number.isFinite(value)) return NEUTRAL_CELL;
  const t = Math.min(1, Math.max(0, value));
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `rgb(${mix(45, 235)}, ${mix(45, 64)}, ${mix(52, 52)})`;
}

/**
 * Short readout of one step's scores, e.g. `t=23 · editing 0.81 · fidelity 0.42 · combined 0.62`.
 * @param {PairChart} chart
 * @param {number} step
 * @returns {string}
 */
export function stepReadout(chart, step) {
  const i = chart.steps.indexOf(step);
  if (i < 0) return `t=${step}`;
  const parts = SERIES.map(({ key, label }) => {
    const value = chart.series[/** @type {"editing"|"fidelity"|"combined"} */ (key)][i];
    return `${label} ${value === null ? "–" : value.toFixed(2)}`;
  });
  return [`t=${step}`, ...parts].join(" · ");
}

/**
 * Walks an input link upstream through pass-through nodes (legacy Reroute nodes) to the node
 * that produces the value. `inputNode(node, name)` returns the node linked into input `name`
 * (or null); `isPassThrough(node)` says whether to keep walking (via its first input).
 * @template N
 * @param {N} node
 * @param {string} inputName
 * @param {(node: N, name: string|number) => N|null} inputNode
 * @param {(node: N) => boolean} isPassThrough
 * @param {number} [maxHops]
 * @returns {N|null}
 */
export function originNode(node, inputName, inputNode, isPassThrough, maxHops = 16) {
  let current = inputNode(node, inputName);
  for (let hops = 0; current && isPassThrough(current); hops += 1) {
    if (hops >= maxHops) return null; // a cycle of reroutes: give up rather than loop
    current = inputNode(current, 0);
  }
  return current;
}

/**
 * The reassembly's one-line summary from OIR Object Reassembly's `ui.oir_reassembly`
 * (nodes/sampling_nodes.py): its background choice and the background's PSNR against the source's
 * VAE round trip (cells beyond the feather band), or null when the payload has none.
 * @param {any} output
 * @returns {string|null}
 */
export function reassemblySummary(output) {
  const report = Array.isArray(output?.oir_reassembly) ? output.oir_reassembly[0] : null;
  if (!report || typeof report.background !== "string") return null;
  const mode = report.background === "preserve" ? `preserve, feather ${report.feather ?? 0}` : report.background;
  const psnr = Number.isFinite(report.background_psnr)
    ? `${report.background_psnr.toFixed(2)} dB vs the VAE round trip`
    : "connect a VAE to measure it";
  return `background: ${mode} · background PSNR ${psnr}`;
}

/**
 * OIR DDIM Inversion's one line about its levels, from `ui.oir_levels` (nodes/sampling_nodes.py):
 * the node's note when ComfyUI's schedule gave another number of levels than the typed steps
 * (ddim_uniform: 7 for steps = 6), else null (nothing to say).
 * @param {any} output
 * @returns {string|null}
 */
export function levelsSummary(output) {
  const report = Array.isArray(output?.oir_levels) ? output.oir_levels[0] : null;
  if (!report || typeof report.note !== "string" || !report.note) return null;
  return report.note;
}

/**
 * OIR Edit Region Score's line, from its `ui.oir_region_scores` (nodes/scoring_nodes.py): each
 * pair's CLIP score of the final image inside its mask, or null when the payload has none.
 * @param {any} output
 * @returns {string|null}
 */
export function regionScoreSummary(output) {
  const rows = Array.isArray(output?.oir_region_scores) ? output.oir_region_scores : [];
  const scored = rows.filter((row) => row && Number.isFinite(row.clip_score));
  if (!scored.length) return null;
  const parts = scored.map((row) => `${row.source} → ${row.target} ${row.clip_score.toFixed(4)}`);
  return `CLIP score in the mask: ${parts.join(" · ")}`;
}

// ---------------------------------------------------------------------------------------------
// Widget heights: how much of the node each of the pack's DOM widgets reserves
// ---------------------------------------------------------------------------------------------

/**
 * Layout of the scorer's chart, in graph units (CSS pixels at zoom 1): the legend row, the red
 * `step_override` error line (shown only when the text is invalid), and per pair a header, the
 * plot (its x-axis labels inside it) and the gap below each panel.
 */
export const CHART_LAYOUT = Object.freeze({ legend: 22, error: 16, header: 34, plot: 118, thumb: 84, gap: 6, placeholder: 34 });

/** Layout of the search node's strip: one row per pair (its margin included), or the placeholder. */
export const STRIP_LAYOUT = Object.freeze({ row: 36, thumb: 32, placeholder: 30 });

/** Line box of the pack's 11 px text (progress line, notes), and the width of an average glyph. */
export const TEXT_LAYOUT = Object.freeze({ line: 16, glyph: 6.2 });

/**
 * Height the chart's content needs: the placeholder before any run, else the legend, the error
 * line when there is one, and one panel per pair.
 * @param {number} pairs charts shown (0 = the placeholder)
 * @param {boolean} error whether the red step_override error line is shown
 * @param {typeof CHART_LAYOUT} [layout]
 * @returns {number}
 */
export function chartHeight(pairs, error, layout = CHART_LAYOUT) {
  if (!pairs) return layout.placeholder;
  return layout.legend + (error ? layout.error : 0) + pairs * (layout.header + layout.plot + layout.gap);
}

/**
 * Height the strip's content needs: one row per pair, or the placeholder.
 * @param {number} pairs
 * @param {typeof STRIP_LAYOUT} [layout]
 * @returns {number}
 */
export function stripHeight(pairs, layout = STRIP_LAYOUT) {
  return pairs ? pairs * layout.row : layout.placeholder;
}

/**
 * Height of wrapped text (the reassembly summary, the levels note) in `width` px, wrapped greedily
 * at spaces as the browser wraps it; a word wider than a line breaks over several (the CSS says
 * `overflow-wrap: anywhere`). Empty text takes no height.
 * @param {string} text
 * @param {number} width px available for the text
 * @param {(text: string) => number} [measure] px width of a piece of text (the UI passes the
 *   canvas's measureText in the element's font; the default is an average glyph width)
 * @param {number} [line] px per line
 * @returns {number}
 */
export function textHeight(text, width, measure = (part) => part.length * TEXT_LAYOUT.glyph, line = TEXT_LAYOUT.line) {
  const words = String(text ?? "").split(/\s+/).filter(Boolean);
  if (!words.length) return 0;
  const room = Math.max(1, width);
  const space = measure(" ");
  let lines = 1;
  let used = 0; // px taken on the current line
  for (const word of words) {
    const size = measure(word);
    if (used > 0 && used + space + size <= room) {
      used += space + size;
      continue;
    }
    if (used > 0) lines += 1; // the word starts the next line
    const spans = Math.max(1, Math.ceil(size / room));
    lines += spans - 1;
    used = size - (spans - 1) * room;
  }
  return lines * line;
}

/**
 * The height a DOM widget must ask the node for so its element gets `content` px: on the canvas
 * (classic nodes) the frontend places the element `margin` inside the widget's slot at the top
 * and at the bottom, so a slot of exactly `content` would clip the last `2 * margin` px (the
 * strip's last row, the chart's x-axis labels, the progress line).
 * @param {number} content px the element's content needs
 * @param {number} margin the widget's margin option
 * @returns {number}
 */
export function domWidgetHeight(content, margin) {
  return Math.ceil(Math.max(0, content)) + 2 * Math.max(0, margin);
}
