/**
 * "See and steer the search": the ComfyUI glue of the OIR search chart.
 *
 * - OIR Mask Metric Scorer: an interactive chart per edit pair on the node (normalised editing,
 *   fidelity and combined scores against the inversion step, the chosen step marked, the
 *   search's own choice when overridden). Hovering a step shows that candidate's thumbnail
 *   (cropped from the grid image); clicking a step writes the pair's entry of the real
 *   `step_override` widget (clicking the overridden step again, or "auto", goes back to auto).
 * - OIR Parallel Step Search: a compact strip per pair (one cell per candidate step, hover for
 *   the thumbnail); once a scorer has scored these candidates, cells are shaded by the combined
 *   score and the chosen step is framed. The strip finds those scores by the candidates' key that
 *   both nodes send (never by walking the graph), so it works across subgraphs and in any order
 *   of cached results.
 *
 * All rules (payload shaping, hit-testing, the override grammar, crop rectangles) live in
 * oir_chart_logic.js; this file only builds DOM and talks to the frontend's extension API.
 */

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  CHART_LAYOUT as CHART,
  COLORS,
  SERIES,
  STRIP_LAYOUT as STRIP,
  TEXT_LAYOUT as TEXT,
  ScoreBoard,
  StripState,
  candidatesKey,
  axisTicks,
  chartFrame,
  chartHeight,
  chartMarkers,
  choicesByPair,
  clickedOverride,
  cropRect,
  domWidgetHeight,
  fitSize,
  polylineRuns,
  readOverrides,
  scoreCharts,
  scoreColor,
  searchGrids,
  stepAtX,
  stepReadout,
  stripHeight,
  textHeight,
  viewUrl,
  withPairOverride,
  reassemblySummary,
  levelsSummary,
  regionScoreSummary,
  scoredKey,
  xForStep,
  yForValue,
} from "./oir_chart_logic.js";
import { fitNode, inputNode, nodeByLocator as locate, setWidgetValue } from "./oir_frontend_adapter.js";

const SCORER = "OIRMaskMetricScorer";
const SEARCH = "OIRParallelStepSearch";
const REASSEMBLY = "OIRObjectReassembly";
const INVERSION = "OIRDDIMInversion";
const REGION_SCORE = "OIREditRegionScore";
const OVERRIDE_WIDGET = "step_override";
const CHART_WIDGET = "oir_search_chart";
const STRIP_WIDGET = "oir_search_strip";
const SVG_NS = "http://www.w3.org/2000/svg";

/** Margin of the pack's view widgets (the frontend insets the element by it inside its slot). */
const VIEW_MARGIN = 6;
/** The notes' font (the reassembly summary, the levels note); their heights are measured in it. */
const NOTE_FONT = "11px sans-serif";

// ---------------------------------------------------------------------------------------------
// Small DOM helpers
// ---------------------------------------------------------------------------------------------

/**
 * @param {string} tag
 * @param {Record<string, string>} [attrs]
 * @param {(Node|string)[]} [children]
 * @returns {HTMLElement}
 */
function html(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

/**
 * @param {string} tag
 * @param {Record<string, string|number>} [attrs]
 * @returns {SVGElement}
 */
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/** Images are shared by the scorer chart and the search strip: one load per URL. */
const imageCache = new Map();

/**
 * The loaded image for a saved preview, or null while it loads (`onReady` runs once it has).
 * @param {import("./oir_chart_logic.js").ImageRef|null} ref
 * @param {() => void} onReady
 * @returns {HTMLImageElement|null}
 */
function loadedImage(ref, onReady) {
  if (!ref) return null;
  const url = viewUrl(ref, (route) => api.apiURL(route));
  let entry = imageCache.get(url);
  if (!entry) {
    const image = new Image();
    entry = { image, ready: false, waiting: new Set() };
    imageCache.set(url, entry);
    image.onload = () => {
      entry.ready = true;
      for (const callback of entry.waiting) callback();
      entry.waiting.clear();
    };
    // A missing temp file (ComfyUI clears temp/ on restart) just leaves the thumbnail empty.
    image.onerror = () => entry.waiting.clear();
    image.src = url;
  }
  if (entry.ready) return entry.image;
  entry.waiting.add(onReady);
  return null;
}

/**
 * Draws candidate `step` of a grid image into `canvas`, fitted and centred; clears it when the
 * step, the layout or the image is unavailable.
 * @param {HTMLCanvasElement} canvas
 * @param {HTMLImageElement|null} image
 * @param {import("./oir_chart_logic.js").GridLayout|null} layout
 * @param {number|null} step
 */
function drawThumbnail(canvas, image, layout, step) {
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rect = layout && step !== null ? cropRect(layout, step) : null;
  if (!image || !rect) return;
  const size = fitSize(rect.width, rect.height, canvas.width, canvas.height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(
    image,
    rect.x,
    rect.y,
    rect.width,
    rect.height,
    (canvas.width - size.width) / 2,
    (canvas.height - size.height) / 2,
    size.width,
    size.height,
  );
}

/**
 * A canvas for thumbnails, backed at twice its CSS size so it stays sharp when the graph is
 * zoomed in.
 * @param {number} cssSize
 * @returns {HTMLCanvasElement}
 */
function thumbnailCanvas(cssSize) {
  const canvas = /** @type {HTMLCanvasElement} */ (html("canvas", { class: "oir-thumb" }));
  canvas.width = canvas.height = cssSize * 2;
  canvas.style.width = canvas.style.height = `${cssSize}px`;
  return canvas;
}

// ---------------------------------------------------------------------------------------------
// The scorer's chart
// ---------------------------------------------------------------------------------------------

/** The interactive score chart shown on an OIR Mask Metric Scorer node. */
class ScoreChartView {
  /** @param {any} node */
  constructor(node) {
    this.node = node;
    /** @type {import("./oir_chart_logic.js").PairChart[]} */
    this.charts = [];
    /** @type {{pair: number, step: number}|null} */
    this.hover = null;
    this.element = html("div", { class: "oir-chart" });
    /** @type {{chart: any, svg: SVGSVGElement, hoverLayer: SVGGElement, canvas: HTMLCanvasElement, caption: HTMLElement, frame: any}[]} */
    this.panels = [];
    this.width = 0;
    // The widget's size follows the node; re-draw the curves at the new width.
    this.resizeObserver = new ResizeObserver(() => {
      const width = Math.floor(this.element.clientWidth);
      if (width > 0 && width !== this.width) {
        this.width = width;
        this.render();
      }
    });
    this.resizeObserver.observe(this.element);
    this.render();
  }

  /** Height the content needs: legend, the error line when shown, one panel per pair; or the placeholder. */
  preferredHeight() {
    return chartHeight(this.charts.length, this.charts.length > 0 && this.pending().error !== null);
  }

  /** @param {import("./oir_chart_logic.js").PairChart[]} charts */
  setCharts(charts) {
    this.charts = charts;
    this.hover = null;
    this.render();
    fitNode(this.node);
  }

  /** The step_override widget, unless it is missing or fed by a link (then clicks cannot set it). */
  overrideWidget() {
    const widget = this.node.widgets?.find((w) => w.name === OVERRIDE_WIDGET);
    const input = this.node.inputs?.find((i) => i.widget?.name === OVERRIDE_WIDGET || i.name === OVERRIDE_WIDGET);
    return { widget: widget ?? null, linked: input?.link != null };
  }

  /** The overrides the next run will use, read from the widget as the node will read it. */
  pending() {
    const { widget } = this.overrideWidget();
    const steps = Math.min(...this.charts.map((c) => c.totalSteps));
    return readOverrides(String(widget?.value ?? ""), this.charts.length, steps);
  }

  /**
   * Writes pair `pair`'s override into the real widget, the way a user edit would (value,
   * callback, canvas repaint), so it is saved with the workflow and used by the next queue.
   * @param {number} pair
   * @param {number|null} step
   */
  setOverride(pair, step) {
    const { widget, linked } = this.overrideWidget();
    if (!widget || linked) return;
    const old = widget.value;
    const value = withPairOverride(String(old ?? ""), this.charts.length, pair, step);
    if (value === old) return;
    setWidgetValue(app, this.node, widget, value);
    this.refresh();
  }

  /** Re-draws and grows the node when the content got taller (the error line appeared). */
  refresh() {
    this.render();
    fitNode(this.node);
  }

  render() {
    this.panels = [];
    this.element.replaceChildren();
    if (!this.charts.length) {
      this.element.append(html("div", { class: "oir-placeholder" }, ["Queue the graph to see the search"]));
      return;
    }
    const { overrides, error } = this.pending();
    const { linked } = this.overrideWidget();
    const legend = html("div", { class: "oir-legend" }, [
      ...SERIES.map(({ label, color }) =>
        html("span", { class: "oir-key" }, [html("i", { style: `background:${color}` }), label]),
      ),
      html("span", { class: "oir-key" }, [html("i", { style: `background:${COLORS.highlight}` }), "chosen"]),
      html(
        "span",
        {
          class: "oir-hint",
          title: linked
            ? "step_override is fed by a link: set the override upstream"
            : "Click a step to use it for that pair (step_override); click it again or 'auto' to go back",
        },
        [linked ? "step_override is linked" : "click: override"],
      ),
    ]);
    this.element.append(legend);
    if (error) this.element.append(html("div", { class: "oir-error" }, [error]));
    this.charts.forEach((chart, index) => this.element.append(this.panel(chart, index, overrides[index], linked)));
  }

  /**
   * One pair's panel: title + status + reset, the SVG chart and the thumbnail box.
   * @param {import("./oir_chart_logic.js").PairChart} chart
   * @param {number} index position of the pair (its entry in step_override)
   * @param {number|null|undefined} pending
   * @param {boolean} linked
   */
  panel(chart, index, pending, linked) {
    const markers = chartMarkers(chart, pending);
    const reset = html("button", { class: "oir-reset", type: "button", title: "Back to the search's choice" }, [
      "auto",
    ]);
    reset.hidden = pending === null || linked;
    reset.addEventListener("click", (event) => {
      event.stopPropagation();
      this.setOverride(index, null);
    });
    const flat = Object.entries(chart.constant)
      .filter(([, constant]) => constant)
      .map(([key]) => `${key} flat`);
    const header = html("div", { class: "oir-header" }, [
      html("div", { class: "oir-title" }, [chart.title]),
      html("div", { class: "oir-status" }, [[markers.status, ...flat].join(" · ")]),
      reset,
    ]);
    const plotWidth = Math.max(120, (this.width || 360) - CHART.thumb - CHART.gap);
    const frame = chartFrame(chart.steps, plotWidth, CHART.plot);
    const chartSvg = /** @type {SVGSVGElement} */ (
      svg("svg", {
        class: "oir-plot",
        width: plotWidth,
        height: CHART.plot,
        viewBox: `0 0 ${plotWidth} ${CHART.plot}`,
        "data-pair": chart.pair,
      })
    );
    this.drawAxes(chartSvg, chart, frame);
    this.drawMarkers(chartSvg, markers, frame);
    this.drawSeries(chartSvg, chart, frame);
    const hoverLayer = /** @type {SVGGElement} */ (svg("g", { class: "oir-hover" }));
    chartSvg.append(hoverLayer);

    const canvas = thumbnailCanvas(CHART.thumb - 4);
    const caption = html("div", { class: "oir-caption" });
    const thumbBox = html("div", { class: "oir-thumbbox", style: `width:${CHART.thumb}px` }, [canvas, caption]);
    const panelState = { chart, index, svg: chartSvg, hoverLayer, canvas, caption, frame, pending, linked };
    this.panels.push(panelState);
    this.bindPointer(panelState);
    this.showStep(panelState, null);

    return html("div", { class: "oir-panel", "data-pair": String(chart.pair) }, [
      header,
      html("div", { class: "oir-body" }, [chartSvg, thumbBox]),
    ]);
  }

  /** Grid lines at 0, 0.5 and 1, their labels, and the step ticks. */
  drawAxes(root, chart, frame) {
    for (const value of [0, 0.5, 1]) {
      const y = yForValue(value, frame);
      root.append(svg("line", { class: "oir-grid", x1: frame.left, x2: frame.right, y1: y, y2: y }));
      const label = svg("text", { class: "oir-axis", x: frame.left - 4, y: y + 3, "text-anchor": "end" });
      label.textContent = value.toFixed(1);
      root.append(label);
    }
    for (const step of axisTicks(chart.steps, frame)) {
      const label = svg("text", {
        class: "oir-axis",
        x: xForStep(step, frame),
        y: frame.bottom + 13,
        "text-anchor": "middle",
      });
      label.textContent = String(step);
      root.append(label);
    }
  }

  /** The chosen step, the search's own choice (when overridden) and the next run's step. */
  drawMarkers(root, markers, frame) {
    // Labels sit on separate rows (chosen and next at the top, the search's choice at the
    // bottom) so neighbouring markers never overprint; near the right edge they turn left.
    const line = (step, cls, text, y) => {
      const x = xForStep(step, frame);
      root.append(svg("line", { class: cls, x1: x, x2: x, y1: frame.top, y2: frame.bottom, "data-step": step }));
      const flip = x > frame.right - 6 * text.length - 4;
      const label = svg("text", { class: `${cls}-label`, x: flip ? x - 3 : x + 3, y, "text-anchor": flip ? "end" : "start" });
      label.textContent = text;
      root.append(label);
    };
    if (markers.searched !== null) line(markers.searched, "oir-searched", `search ${markers.searched}`, frame.bottom - 3);
    if (markers.next !== null) line(markers.next, "oir-next", `next ${markers.next}`, frame.top + 19);
    line(markers.chosen, "oir-chosen", `t=${markers.chosen}`, frame.top + 8);
  }

  /** The three curves; the combined one gets a point per candidate (the click targets' markers). */
  drawSeries(root, chart, frame) {
    for (const { key, color } of SERIES) {
      const values = chart.series[key];
      for (const points of polylineRuns(chart.steps, values, frame)) {
        root.append(
          svg("polyline", {
            class: `oir-line oir-line-${key}`,
            points,
            stroke: color,
            "stroke-width": key === "combined" ? 2 : 1.5,
          }),
        );
      }
    }
    chart.steps.forEach((step, i) => {
      const value = chart.series.combined[i];
      if (value === null) return;
      const attrs = { class: "oir-point", cx: xForStep(step, frame), cy: yForValue(value, frame), r: 2.2 };
      root.append(svg("circle", { ...attrs, fill: COLORS.combined, "data-step": step }));
    });
  }

  /** Hover shows a step (line, points, thumbnail); click sets or clears the override. */
  bindPointer(panel) {
    const { svg: root, chart, frame } = panel;
    const stepAt = (event) => {
      const box = root.getBoundingClientRect();
      if (!box.width) return null;
      // The widget is CSS-scaled with the canvas zoom: map client pixels back to SVG units.
      const x = ((event.clientX - box.left) * Number(root.getAttribute("width"))) / box.width;
      return stepAtX(x, chart.steps, frame);
    };
    root.addEventListener("pointermove", (event) => this.showStep(panel, stepAt(event)));
    root.addEventListener("pointerleave", () => this.showStep(panel, null));
    root.addEventListener("click", (event) => {
      const step = stepAt(event);
      if (step === null || panel.linked) return;
      event.stopPropagation();
      this.setOverride(panel.index, clickedOverride(panel.pending, step));
    });
  }

  /**
   * Shows `step` in the hover layer and thumbnail box; `null` shows the chosen step.
   * @param {any} panel
   * @param {number|null} step
   */
  showStep(panel, step) {
    const { chart, frame, hoverLayer, canvas, caption } = panel;
    hoverLayer.replaceChildren();
    const shown = step ?? chart.chosen;
    if (step !== null) {
      const x = xForStep(step, frame);
      hoverLayer.append(svg("line", { class: "oir-hover-line", x1: x, x2: x, y1: frame.top, y2: frame.bottom }));
      const i = chart.steps.indexOf(step);
      for (const { key, color } of SERIES) {
        const value = chart.series[key][i];
        if (value === null || value === undefined) continue;
        hoverLayer.append(svg("circle", { cx: x, cy: yForValue(value, frame), r: 3.5, fill: color, class: "oir-hover-point" }));
      }
      panel.svg.style.cursor = panel.linked ? "default" : "pointer";
    }
    const image = loadedImage(chart.image, () => this.showStep(panel, this.hover?.pair === chart.pair ? this.hover.step : null));
    drawThumbnail(canvas, image, chart.grid, shown);
    const readout = stepReadout(chart, shown);
    caption.textContent = step === null ? `t=${shown} (chosen)` : `t=${shown}`;
    caption.title = readout;
    panel.svg.setAttribute("aria-label", `${chart.title}: ${readout}`);
    this.hover = step === null ? null : { pair: chart.pair, step };
  }
}

// ---------------------------------------------------------------------------------------------
// The search node's strip
// ---------------------------------------------------------------------------------------------

/** The latest scores per candidates key, shared by every strip on the page (oir_chart_logic.js). */
const scoreBoard = new ScoreBoard();

/** Every live strip, so a scorer's results reach the strip of its candidates without a graph walk. */
const strips = new Set();

/** Per pair, one cell per candidate step: hover for its thumbnail; shaded and framed once scored. */
class SearchStripView {
  /** @param {any} node */
  constructor(node) {
    this.node = node;
    this.state = new StripState(scoreBoard);
    this.element = html("div", { class: "oir-strip" });
    this.render();
  }

  get grids() {
    return this.state.grids;
  }

  get choices() {
    return this.state.choices;
  }

  preferredHeight() {
    return stripHeight(this.grids.length);
  }

  /**
   * New candidates (grids and their key): the scores recorded for that key, whichever node's
   * results came first, are shown with them; scores of other candidates are not.
   * @param {any} output the search node's `ui` payload
   */
  setOutput(output) {
    this.state.setGrids(searchGrids(output), candidatesKey(output));
    this.render();
    fitNode(this.node);
  }

  /** Scores a scorer sent for candidates `key` (ignored unless they are this strip's). */
  offer(key, choices) {
    if (!this.state.offer(key, choices)) return;
    this.render();
    this.node.setDirtyCanvas(true, true);
  }

  render() {
    this.element.replaceChildren();
    if (!this.grids.length) {
      this.element.append(html("div", { class: "oir-placeholder" }, ["Queue the graph to see the candidates"]));
      return;
    }
    for (const grid of this.grids) this.element.append(this.row(grid));
  }

  /** @param {import("./oir_chart_logic.js").SearchGrid} grid */
  row(grid) {
    const choice = this.choices.get(grid.pair) ?? null;
    const canvas = thumbnailCanvas(STRIP.thumb);
    const label = html("div", { class: "oir-strip-label" });
    const cells = html("div", { class: "oir-cells" });
    const show = (step) => {
      const shown = step ?? choice?.chosen ?? null;
      drawThumbnail(canvas, loadedImage(grid.image, () => show(step)), grid.layout, shown);
      const steps = grid.layout.steps;
      const base = `pair ${grid.pair + 1} · ${steps.length} candidate${steps.length === 1 ? "" : "s"}`;
      if (step !== null) {
        const score = choice?.scores.get(step);
        label.textContent = `pair ${grid.pair + 1} · t=${step}${score == null ? "" : ` · combined ${score.toFixed(2)}`}`;
      } else {
        label.textContent = choice ? `${base} · chosen t=${choice.chosen}` : `${base} · hover to preview`;
      }
    };
    for (const step of grid.layout.steps) {
      const score = choice?.scores.get(step);
      const cell = html("span", {
        class: `oir-cell${choice?.chosen === step ? " oir-cell-chosen" : ""}`,
        "data-step": String(step),
        title: `t=${step}`,
        style: `background:${scoreColor(score ?? null)}`,
      });
      cell.addEventListener("pointerenter", () => show(step));
      cells.append(cell);
    }
    cells.addEventListener("pointerleave", () => show(null));
    show(null);
    return html("div", { class: "oir-strip-row", "data-pair": String(grid.pair) }, [
      html("div", { class: "oir-strip-thumb", style: `width:${STRIP.thumb}px` }, [canvas]),
      html("div", { class: "oir-strip-main" }, [label, cells]),
    ]);
  }
}

// ---------------------------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------------------------

/**
 * Adds a DOM widget that is never serialised: the chart is derived from outputs, and leaving it
 * out of `widgets_values` keeps saved workflows' positional widget values unchanged.
 */
function addViewWidget(node, name, view) {
  const widget = node.addDOMWidget(name, "oir-view", view.element, {
    serialize: false,
    hideOnZoom: true,
    getValue: () => "",
    setValue: () => {},
    // The slot is the content plus the margins the frontend insets the element by.
    getMinHeight: () => domWidgetHeight(view.preferredHeight(), VIEW_MARGIN),
    getMaxHeight: () => domWidgetHeight(view.preferredHeight(), VIEW_MARGIN),
    margin: VIEW_MARGIN,
  });
  widget.serialize = false;
  return widget;
}

/** @param {any} nodeType */
function decorateScorer(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = onNodeCreated?.apply(this, arguments);
    const view = new ScoreChartView(this);
    this.oirChart = view;
    addViewWidget(this, CHART_WIDGET, view);
    // Typing into step_override moves the "next run" marker too.
    const widget = this.widgets?.find((w) => w.name === OVERRIDE_WIDGET);
    if (widget) {
      const callback = widget.callback;
      widget.callback = function () {
        const out = callback?.apply(this, arguments);
        view.refresh(); // an invalid text shows the error line: the node grows for it
        return out;
      };
    }
    return result;
  };

  const onConfigure = nodeType.prototype.onConfigure;
  nodeType.prototype.onConfigure = function () {
    const result = onConfigure?.apply(this, arguments);
    this.oirChart?.render(); // a loaded workflow brings its own step_override text
    return result;
  };

  // onExecuted is the frontend's dispatch of the `executed` message for this very node (it
  // resolves subgraph execution ids, which a raw api listener would have to redo).
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    const result = onExecuted?.apply(this, arguments);
    showScores(this, output);
    return result;
  };
}

/**
 * Draws the scorer's chart and highlights the choice on the strip of the same candidates: matched
 * by the candidates' key, not by a graph walk, so subgraphs and the order of cached results do
 * not matter.
 */
function showScores(node, output) {
  const charts = scoreCharts(output);
  node.oirChart?.setCharts(charts);
  if (!charts.length) return;
  const key = scoredKey(charts);
  const choices = choicesByPair(charts);
  scoreBoard.record(key, choices);
  for (const strip of strips) strip.offer(key, choices);
}

/** @param {any} nodeType */
function decorateSearch(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = onNodeCreated?.apply(this, arguments);
    const view = new SearchStripView(this);
    this.oirStrip = view;
    strips.add(view);
    addViewWidget(this, STRIP_WIDGET, view);
    return result;
  };
  const onRemoved = nodeType.prototype.onRemoved;
  nodeType.prototype.onRemoved = function () {
    strips.delete(this.oirStrip);
    return onRemoved?.apply(this, arguments);
  };
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    const result = onExecuted?.apply(this, arguments);
    this.oirStrip?.setOutput(output);
    return result;
  };
}

/**
 * OIR Object Reassembly: one read-only line with its background choice and the background PSNR
 * (a DOM widget never serialised, so saved widget values keep their positions).
 * @param {any} nodeType
 */
function decorateReassembly(nodeType) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    const result = onExecuted?.apply(this, arguments);
    showReassembly(this, output);
    return result;
  };
}

/**
 * OIR DDIM Inversion: when the schedule gave another number of levels than `steps`, the node says
 * so in one read-only note (never serialised), so the candidates numbered 1..T make sense.
 * @param {any} nodeType
 */
function decorateInversion(nodeType) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    const result = onExecuted?.apply(this, arguments);
    showLevels(this, output);
    return result;
  };
}

/**
 * OIR Edit Region Score: one read-only line with each pair's CLIP score of the final image (a DOM
 * widget never serialised).
 * @param {any} nodeType
 */
function decorateRegionScore(nodeType) {
  const onExecuted = nodeType.prototype.onExecuted;
  nodeType.prototype.onExecuted = function (output) {
    const result = onExecuted?.apply(this, arguments);
    showRegionScores(this, output);
    return result;
  };
}

function showRegionScores(node, output) {
  const text = regionScoreSummary(output);
  if (text === null) return;
  if (!node.oirRegionScores) {
    const element = html("div", { class: "oir-summary" }, []);
    node.oirRegionScores = element;
    addViewWidget(node, "oir_region_scores", { element, preferredHeight: () => noteHeight(node, element) });
  }
  node.oirRegionScores.textContent = text;
  fitNode(node);
}

function showLevels(node, output) {
  const text = levelsSummary(output);
  if (text === null && !node.oirLevels) return;
  if (!node.oirLevels) {
    const element = html("div", { class: "oir-summary oir-levels" }, []);
    node.oirLevels = element;
    addViewWidget(node, "oir_levels_note", { element, preferredHeight: () => noteHeight(node, element) });
  }
  node.oirLevels.textContent = text ?? "";
  fitNode(node);
}

function showReassembly(node, output) {
  const text = reassemblySummary(output);
  if (text === null) return;
  if (!node.oirSummary) {
    const element = html("div", { class: "oir-summary" }, []);
    node.oirSummary = element;
    addViewWidget(node, "oir_reassembly_summary", { element, preferredHeight: () => noteHeight(node, element) });
  }
  node.oirSummary.textContent = text;
  fitNode(node);
}

/** Widths of text in the notes' font, measured by the browser (a canvas 2D context). */
const measureContext = document.createElement("canvas").getContext("2d");
function measureNoteText(text) {
  if (!measureContext) return text.length * TEXT.glyph;
  measureContext.font = NOTE_FONT;
  return measureContext.measureText(text).width;
}

/**
 * Height a note's text needs at the node's current width (inside the widget's margins, a few px
 * narrower so a sub-pixel difference to the browser's own wrap never costs a line). Never read
 * back from the element: its height follows this number, and a rounded read-back would grow the
 * node a pixel per frame.
 */
function noteHeight(node, element) {
  return textHeight(element.textContent, (node.size?.[0] ?? 0) - 2 * VIEW_MARGIN - 4, measureNoteText);
}

const STYLE = `
.oir-chart, .oir-strip { box-sizing: border-box; font: 11px/1.3 sans-serif; color: var(--fg-color, #ddd);
  overflow: hidden; user-select: none; }
.oir-placeholder { display: flex; align-items: center; justify-content: center; height: 100%;
  border: 1px dashed var(--border-color, #555); border-radius: 6px; color: var(--descrip-text, #999); }
.oir-legend { display: flex; gap: 10px; align-items: center; height: ${CHART.legend}px; white-space: nowrap; }
.oir-key i { display: inline-block; width: 12px; height: 3px; margin-right: 4px; vertical-align: middle; }
.oir-hint { margin-left: auto; color: var(--descrip-text, #999); overflow: hidden; text-overflow: ellipsis; }
.oir-error { color: #ff6b6b; height: ${CHART.error}px; line-height: ${CHART.error}px; white-space: nowrap;
  overflow: hidden; text-overflow: ellipsis; }
.oir-panel { margin-bottom: ${CHART.gap}px; border-radius: 6px; background: var(--comfy-input-bg, #222); }
.oir-header { display: grid; grid-template-columns: 1fr auto; column-gap: 6px; height: ${CHART.header}px;
  padding: 2px 6px 0; box-sizing: border-box; }
.oir-title { font-weight: 600; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.oir-status { grid-row: 2; color: var(--descrip-text, #aaa); white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.oir-reset { grid-row: 1 / span 2; grid-column: 2; align-self: center; font-size: 11px; padding: 1px 8px;
  border-radius: 4px; border: 1px solid var(--border-color, #555); background: var(--comfy-menu-bg, #333);
  color: inherit; cursor: pointer; }
.oir-reset[hidden] { display: none; }
.oir-body { display: flex; gap: ${CHART.gap}px; align-items: flex-start; }
.oir-plot { display: block; flex: none; }
.oir-plot .oir-grid { stroke: rgba(255, 255, 255, 0.12); }
.oir-plot .oir-axis { fill: var(--descrip-text, #999); font-size: 9px; }
.oir-plot .oir-line { fill: none; stroke-linejoin: round; }
.oir-plot .oir-chosen { stroke: ${COLORS.highlight}; stroke-width: 2; }
.oir-plot .oir-chosen-label { fill: ${COLORS.highlight}; font-size: 9px; font-weight: 600; }
.oir-plot .oir-searched { stroke: #ccc; stroke-width: 1.2; stroke-dasharray: 3 3; }
.oir-plot .oir-searched-label { fill: #ccc; font-size: 9px; }
.oir-plot .oir-next { stroke: ${COLORS.highlight}; stroke-width: 1.5; stroke-dasharray: 5 3; opacity: 0.8; }
.oir-plot .oir-next-label { fill: ${COLORS.highlight}; font-size: 9px; opacity: 0.8; }
.oir-plot .oir-hover-line { stroke: rgba(255, 255, 255, 0.55); stroke-width: 1; }
.oir-plot .oir-hover-point { stroke: #111; stroke-width: 1; }
.oir-thumbbox { flex: none; display: flex; flex-direction: column; align-items: center; }
.oir-thumb { display: block; background: rgba(0, 0, 0, 0.35); border-radius: 4px; }
.oir-caption { width: 100%; text-align: center; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.oir-strip-row { display: flex; gap: 6px; height: ${STRIP.row - 4}px; margin-bottom: 4px; align-items: center; }
.oir-strip-main { flex: 1; min-width: 0; display: flex; flex-direction: column; gap: 2px; }
.oir-strip-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.oir-cells { display: flex; gap: 1px; height: 12px; }
.oir-cell { flex: 1 1 0; min-width: 2px; border-radius: 2px; }
.oir-cell:hover { outline: 1px solid #fff; }
.oir-summary { font: ${NOTE_FONT}; line-height: ${TEXT.line}px; color: var(--fg-color, #ddd); white-space: normal;
  overflow-wrap: anywhere; overflow: hidden; }
.oir-cell-chosen { outline: 2px solid ${COLORS.highlight}; outline-offset: -1px; z-index: 1; }
`;

app.registerExtension({
  name: "OIR.SearchUI",
  setup() {
    document.head.append(html("style", { id: "oir-search-ui-style" }, [STYLE]));
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name === SCORER) decorateScorer(nodeType);
    else if (nodeData?.name === SEARCH) decorateSearch(nodeType);
    else if (nodeData?.name === REASSEMBLY) decorateReassembly(nodeType);
    else if (nodeData?.name === INVERSION) decorateInversion(nodeType);
    else if (nodeData?.name === REGION_SCORE) decorateRegionScore(nodeType);
  },
  // Outputs restored from the queue history (no `executed` message then). The keys are node
  // locator ids: "<node id>" at the top level, "<subgraph uuid>:<node id>" inside a subgraph.
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [id, output] of Object.entries(nodeOutputs ?? {})) {
      const node = locate(app, id);
      if (node?.oirStrip) node.oirStrip.setOutput(output);
    }
    for (const [id, output] of Object.entries(nodeOutputs ?? {})) {
      const node = locate(app, id);
      if (node?.oirChart) showScores(node, output);
      if (node?.type === REASSEMBLY) showReassembly(node, output);
      if (node?.type === INVERSION) showLevels(node, output);
      if (node?.type === REGION_SCORE) showRegionScores(node, output);
    }
  },
});
