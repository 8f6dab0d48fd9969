/**
 * The pack's own progress on the running node: stage, noise level, rows and ETA.
 *
 * The engine's stages send `oir_progress` websocket events (nodes/progress.py: prompt, node
 * execution id, stage label, level of levels, rows done of the total, elapsed and ETA seconds).
 * ComfyUI's own bar only shows a percentage; this line says which stage runs and how far it is.
 * Listening also registers the event type with the frontend, which otherwise logs "Unknown message
 * type oir_progress" for every event.
 */

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { TEXT_LAYOUT, domWidgetHeight } from "./oir_chart_logic.js";
import { everyNode, fitNode, nodeByExecutionId } from "./oir_frontend_adapter.js";

const EVENT = "oir_progress";
const WIDGET = "oir_progress";
/** The nodes whose engine calls run stages (others get the line on their first event). */
const STAGE_NODES = new Set(["OIRDDIMInversion", "OIRParallelStepSearch", "OIRObjectReassembly"]);
/** The line's own box, and the margin the frontend insets it by inside its widget slot. */
const LINE_HEIGHT = TEXT_LAYOUT.line;
const MARGIN = 4;

/**
 * One event as a line: "search · level 3/5 · rows 6/10 · ETA 4 s" (or "done in 9 s").
 * @param {{stage?: string, level?: number, levels_total?: number, rows_done?: number,
 *   rows_total?: number, elapsed_s?: number, eta_s?: number|null}} data
 * @returns {string}
 */
export function progressLine(data) {
  const parts = [String(data.stage ?? "OIR")];
  if (data.levels_total) parts.push(`level ${data.level ?? 0}/${data.levels_total}`);
  if (data.rows_total) parts.push(`rows ${data.rows_done ?? 0}/${data.rows_total}`);
  const done = data.rows_total && (data.rows_done ?? 0) >= data.rows_total;
  if (done) parts.push(`done in ${seconds(data.elapsed_s)}`);
  else parts.push(data.eta_s == null ? "ETA ?" : `ETA ${seconds(data.eta_s)}`);
  return parts.join(" · ");
}

/** @param {number|null|undefined} value */
function seconds(value) {
  if (value == null || !Number.isFinite(value)) return "?";
  if (value < 60) return `${Math.round(value)} s`;
  return `${Math.floor(value / 60)} min ${String(Math.round(value % 60)).padStart(2, "0")} s`;
}

/** The node's progress element, created on first use (a DOM widget never serialised). */
function progressElement(node) {
  if (node.oirProgress) return node.oirProgress;
  const element = document.createElement("div");
  element.className = "oir-progress";
  element.style.cssText =
    `font: 11px/${LINE_HEIGHT}px sans-serif; color: var(--descrip-text, #aaa); white-space: nowrap;` +
    "overflow: hidden; text-overflow: ellipsis;";
  node.oirProgress = element;
  const widget = node.addDOMWidget(WIDGET, "oir-progress", element, {
    serialize: false,
    getValue: () => "",
    setValue: () => {},
    // Its own slot below the node's other widgets: the line plus the margins around it, so it
    // never covers the strip or the chart above it.
    getMinHeight: () => domWidgetHeight(LINE_HEIGHT, MARGIN),
    getMaxHeight: () => domWidgetHeight(LINE_HEIGHT, MARGIN),
    margin: MARGIN,
  });
  widget.serialize = false;
  return element;
}

app.registerExtension({
  name: "OIR.Progress",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!STAGE_NODES.has(nodeData?.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      progressElement(this);
      return result;
    };
  },
  setup() {
    api.addEventListener(EVENT, (event) => {
      const data = event.detail ?? {};
      const node = data.node == null ? null : nodeByExecutionId(app, data.node);
      if (!node?.addDOMWidget) return;
      const fresh = !node.oirProgress;
      progressElement(node).textContent = progressLine(data);
      if (fresh) fitNode(node);
    });
    // A new prompt: the lines of the last one are stale.
    api.addEventListener("execution_start", () => {
      for (const node of everyNode(app)) if (node.oirProgress) node.oirProgress.textContent = "";
    });
  },
});
