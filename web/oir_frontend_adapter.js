/**
 * Every place the OIR extension reaches past the frontend's public extension surface
 * (`app.registerExtension` hooks, node lifecycle callbacks, widgets) into graph internals.
 *
 * The frontend's graph store is being rewritten (LiteGraph objects -> an entity-component
 * store), so each such use lives here, once, and ARCHITECTURE.md §7.1 lists it with the
 * frontend versions it was checked on (1.27.10, 1.49.6, 1.58.1; classic and Nodes 2.0).
 * No function here imports the frontend: the caller passes `app` or a node, so the module loads
 * in Node's test runner too.
 */

/**
 * The top-level graph: `app.rootGraph` (frontends with subgraphs, >= 1.24), else `app.graph`.
 * @param {any} app
 * @returns {any|null}
 */
export function rootGraph(app) {
  return app?.rootGraph ?? app?.graph ?? null;
}

/**
 * A subgraph definition of the root graph by its uuid (`graph.subgraphs`, a Map in 1.24+).
 * @param {any} root
 * @param {string} uuid
 */
function subgraphById(root, uuid) {
  const subgraphs = root?.subgraphs;
  if (!subgraphs) return null;
  return subgraphs.get?.(uuid) ?? [...(subgraphs.values?.() ?? [])].find((g) => String(g.id) === uuid) ?? null;
}

/**
 * The node a locator id names: "<node id>" at the top level, "<subgraph uuid>:<node id>" inside a
 * subgraph (the keys of `onNodeOutputsUpdated`; what the frontend's own getNodeByLocatorId does;
 * older frontends have no subgraphs and plain ids only).
 * @param {any} app
 * @param {string|number} locator
 * @returns {any|null}
 */
export function nodeByLocator(app, locator) {
  const root = rootGraph(app);
  if (!root) return null;
  const text = String(locator);
  const split = text.lastIndexOf(":");
  if (split < 0) return root.getNodeById?.(text) ?? null;
  return subgraphById(root, text.slice(0, split))?.getNodeById?.(text.slice(split + 1)) ?? null;
}

/**
 * The node an execution id names: "<id>" at the top level, "<subgraph node id>:<inner id>" (one
 * colon per level) inside subgraphs -- the `node` of ComfyUI's execution context, which the
 * `oir_progress` events carry.
 * @param {any} app
 * @param {string|number} executionId
 * @returns {any|null}
 */
export function nodeByExecutionId(app, executionId) {
  let graph = rootGraph(app);
  let node = null;
  for (const id of String(executionId).split(":")) {
    node = graph?.getNodeById?.(id) ?? null;
    if (!node) return null;
    graph = node.subgraph ?? null;
  }
  return node;
}

/**
 * The node linked into input `name` (or slot index) of `node`, or null.
 * @param {any} node
 * @param {string|number} name
 */
export function inputNode(node, name) {
  const slot = typeof name === "number" ? name : (node.findInputSlot?.(name) ?? -1);
  if (slot < 0 || !node.graph) return null;
  return node.getInputNode(slot) ?? null;
}

/**
 * Grows `node` to fit its widgets (never shrinks a size the user chose) and repaints. In Nodes 2.0
 * the Vue node measures its DOM itself; the size set here is what the canvas (links, the classic
 * renderer, the saved workflow) uses.
 * @param {any} node
 */
export function fitNode(node) {
  const [width, height] = node.computeSize();
  node.setSize([Math.max(node.size[0], width), Math.max(node.size[1], height)]);
  node.setDirtyCanvas(true, true);
}

/**
 * Every node of the workflow: the root graph's and those of its subgraph definitions.
 * @param {any} app
 * @returns {any[]}
 */
export function everyNode(app) {
  const root = rootGraph(app);
  if (!root) return [];
  const inner = [...(root.subgraphs?.values?.() ?? [])].flatMap((g) => g.nodes ?? []);
  return [...(root.nodes ?? []), ...inner];
}

/**
 * Sets a widget the way a user edit does: value, the widget's callback with LiteGraph's
 * arguments (value, canvas, node, graph-space mouse position), then the node's onWidgetChanged,
 * so the value is saved with the workflow, used by the next queue and seen by other extensions.
 * @param {any} app
 * @param {any} node
 * @param {any} widget
 * @param {unknown} value
 */
export function setWidgetValue(app, node, widget, value) {
  const old = widget.value;
  widget.value = value;
  widget.callback?.(value, app.canvas, node, app.canvas?.graph_mouse);
  node.onWidgetChanged?.(widget.name, value, old, widget);
}
