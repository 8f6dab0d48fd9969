"""The search chart in a real browser: headless Chromium against a real ComfyUI server.

The pack's frontend (``web/``) is exercised the way a user meets it: ComfyUI serves the installed
frontend (1.27.10 with ComfyUI 0.3.64, 1.49.6 with 0.33.0) and the pack's extension; every example
workflow is opened from the template browser (*Browse Templates → oir-edit*, no missing-node
dialog), pointed at the tiny test models and queued through the frontend (so its own
graph-to-prompt conversion runs). For every template the chart is drawn and a click on it sets
``step_override``. The two-object template is then checked in depth:

- before the run the scorer shows its placeholder and nothing in the page threw;
- after the run the scorer draws one chart per pair with one point per candidate step and the
  search node shows its strip with the chosen steps framed;
- clicking a step writes the real ``step_override`` widget (saved in the workflow JSON), clicking
  it again goes back to auto, and a queued override is what the scorer uses on the next run;
- with the scorer moved into a subgraph, a run still reaches its chart, and outputs the frontend
  hands back by node locator id (``<subgraph uuid>:<node id>``) find the node inside the subgraph.

Screenshots go to ``test-artifacts/browser/`` (gitignored). Chromium is driven over the DevTools
protocol with aiohttp's websocket client (a ComfyUI requirement, so nothing extra to install).
Skipped, with the reason, without ComfyUI (``COMFYUI_PATH``, see conftest.py) or Chromium
(``OIR_CHROMIUM`` or ``chromium`` on PATH; Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from comfy_server import (
    TEST_LOADER,
    TINY_CHECKPOINT,
    TINY_CHECKPOINT_FOR,
    TINY_CONTROLNET,
    TINY_IMAGE_SCALE,
    TINY_LORA,
    TINY_SCORER,
    TestServer,
    shared_test_server,
    write_test_images,
)
from sample_files import TEMPLATES

from oir_cli.server import PACK_FOLDER

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
WORKFLOWS = TEMPLATES
STEPS = 5
BROWSER_START_TIMEOUT = 60.0
PAGE_TIMEOUT = 120.0
RUN_TIMEOUT = 300.0
VIEWPORT = (1600, 1000)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    # The page may only talk to the test server: every other host fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium_path() -> str | None:
    """``$OIR_CHROMIUM`` or a Chromium/Chrome on PATH."""
    explicit = os.environ.get("OIR_CHROMIUM", "").strip()
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


_CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    _CHROMIUM is None,
    reason="browser test skipped: no Chromium (set OIR_CHROMIUM or install it: apt-get install chromium)",
)


# -------------------------------------------------------------------------------------------------
# A minimal DevTools-protocol client
# -------------------------------------------------------------------------------------------------


class BrowserError(AssertionError):
    """Something in the page failed (an exception, a failed evaluation, a timeout)."""


class Page:
    """One page target over CDP: evaluate JS, send input, take screenshots, collect console errors."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.console: list[dict[str, Any]] = []
        self.exceptions: list[str] = []
        self.dialogs: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        import aiohttp

        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future and not future.done():
                    future.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                params = data["params"]
                text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
                self.console.append({"type": params["type"], "text": text})
            elif data.get("method") == "Page.javascriptDialogOpening":
                # "Leave the page? Unsaved changes" on a reload: accept it, as a user reloading would.
                self.dialogs.append(data["params"].get("type", ""))
                self._next_id += 1
                accept = {
                    "id": self._next_id,
                    "method": "Page.handleJavaScriptDialog",
                    "params": {"accept": True},
                }
                await self.ws.send_str(json.dumps(accept))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.exceptions.append(
                    f"{details.get('text', '')} {details.get('exception', {}).get('description', '')} "
                    f"at {details.get('url', '')}:{details.get('lineNumber', '')}"
                )

    async def send(self, method: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self.ws.send_str(json.dumps({"id": self._next_id, "method": method, "params": params}))
        answer = await asyncio.wait_for(future, timeout)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return answer["result"]

    async def js(self, expression: str, timeout: float = 60.0) -> Any:
        """Evaluate ``expression`` (awaiting a promise) and return its JSON value."""
        result = await self.send(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(
                f"page error: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll ``expression`` until it is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.25)
        raise BrowserError(f"timed out after {timeout:.0f} s waiting for {what}")

    async def click(self, x: float, y: float) -> None:
        """A real mouse click at viewport coordinates (pointer events and all)."""
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def hover(self, x: float, y: float) -> None:
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self.ws.close()


@contextlib.contextmanager
def chromium() -> Iterator[int]:
    """Start headless Chromium with a fresh profile; yields its DevTools port."""
    assert _CHROMIUM is not None
    profile = tempfile.mkdtemp(prefix="oir-chromium-")
    process = subprocess.Popen(
        [_CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + BROWSER_START_TIMEOUT
        assert process.stderr is not None
        log: list[str] = []
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            log.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = int(match.group(1))
        if port is None:
            raise BrowserError("Chromium did not start:\n" + "".join(log[-20:]))
        # Keep draining stderr so Chromium never blocks on a full pipe.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


async def open_page(port: int, session: Any) -> Page:
    """The browser's first page, with console, runtime and page events on."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
        targets = json.loads(answer.read())
    target = next(t for t in targets if t.get("type") == "page")
    ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
    page = Page(ws)
    for domain in ("Runtime.enable", "Page.enable"):
        await page.send(domain)
    await page.send(
        "Emulation.setDeviceMetricsOverride",
        width=VIEWPORT[0],
        height=VIEWPORT[1],
        deviceScaleFactor=1,
        mobile=False,
    )
    return page


# -------------------------------------------------------------------------------------------------
# The workflow, pointed at the tiny models
# -------------------------------------------------------------------------------------------------


OPEN_TEMPLATE = """
(async (module, name) => {
  const app = window.comfyAPI.app.app;
  const dialog = () => document.querySelector('[role=dialog]');
  const until = async (test, what, ms = 60000) => {
    const end = Date.now() + ms;
    for (;;) {
      const value = test();
      if (value) return value;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await app.extensionManager.command.execute("Comfy.BrowseTemplates");
  // The pack's category in the dialog's side navigation: an element whose own text is the module.
  const findCategory = () => [...(dialog()?.querySelectorAll("*") ?? [])]
    .find((e) => e.children.length === 0 && e.textContent.trim() === module);
  await until(findCategory, `the ${module} category`);
  // A click that lands while the dialog is still settling can be lost (seen once with frontend
  // 1.27.10 on a loaded CI machine: "All" stayed selected), so click again until the card shows.
  let clicked = 0;
  const card = await until(() => {
    const found = dialog()?.querySelector(`[data-testid="template-workflow-${name}"]`);
    if (!found && Date.now() - clicked > 2000) {
      const category = findCategory();
      category?.scrollIntoView();
      category?.click();
      clicked = Date.now();
    }
    return found;
  }, `the ${name} card`);
  const title = card.querySelector("h3") ?? card;
  const label = title.textContent.trim();
  title.click();
  const loaded = () => !dialog() && app.graph.nodes.some((n) => n.type.startsWith("OIR"));
  await until(loaded, "the template to load");
  await new Promise((r) => setTimeout(r, 500));
  const dialogs = [...document.querySelectorAll("[role=dialog]")].map((d) => d.textContent.slice(0, 300));
  const unregistered = app.graph.nodes
    .filter((n) => !["Note", "MarkdownNote"].includes(n.type) && n.constructor.nodeData?.name !== n.type)
    .map((n) => n.type);
  return {label, dialogs, unregistered, types: app.graph.nodes.map((n) => n.type)};
})(%(module)s, %(name)s)
"""

MISSING_INPUTS = """
(() => {
  // Every picture a template names must be one LoadImage offers (the pack installs its inputs).
  const app = window.comfyAPI.app.app;
  return app.graph.nodes
    .filter((n) => ["LoadImage", "LoadImageMask"].includes(n.type))
    .map((n) => {
      const widget = n.widgets.find((w) => w.name === "image");
      const options = widget.options?.values ?? [];
      return {type: n.type, value: widget.value, offered: options.includes(widget.value)};
    });
})()
"""

POINT_AT_TINY_MODELS = """
(async (values, uploads, loader, checkpoint, checkpoints) => {
  const app = window.comfyAPI.app.app;
  const graph = app.graph;
  const LiteGraph = window.LiteGraph ?? window.comfyAPI.litegraph?.LiteGraph;
  const linkOf = (id) => graph.links.get?.(id) ?? graph.links[id];
  const consumers = (node, slot) =>
    (node.outputs[slot]?.links ?? []).map((id) => graph.getNodeById(linkOf(id).target_id));
  // The checkpoint loader becomes the test loader, wired to the same inputs (tiny checkpoints are
  // not auto-detected by CheckpointLoaderSimple).
  for (const old of graph.nodes.filter((n) => n.type === "CheckpointLoaderSimple")) {
    const fresh = LiteGraph.createNode(loader);
    fresh.pos = [...old.pos];
    graph.add(fresh);
    const named = old.widgets.find((w) => w.name === "ckpt_name").value;
    fresh.widgets.find((w) => w.name === "ckpt_name").value = checkpoints[named] ?? checkpoint;
    old.outputs.forEach((output, slot) => {
      for (const id of [...(output.links ?? [])]) {
        const link = linkOf(id);
        fresh.connect(slot, graph.getNodeById(link.target_id), link.target_slot);
      }
    });
    graph.remove(old);
  }
  const set = (node, name, value) => {
    const widget = node.widgets?.find((w) => w.name === name);
    const names = JSON.stringify(node.widgets?.map((w) => w.name));
    if (!widget) throw new Error(`${node.type} has no widget ${name} (${names})`);
    widget.value = value;
  };
  for (const node of graph.nodes) {
    for (const [name, value] of Object.entries(values[node.type] ?? {})) set(node, name, value);
    if (node.type === "LoadImage") {
      const hint = consumers(node, 0).every((c) => c?.type === "ControlNetApplyAdvanced");
      set(node, "image", uploads[hint ? "hint" : "image"]);
    } else if (node.type === "LoadImageMask") {
      // the test masks go to the edit pairs in chain order (node ids), whatever the template's objects
      const pairs = graph.nodes.filter((n) => n.type === "OIREditPair").sort((a, b) => a.id - b.id);
      const pair = consumers(node, 0).find((c) => c?.type === "OIREditPair");
      set(node, "image", uploads[["dog", "gift"][pairs.indexOf(pair)]]);
    }
  }
  const api = window.comfyAPI.api.api;
  window.__oirRuns = [];
  api.addEventListener("execution_success", (e) => window.__oirRuns.push({ok: true, id: e.detail.prompt_id}));
  api.addEventListener("execution_error", (e) => window.__oirRuns.push({ok: false, detail: e.detail}));
  api.addEventListener("executed", (e) => {
    if (e.detail?.output?.oir_scores) window.__oirScorerOutput = e.detail.output;
  });
  graph.setDirtyCanvas?.(true, true);
  return graph.nodes.map((n) => n.type);
})(%(values)s, %(uploads)s, %(loader)s, %(checkpoint)s, %(checkpoints)s)
"""

WIDGET_VALUES = {
    "OIRLoadCLIPScorer": {"clip_name": TINY_SCORER, "device": "cpu"},
    "OIRDDIMInversion": {"steps": STEPS},
    "OIRParallelStepSearch": {"custom_steps": f"1-{STEPS}", "coarse_stride": 2},
    "OIRObjectReassembly": {"reassembly_step": 2, "reinversion_steps": 2},
    "SaveImage": {"filename_prefix": "oir-tests/browser"},
    "LoraLoader": {"lora_name": TINY_LORA},
    "ControlNetLoader": {"control_net_name": TINY_CONTROLNET},
    "ImageScaleBy": {"scale_by": TINY_IMAGE_SCALE},
}

HELPERS = """
window.__oir = {
  app: window.comfyAPI.app.app,
  node(type) { return this.app.graph.nodes.find((n) => n.type === type); },
  override() {
    return this.node("OIRMaskMetricScorer").widgets.find((w) => w.name === "step_override").value;
  },
  /** Scale 1, the given node near the top left of the viewport. */
  focus(type, margin = 40) {
    const node = this.node(type);
    const ds = this.app.canvas.ds;
    ds.scale = 1;
    ds.offset[0] = -node.pos[0] + margin;
    ds.offset[1] = -node.pos[1] + margin + 30;
    this.app.canvas.setDirty(true, true);
    this.app.canvas.draw(true, true);
    return true;
  },
  rect(selector, index = 0) {
    const el = document.querySelectorAll(selector)[index];
    if (!el) return null;
    const r = el.getBoundingClientRect();
    return {x: r.x + r.width / 2, y: r.y + r.height / 2, width: r.width, height: r.height};
  },
  async queue() {
    const before = window.__oirRuns.length;
    await this.app.queuePrompt(0, 1);
    return before;
  },
};
true
"""


SYNTHETIC_50_STEPS = """
(() => {
  const steps = Array.from({length: 50}, (_, i) => i + 1);
  const bump = (c, w) => steps.map((s) => Math.exp(-((s - c) ** 2) / (2 * w * w)));
  const editing = steps.map((s) => 1 - Math.exp(-s / 12));
  const fidelity = steps.map((s) => Math.exp(-s / 20));
  const combined = steps.map((s, i) => 0.5 * editing[i] + 0.5 * fidelity[i] + 0.1 * bump(31, 3)[i]);
  const node = window.__oir.node("OIRMaskMetricScorer");
  node.widgets.find((w) => w.name === "step_override").value = "";
  node.onExecuted({
    images: [{filename: "oir-missing-grid.png", subfolder: "", type: "temp"}],
    oir_scores: [{pair: 0, source: "dog", target: "cat", chosen: 31, searched: 31, override: null,
      table: {steps, editing: editing, fidelity: fidelity, editing_norm: editing, fidelity_norm: fidelity,
              combined, chosen_index: 30, chosen_step: 31, weights: [0.5, 0.5],
              editing_constant: false, fidelity_constant: false},
      grid: {pair: 0, steps, count: 50, columns: 8, rows: 7, thumb_width: 128, thumb_height: 128, bar: 16}}],
  });
  const panel = node.oirChart.element.querySelectorAll(".oir-panel");
  return {points: panel[0].querySelectorAll("circle.oir-point").length,
          ticks: panel[0].querySelectorAll("text.oir-axis").length - 3, panels: panel.length};
})()
"""


NODE_OVERLAPS = """
(() => {
  const app = window.comfyAPI.app.app;
  const LiteGraph = window.LiteGraph ?? window.comfyAPI.litegraph?.LiteGraph;
  const title = LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  // Each node's box on the canvas, its title bar included (pos is the body's top left).
  const boxes = app.graph.nodes.map((n) => ({
    id: n.id, type: n.type, x: n.pos[0], y: n.pos[1] - title, w: n.size[0], h: n.size[1] + title,
  }));
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      const dx = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
      const dy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
      if (dx > 0 && dy > 0) {
        overlaps.push(`${a.type} #${a.id} / ${b.type} #${b.id}: ${Math.round(dx)}x${Math.round(dy)} px`);
      }
    }
  }
  return {overlaps, boxes};
})()
"""


SCORER_INTO_SUBGRAPH = """
(() => {
  const app = window.comfyAPI.app.app;
  const graph = app.graph;
  const scorer = graph.nodes.find((n) => n.type === "OIRMaskMetricScorer");
  const result = graph.convertToSubgraph(new Set([scorer]));
  const subgraph = result.subgraph;
  const inner = subgraph.nodes.find((n) => n.type === "OIRMaskMetricScorer");
  // Another override, so the scorer runs again (a cached node sends no output).
  inner.widgets.find((w) => w.name === "step_override").value = "1";
  inner.oirChart.setCharts([]);
  window.__oirSub = {subgraph, inner};
  return {uuid: String(subgraph.id), inner: String(inner.id), inRoot: graph.nodes.includes(scorer)};
})()
"""

OUTPUTS_BY_LOCATOR = """
(() => {
  const app = window.comfyAPI.app.app;
  const {subgraph, inner} = window.__oirSub;
  const extension = (app.extensions ?? []).find((e) => e.name === "OIR.SearchUI");
  if (!extension) throw new Error("the OIR.SearchUI extension is not registered");
  inner.oirChart.setCharts([]);
  extension.onNodeOutputsUpdated({[`${subgraph.id}:${inner.id}`]: window.__oirScorerOutput});
  return inner.oirChart.charts.length;
})()
"""


async def queue_and_wait(page: Page) -> dict[str, Any]:
    before = await page.js("window.__oir.queue()")
    run = await page.wait_for(
        f"window.__oirRuns.length > {before} && window.__oirRuns[{before}]", RUN_TIMEOUT, "the run to finish"
    )
    assert run["ok"], f"the workflow failed: {json.dumps(run.get('detail'))[:2000]}"
    return run


async def settle(page: Page) -> None:
    """Two animation frames: DOM widgets are positioned on the canvas's draw."""
    await page.js("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")


# -------------------------------------------------------------------------------------------------
# The test
# -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def uploads(server: TestServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    paths = write_test_images(tmp_path_factory.mktemp("browser_images"))
    return {role: server.upload(path) for role, path in paths.items()}


def _dismiss_first_run(server: TestServer) -> None:
    """A fresh user folder would greet the page with the templates dialog: mark it seen."""
    body = json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False})
    request = urllib.request.Request(
        f"{server.url}/settings", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


def test_chart_draws_and_steers_the_search(server: TestServer, uploads: dict[str, str]) -> None:
    _dismiss_first_run(server)
    asyncio.run(_scenario(server, uploads))


async def _scenario(server: TestServer, uploads: dict[str, str]) -> None:
    import aiohttp

    with chromium() as port:
        async with aiohttp.ClientSession() as session:
            page = await open_page(port, session)
            try:
                await _steps(page, server, uploads)
            finally:
                with contextlib.suppress(Exception):
                    await page.screenshot(ARTIFACTS / "last.png")
                await page.close()


async def open_template(page: Page, server: TestServer, name: str, uploads: dict[str, str]) -> None:
    """Open ``name`` from the template browser as a user would, then point it at the tiny models."""
    loaded = await page.js(
        OPEN_TEMPLATE % {"module": json.dumps(PACK_FOLDER), "name": json.dumps(name)}, timeout=PAGE_TIMEOUT
    )
    assert loaded["label"], f"the {name} card has no title"
    assert not loaded["dialogs"], f"a dialog opened with the template (missing nodes?): {loaded['dialogs']}"
    assert loaded["unregistered"] == [], f"node types the frontend does not know: {loaded['unregistered']}"
    assert set(loaded["types"]) - {"Note", "MarkdownNote"} <= set(server.object_info())
    pictures = await page.js(MISSING_INPUTS)
    shipped = all(p["offered"] and p["value"].startswith("oir_example_") for p in pictures)
    assert pictures and shipped, f"the template names pictures LoadImage does not offer: {pictures}"
    await point_at_tiny_models(page, uploads)


async def assert_no_node_overlaps(page: Page, when: str) -> None:
    """No two nodes' boxes (title bars included) overlap: the grown search and scorer nodes too."""
    await settle(page)
    found = await page.js(NODE_OVERLAPS)
    assert not found["overlaps"], f"{when}: {found['overlaps']} (boxes: {found['boxes']})"


async def point_at_tiny_models(page: Page, uploads: dict[str, str]) -> None:
    """The open graph's loaders and pictures set to the tiny test files; event recorders and helpers."""
    values = {
        "values": json.dumps(WIDGET_VALUES),
        "uploads": json.dumps(uploads),
        "loader": json.dumps(TEST_LOADER),
        "checkpoint": json.dumps(TINY_CHECKPOINT),
        "checkpoints": json.dumps(TINY_CHECKPOINT_FOR),
    }
    await page.js(POINT_AT_TINY_MODELS % values)
    await page.js(HELPERS)


async def run_and_click(page: Page) -> list[dict[str, Any]]:
    """Queue the open graph; every pair gets a chart, and a click on a step sets step_override."""
    await assert_no_node_overlaps(page, "as loaded")
    await queue_and_wait(page)
    await assert_no_node_overlaps(page, "after the run")
    charts = await page.js(
        "window.__oir.node('OIRMaskMetricScorer').oirChart.charts"
        ".map((c) => ({pair: c.pair, steps: c.steps, chosen: c.chosen, override: c.override}))"
    )
    pairs = await page.js("window.__oir.app.graph.nodes.filter((n) => n.type === 'OIREditPair').length")
    assert [c["pair"] for c in charts] == list(range(pairs))
    await page.js("window.__oir.focus('OIRMaskMetricScorer')")
    await settle(page)
    step = next(s for s in (3, 2, 4, 1, 5) if s != charts[0]["chosen"])
    point = await page.js(
        f'window.__oir.rect(\'.oir-panel[data-pair="0"] circle.oir-point[data-step="{step}"]\')'
    )
    assert point, "no point to click"
    await page.click(point["x"], point["y"])
    expected = ", ".join([str(step), *(["auto"] * (pairs - 1))])
    assert await page.js("window.__oir.override()") == expected
    await page.click(point["x"], point["y"])  # back to auto
    assert await page.js("window.__oir.override()") == ""
    return charts


@pytest.mark.parametrize("name", [w for w in WORKFLOWS if w != "oir_two_object_edit"])
def test_every_template_opens_runs_and_takes_a_click(
    server: TestServer, uploads: dict[str, str], name: str
) -> None:
    _dismiss_first_run(server)

    async def scenario() -> None:
        import aiohttp

        with chromium() as port:
            async with aiohttp.ClientSession() as session:
                page = await open_page(port, session)
                try:
                    await load_frontend(page, server)
                    await open_template(page, server, name, uploads)
                    await run_and_click(page)
                    await page.screenshot(ARTIFACTS / f"{name}.png")
                finally:
                    with contextlib.suppress(Exception):
                        await page.screenshot(ARTIFACTS / f"last_{name}.png")
                    await page.close()

    asyncio.run(scenario())


async def reloaded_page(page: Page) -> None:
    """Wait until the old document is gone (evaluations during the reload may fail or hang)."""
    deadline = time.monotonic() + PAGE_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(BrowserError, TimeoutError):
            if await page.js("!window.__oirBeforeReload", timeout=5.0):
                return
        await asyncio.sleep(0.25)
    raise BrowserError("timed out waiting for the page to reload")


async def load_frontend(page: Page, server: TestServer) -> None:
    await page.send("Page.navigate", url=server.url)
    await page.wait_for(
        # The extension's setup hook runs after node registration; the first graph then loads.
        "!!(document.getElementById('oir-search-ui-style') && window.comfyAPI.app.app.graph?.nodes.length)",
        PAGE_TIMEOUT,
        "the ComfyUI frontend with the OIR extension",
    )


async def _steps(page: Page, server: TestServer, uploads: dict[str, str]) -> None:
    await load_frontend(page, server)
    await open_template(page, server, "oir_two_object_edit", uploads)

    # Before any run: a placeholder, no chart, and the override widget untouched.
    await page.js("window.__oir.focus('OIRMaskMetricScorer')")
    await settle(page)
    placeholder = await page.js("window.__oir.node('OIRMaskMetricScorer').oirChart.element.textContent")
    assert placeholder == "Queue the graph to see the search"
    await page.screenshot(ARTIFACTS / "before_run.png")

    # First run.
    await assert_no_node_overlaps(page, "as loaded")
    await queue_and_wait(page)
    await assert_no_node_overlaps(page, "after the run")
    charts = await page.js(
        "window.__oir.node('OIRMaskMetricScorer').oirChart.charts"
        ".map((c) => ({pair: c.pair, steps: c.steps, chosen: c.chosen, override: c.override}))"
    )
    assert [c["pair"] for c in charts] == [0, 1]
    assert all(c["steps"] == list(range(1, STEPS + 1)) and c["override"] is None for c in charts)
    await page.js("window.__oir.focus('OIRMaskMetricScorer')")
    await settle(page)
    panels = await page.js(
        "[...document.querySelectorAll('.oir-chart .oir-panel')].map((p) => ({"
        " pair: p.dataset.pair, points: p.querySelectorAll('circle.oir-point').length,"
        " lines: p.querySelectorAll('polyline.oir-line').length,"
        " chosen: p.querySelector('line.oir-chosen')?.dataset.step,"
        " thumb: (() => { const c = p.querySelector('canvas.oir-thumb');"
        "   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "   let lit = 0; for (let i = 3; i < d.length; i += 4) lit += d[i] > 0; return lit; })() }))"
    )
    assert [p["pair"] for p in panels] == ["0", "1"]
    for panel, chart in zip(panels, charts):
        assert panel["points"] == STEPS, panel  # one point per candidate step
        assert panel["lines"] >= 3, panel  # editing, fidelity, combined
        assert panel["chosen"] == str(chart["chosen"])
        assert panel["thumb"] > 0, "the chosen candidate's thumbnail was not drawn"

    # The search node's strip: one row per pair, the scorer's choice framed.
    strip = await page.js(
        "[...document.querySelectorAll('.oir-strip .oir-strip-row')].map((r) => ({"
        " cells: r.querySelectorAll('.oir-cell').length,"
        " chosen: r.querySelector('.oir-cell-chosen')?.dataset.step }))"
    )
    assert strip == [{"cells": STEPS, "chosen": str(c["chosen"])} for c in charts]

    # Hover a step that is not the chosen one: its thumbnail and readout show.
    pair0 = charts[0]
    target = next(s for s in (3, 2, 4, 1, 5) if s != pair0["chosen"])
    point = await page.js(
        f'window.__oir.rect(\'.oir-panel[data-pair="0"] circle.oir-point[data-step="{target}"]\')'
    )
    assert point, "no point to hover"
    await page.hover(point["x"], point["y"])
    caption = await page.js("document.querySelector('.oir-panel[data-pair=\"0\"] .oir-caption').textContent")
    assert caption == f"t={target}"
    await page.screenshot(ARTIFACTS / "scorer_chart_hover.png")

    # Click it: the real widget holds the override; the chart shows the pending step.
    await page.click(point["x"], point["y"])
    assert await page.js("window.__oir.override()") == f"{target}, auto"
    assert await page.js(
        f'!!document.querySelector(\'.oir-panel[data-pair="0"] line.oir-next[data-step="{target}"]\')'
    )
    saved = await page.js(
        "window.__oir.app.graph.serialize().nodes"
        ".find((n) => n.type === 'OIRMaskMetricScorer').widgets_values"
    )
    assert saved == [f"{target}, auto"]  # the chart itself is never serialised

    # Clicking the overridden step again goes back to auto.
    point = await page.js(
        f'window.__oir.rect(\'.oir-panel[data-pair="0"] circle.oir-point[data-step="{target}"]\')'
    )
    await page.click(point["x"], point["y"])
    assert await page.js("window.__oir.override()") == ""

    # Second pair via its own chart, then the reset button of that pair.
    other = next(s for s in (2, 4, 3, 1, 5) if s != charts[1]["chosen"])
    point = await page.js(
        f'window.__oir.rect(\'.oir-panel[data-pair="1"] circle.oir-point[data-step="{other}"]\')'
    )
    await page.click(point["x"], point["y"])
    assert await page.js("window.__oir.override()") == f"auto, {other}"
    reset = await page.js("window.__oir.rect('.oir-panel[data-pair=\"1\"] .oir-reset')")
    assert reset and reset["width"] > 0
    await page.click(reset["x"], reset["y"])
    assert await page.js("window.__oir.override()") == ""

    # A queued override is honoured: set pair 1's step by clicking, run again.
    point = await page.js(
        f'window.__oir.rect(\'.oir-panel[data-pair="0"] circle.oir-point[data-step="{target}"]\')'
    )
    await page.click(point["x"], point["y"])
    await queue_and_wait(page)
    rerun = await page.js(
        "window.__oir.node('OIRMaskMetricScorer').oirChart.charts"
        ".map((c) => ({chosen: c.chosen, searched: c.searched, override: c.override}))"
    )
    assert rerun[0] == {"chosen": target, "searched": pair0["chosen"], "override": target}
    assert rerun[1]["override"] is None
    strip_chosen = await page.js("document.querySelector('.oir-strip-row .oir-cell-chosen')?.dataset.step")
    assert strip_chosen == str(target)

    await page.js("window.__oir.focus('OIRMaskMetricScorer')")
    await settle(page)
    await page.hover(1000, 900)  # empty canvas: no hover state, no tooltip
    await page.screenshot(ARTIFACTS / "scorer_chart_override.png")
    await page.js("window.__oir.focus('OIRParallelStepSearch')")
    await settle(page)
    await page.screenshot(ARTIFACTS / "search_strip.png")

    # A page reload loses the chart and the strip; queuing the unchanged graph brings them back
    # (the scorer and the search are output nodes: ComfyUI re-sends their cached results).
    await page.js("window.__oirBeforeReload = true")
    await page.send("Page.reload")
    await reloaded_page(page)
    await load_frontend(page, server)
    await point_at_tiny_models(page, uploads)  # the same values: only the event listeners are new
    assert await page.js("window.__oir.node('OIRMaskMetricScorer').oirChart.charts.length") == 0
    await queue_and_wait(page)
    reloaded = await page.js(
        "({charts: window.__oir.node('OIRMaskMetricScorer').oirChart.charts.length,"
        " strip: document.querySelectorAll('.oir-strip .oir-strip-row').length})"
    )
    assert reloaded == {"charts": 2, "strip": 2}, (
        f"after a reload the cached results did not come back: {reloaded}"
    )
    await assert_no_node_overlaps(page, "after the reload and run")

    # The paper's 50 steps (synthetic scores; its grid image does not exist): 50 points, sensible
    # ticks, and a missing image only leaves the thumbnail empty.
    drawn = await page.js(SYNTHETIC_50_STEPS)
    assert drawn == {"points": 50, "ticks": drawn["ticks"], "panels": 1} and 4 <= drawn["ticks"] <= 12, drawn
    await page.js("window.__oir.focus('OIRMaskMetricScorer')")
    await settle(page)
    point = await page.js("window.__oir.rect('.oir-panel circle.oir-point[data-step=\"31\"]')")
    await page.hover(point["x"], point["y"])
    assert await page.js("document.querySelector('.oir-panel .oir-caption').textContent") == "t=31"
    await page.screenshot(ARTIFACTS / "scorer_chart_50_steps.png")

    # The scorer inside a subgraph: a run reaches its chart (the frontend dispatches the output to
    # the inner node), and outputs handed back by locator id find the node inside the subgraph.
    moved = await page.js(SCORER_INTO_SUBGRAPH)
    assert moved["inRoot"] is False and moved["uuid"]
    await queue_and_wait(page)
    pairs_in_subgraph = await page.js("window.__oirSub.inner.oirChart.charts.length")
    assert pairs_in_subgraph == 2, "the run did not reach the chart of the scorer inside the subgraph"
    assert await page.js(OUTPUTS_BY_LOCATOR) == 2, "outputs by locator id did not reach the subgraph's scorer"

    # Only what concerns the pack: the frontend itself may log unrelated startup errors.
    problems = [e for e in page.exceptions if "oir" in e.lower()] + [
        c["text"] for c in page.console if c["type"] in ("error", "assert") and "oir" in c["text"].lower()
    ]
    assert not problems, "\n".join(problems)
