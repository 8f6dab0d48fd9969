"""The pack's frontend in a real browser: Chromium, driven by Playwright, against real ComfyUI servers.

The pack's web extension (``web/``) is exercised the way a user meets it, on every frontend the
host can serve: the host's own comfyui-frontend-package (1.27.10 with ComfyUI 0.3.64, 1.49.6 with
0.33.0) and, on 0.33.0, frontend 1.58.1 served with ``--front-end-root`` (installed into
``.frontend-1.58.1`` by ``pip install --no-deps --target .frontend-1.58.1
comfyui-frontend-package==1.58.1``, or named by ``OIR_FRONTEND_1_58_ROOT``). Frontends from 1.49
on run twice: classic (LiteGraph canvas) nodes and Nodes 2.0 (Vue nodes, ``Comfy.VueNodes.Enabled``
set through the settings API before the page loads). 1.27.10 has no usable Nodes 2.0
(ARCHITECTURE.md §7.1).

Per frontend and mode one page is reused: every example workflow is opened from the template
browser (*Browse Templates → oir-edit*, no missing-node dialog), pointed at the tiny test models
and queued through the frontend (so its own graph-to-prompt conversion runs); its chart is drawn,
a click on it sets ``step_override``, the pack's progress line shows the engine's stage, and no
two nodes' element boxes overlap. The two-object template is then checked in depth: placeholder,
one chart per pair with a point per candidate, the strip with the chosen steps framed, hover,
click → ``step_override`` (saved in the workflow JSON), back to auto, a queued override honoured
on a partial re-run, a reload followed by a cached re-queue, 50 synthetic steps, and the scorer
inside a subgraph (a run reaches its chart; outputs handed back by node locator id find it).
Nothing the pack logs may be an error or a warning (``oir``/``oir_progress`` in the text).

Chromium is the system one (``/usr/bin/chromium``, ``OIR_CHROMIUM`` overrides; never a
downloaded build). A failing test leaves a screenshot and the browser console under
``test-artifacts/browser/`` (gitignored). Skipped, with the reason, without ComfyUI
(``COMFYUI_PATH``, see conftest.py), Chromium or the 1.58.1 folder; in CI (``OIR_FAIL_ON_SKIP=1``)
every such skip fails.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import comfy_env
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
    start_test_server,
    write_test_images,
)
from sample_files import TEMPLATES

from oir_cli.server import PACK_FOLDER

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
WORKFLOWS = TEMPLATES
STEPS = 5
PAGE_TIMEOUT_MS = 120_000
RUN_TIMEOUT_S = 300.0
VIEWPORT = {"width": 1600, "height": 1000}
NEW_FRONTEND = "1.58.1"
NEW_FRONTEND_DIR = REPO / f".frontend-{NEW_FRONTEND}"
"""``pip install --no-deps --target .frontend-1.58.1 comfyui-frontend-package==1.58.1`` (.ci/run does)."""
NODES2_FROM = (1, 49)
"""Nodes 2.0 (Vue nodes) is tested from this frontend on (ARCHITECTURE.md §7.1 says why not before)."""
PACK_WORDS = re.compile(r"oir", re.IGNORECASE)
"""Console lines that concern the pack (its extension, its nodes, its ``oir_progress`` events)."""


def chromium_path() -> str | None:
    """``$OIR_CHROMIUM``, else the Debian Chromium (``/usr/bin/chromium``) or one on PATH."""
    explicit = os.environ.get("OIR_CHROMIUM", "").strip()
    if explicit:
        return explicit if Path(explicit).exists() else None
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def host_version() -> tuple[int, ...]:
    """The ComfyUI version at ``COMFYUI_PATH`` (its ``comfyui_version.py``); () when unknown."""
    path = comfy_env.comfyui_path()
    version_file = path / "comfyui_version.py" if path else None
    if version_file is None or not version_file.exists():
        return ()
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", version_file.read_text(encoding="utf-8"))
    return _version(found.group(1)) if found else ()


def new_frontend_root() -> Path | None:
    """The 1.58.1 build to serve with ``--front-end-root`` (``$OIR_FRONTEND_1_58_ROOT`` or the folder)."""
    explicit = os.environ.get("OIR_FRONTEND_1_58_ROOT", "").strip()
    candidates = [Path(explicit)] if explicit else []
    candidates.append(NEW_FRONTEND_DIR / "comfyui_frontend_package" / "static")
    for candidate in candidates:
        if (candidate / "index.html").exists():
            return candidate
    return None


@dataclass(frozen=True)
class Frontend:
    """One frontend build a server serves: ``root`` None is the host's installed package."""

    version: str
    root: Path | None

    @property
    def nodes2(self) -> bool:
        return _version(self.version) >= NODES2_FROM


def frontends() -> list[Frontend]:
    """The host's own frontend, and 1.58.1 on hosts from 0.33 on (0.3.64 serves only its own)."""
    try:
        own = importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        own = "0"
    found = [Frontend(own, None)]
    if host_version() >= (0, 33):
        found.append(Frontend(NEW_FRONTEND, new_frontend_root() or NEW_FRONTEND_DIR))
    return found


CASES = [
    pytest.param((frontend, mode), id=f"{frontend.version}-{mode}")
    for frontend in frontends()
    for mode in (("classic", "nodes2") if frontend.nodes2 else ("classic",))
]

_CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    _CHROMIUM is None,
    reason="browser test skipped: no Chromium (set OIR_CHROMIUM or install it: apt-get install chromium)",
)


# -------------------------------------------------------------------------------------------------
# One browser, one server per frontend, one page per frontend and mode
# -------------------------------------------------------------------------------------------------


@dataclass
class UI:
    """A loaded frontend page and the server behind it; collects the console as it goes."""

    page: Any
    server: TestServer
    uploads: dict[str, str]
    frontend: Frontend
    mode: str
    console: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def settle(self) -> None:
        """Two animation frames: DOM widgets (and Vue nodes) are positioned on the canvas's draw."""
        self.js("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")

    def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.frontend.version}-{self.mode}-{name}.png"))

    def on_console(self, message: Any) -> None:
        line = f"[{message.type}] {message.text}"
        self.console.append(line)
        if message.type in ("error", "warning", "assert") and PACK_WORDS.search(message.text):
            self.problems.append(line)

    def on_page_error(self, error: Any) -> None:
        line = f"[pageerror] {error}"
        self.console.append(line)
        if PACK_WORDS.search(str(error)) or PACK_WORDS.search(getattr(error, "stack", "") or ""):
            self.problems.append(line)

    def assert_no_pack_problems(self) -> None:
        """Nothing the pack logged is an error or a warning (the frontend's own noise is ignored)."""
        problems, self.problems = self.problems, []
        assert not problems, "\n".join(problems)


@contextlib.contextmanager
def artifacts_on_failure(ui: UI, name: str) -> Iterator[None]:
    """On a failure: a screenshot and the whole browser console under test-artifacts/browser/."""
    try:
        yield
    except BaseException:
        stem = f"FAILED-{ui.frontend.version}-{ui.mode}-{name}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            ui.page.screenshot(path=str(ARTIFACTS / f"{stem}.png"))
        (ARTIFACTS / f"{stem}.console.log").write_text("\n".join(ui.console) + "\n", encoding="utf-8")
        raise


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=_CHROMIUM,
            headless=True,
            # The page may only talk to the test server: every other host fails to resolve.
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
        )
        yield launched
        launched.close()


class _Servers:
    """One running server per frontend: the session's shared one for the host's frontend."""

    def __init__(self, factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
        self.factory, self.request = factory, request
        self.current: tuple[Frontend, TestServer, dict[str, str]] | None = None

    def get(self, frontend: Frontend) -> tuple[TestServer, dict[str, str]]:
        if self.current is not None and self.current[0] == frontend:
            return self.current[1], self.current[2]
        self.close()
        if frontend.root is None:
            server = shared_test_server(self.factory, self.request)
        else:
            if not (frontend.root / "index.html").exists():
                pytest.skip(
                    f"frontend {frontend.version} is not installed at {frontend.root}: run pip install "
                    f"--no-deps --target {NEW_FRONTEND_DIR.name} comfyui-frontend-package=={frontend.version}"
                    " in the repository root (or set OIR_FRONTEND_1_58_ROOT)"
                )
            server = start_test_server(self.factory.mktemp("comfy_server_fe"), front_end_root=frontend.root)
        paths = write_test_images(self.factory.mktemp("browser_images"))
        paths["third"] = write_third_mask(paths["dog"].parent)
        uploads = {role: server.upload(path) for role, path in paths.items()}
        self.current = (frontend, server, uploads)
        return server, uploads

    def close(self) -> None:
        if self.current is not None and self.current[0].root is not None:
            self.current[1].stop()
        self.current = None


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[_Servers]:
    pool = _Servers(tmp_path_factory, request)
    yield pool
    pool.close()


def write_third_mask(folder: Path) -> Path:
    """A third object's mask, clear of the "dog" and "gift" masks (the three-pair graph)."""
    import numpy as np
    from PIL import Image

    size = Image.open(folder / "dog_gift.png").size
    mask = np.zeros((size[1], size[0]), dtype="uint8")
    mask[size[1] // 32: size[1] * 5 // 16, size[0] * 9 // 16: size[0] * 15 // 16] = 255
    path = folder / "third_mask.png"
    Image.fromarray(mask, mode="L").save(path)
    return path


def _post_settings(server: TestServer, settings: dict[str, Any]) -> None:
    """The user's settings, as the settings dialog saves them (``POST /settings``)."""
    import requests

    answer = requests.post(f"{server.url}/settings", json=settings, timeout=30)
    answer.raise_for_status()


@pytest.fixture(scope="module", params=CASES)
def ui(request: pytest.FixtureRequest, browser: Any, servers: _Servers) -> Iterator[UI]:
    frontend, mode = request.param
    server, uploads = servers.get(frontend)
    # A fresh user folder would greet the page with the templates dialog; Nodes 2.0 is a setting.
    _post_settings(server, {
        "Comfy.TutorialCompleted": True,
        "Comfy.Workflow.ShowMissingModelsWarning": False,
        "Comfy.VueNodes.Enabled": mode == "nodes2",
    })
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    state = UI(page, server, uploads, frontend, mode)
    page.on("console", state.on_console)
    page.on("pageerror", state.on_page_error)
    # "Leave the page? Unsaved changes" on a reload: accept it, as a user reloading would.
    page.on("dialog", lambda dialog: dialog.accept())
    with artifacts_on_failure(state, "load"):
        load_frontend(state)
        vue = state.js(
            "window.comfyAPI.app.app.extensionManager.setting.get('Comfy.VueNodes.Enabled')"
        )
        assert bool(vue) == (mode == "nodes2"), f"Comfy.VueNodes.Enabled is {vue!r} in {mode} mode"
    yield state
    context.close()


def load_frontend(ui: UI) -> None:
    ui.page.goto(ui.server.url)
    # The extension's setup hook runs after node registration; the first graph then loads.
    ui.page.wait_for_function(
        "!!(document.getElementById('oir-search-ui-style')"
        " && window.comfyAPI?.app?.app?.graph?.nodes?.length)"
    )


# -------------------------------------------------------------------------------------------------
# The workflow, pointed at the tiny models
# -------------------------------------------------------------------------------------------------

OPEN_TEMPLATE = """
(async (module, name, expected) => {
  const app = window.comfyAPI.app.app;
  // The page is reused: the nodes of the graph before are marked, the template's must replace them.
  for (const n of app.graph.nodes) n.__oirBefore = true;
  const types = () => JSON.stringify(app.graph.nodes.map((n) => n.type).sort());
  const sameTypes = () => types() === JSON.stringify(expected);
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
  const loaded = () => !dialog() && sameTypes() && !app.graph.nodes.some((n) => n.__oirBefore);
  await until(loaded, "the template to load");
  await new Promise((r) => setTimeout(r, 500));
  const dialogs = [...document.querySelectorAll("[role=dialog]")].map((d) => d.textContent.slice(0, 300));
  const unregistered = app.graph.nodes
    .filter((n) => !["Note", "MarkdownNote"].includes(n.type) && n.constructor.nodeData?.name !== n.type)
    .map((n) => n.type);
  return {label, dialogs, unregistered, types: app.graph.nodes.map((n) => n.type)};
})(%(module)s, %(name)s, %(expected)s)
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
  if (!window.__oirRuns) {
    // Once per page. The test never listens to oir_progress itself: the extension must.
    window.__oirRuns = [];
    const runs = window.__oirRuns;
    api.addEventListener("execution_success", (e) => runs.push({ok: true, id: e.detail.prompt_id}));
    api.addEventListener("execution_error", (e) => window.__oirRuns.push({ok: false, detail: e.detail}));
    api.addEventListener("executed", (e) => {
      if (e.detail?.output?.oir_scores) window.__oirScorerOutput = e.detail.output;
    });
  }
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
  /** The one node of that type, at the top level or inside a subgraph. */
  anywhere(type) {
    const root = this.app.rootGraph ?? this.app.graph;
    const graphs = [root, ...(root.subgraphs?.values?.() ?? [])];
    const found = graphs.flatMap((g) => g.nodes ?? []).filter((n) => n.type === type);
    if (found.length !== 1) throw new Error(`${found.length} ${type} nodes in the workflow`);
    return found[0];
  },
  /** Scale 1, the given node near the top left of the viewport. */
  focus(type, margin = 40, node = this.node(type)) {
    const ds = this.app.canvas.ds;
    ds.scale = 1;
    ds.offset[0] = -node.pos[0] + margin;
    ds.offset[1] = -node.pos[1] + margin + 30;
    this.app.canvas.setDirty(true, true);
    this.app.canvas.draw(true, true);
    return true;
  },
  /** Scale 1, the node with that id near the top left of the viewport. */
  focusId(id, margin = 40) {
    const node = this.app.graph.getNodeById(id);
    return this.focus(node.type, margin, node);
  },
  /** The whole graph inside the viewport (Vue nodes are measured where they are drawn). */
  fitAll(margin = 60) {
    const nodes = this.app.graph.nodes;
    const LiteGraph = window.LiteGraph ?? window.comfyAPI.litegraph?.LiteGraph;
    const title = LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - title));
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
    const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
    const canvas = this.app.canvas.canvas;
    const ds = this.app.canvas.ds;
    const fit = (space, size) => (space - 2 * margin) / size;
    ds.scale = Math.min(1, fit(canvas.clientWidth, x1 - x0), fit(canvas.clientHeight, y1 - y0));
    ds.offset[0] = margin / ds.scale - x0;
    ds.offset[1] = margin / ds.scale - y0;
    this.app.canvas.setDirty(true, true);
    this.app.canvas.draw(true, true);
    return ds.scale;
  },
  /** Types `text` into the scorer's step_override as a user edit does (value, then the widget's
   * callback); returns the chart's error line (null when it shows none). */
  typeOverride(text, node = this.node("OIRMaskMetricScorer")) {
    const widget = node.widgets.find((w) => w.name === "step_override");
    widget.value = text;
    widget.callback?.(widget.value, this.app.canvas, node, this.app.canvas.graph_mouse);
    return node.oirChart.element.querySelector(".oir-error")?.textContent ?? null;
  },
  /** The pack's progress line on the node of that type ("" when it has none). */
  progress(type) { return this.node(type)?.oirProgress?.textContent ?? null; },
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
    oir_images: [{filename: "oir-missing-grid.png", subfolder: "", type: "temp"}],
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
  // Classic: each node's box on the canvas, its title bar included (pos is the body's top left).
  // Nodes 2.0: the Vue nodes' element boxes as laid out in the page (the whole graph is fitted
  // into the viewport first, so every node is rendered and measured at the same scale).
  const vue = document.querySelectorAll("[data-node-id]").length > 0;
  let boxes;
  if (vue) {
    // Page pixels back to graph units (the canvas transform: page = (graph + offset) * scale).
    const {scale, offset} = app.canvas.ds;
    const origin = app.canvas.canvas.getBoundingClientRect();
    boxes = [...document.querySelectorAll("[data-node-id]")]
      .filter((e) => !e.parentElement?.closest("[data-node-id]"))
      .map((e) => {
        const r = e.getBoundingClientRect();
        const node = app.graph.getNodeById(e.dataset.nodeId);
        return {id: e.dataset.nodeId, type: node?.type, x: (r.x - origin.x) / scale - offset[0],
                y: (r.y - origin.y) / scale - offset[1], w: r.width / scale, h: r.height / scale};
      });
  } else {
    boxes = app.graph.nodes.map((n) => ({
      id: n.id, type: n.type, x: n.pos[0], y: n.pos[1] - title, w: n.size[0], h: n.size[1] + title,
    }));
  }
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      const dx = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
      const dy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
      if (dx > 1 && dy > 1) {
        overlaps.push(`${a.type} #${a.id} / ${b.type} #${b.id}: ${Math.round(dx)}x${Math.round(dy)} px`);
      }
    }
  }
  return {overlaps, boxes, vue, nodes: app.graph.nodes.length};
})()
"""

ELEMENT_LAYOUT = """
((id) => {
  // One OIR node, measured where it is drawn (scale 1, the node in view): every top-level area
  // (a canvas widget, a DOM widget's element, the image preview) must lie inside the node and
  // overlap no other; inside the pack's own widgets every row, panel, axis label and text line
  // must lie inside its widget's element (else that element clips it) and overlap no sibling.
  const app = window.comfyAPI.app.app;
  const LiteGraph = window.LiteGraph ?? window.comfyAPI.litegraph?.LiteGraph;
  const widgetHeight = LiteGraph?.NODE_WIDGET_HEIGHT ?? 20;
  const node = app.graph.getNodeById(id);
  const label = `${node.type} #${node.id}`;
  const vue = document.querySelectorAll("[data-node-id]").length > 0;
  const {scale, offset} = app.canvas.ds;
  const origin = app.canvas.canvas.getBoundingClientRect();
  // Page pixels to graph units (the canvas transform: page = (graph + offset) * scale).
  const boxOf = (el) => {
    const r = el.getBoundingClientRect();
    return {x: (r.x - origin.x) / scale - offset[0], y: (r.y - origin.y) / scale - offset[1],
            w: r.width / scale, h: r.height / scale};
  };
  const shown = (el) => !!el && el.isConnected && el.getClientRects().length > 0
    && el.getBoundingClientRect().height > 0;
  const inside = (a, b) => a.x >= b.x - 1 && a.y >= b.y - 1
    && a.x + a.w <= b.x + b.w + 1 && a.y + a.h <= b.y + b.h + 1;
  const overlap = (a, b) => {
    const dx = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
    const dy = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
    return dx > 1 && dy > 1 ? `${Math.round(dx)}x${Math.round(dy)} px` : null;
  };
  const fmt = (b) => `[${Math.round(b.x)},${Math.round(b.y)} ${Math.round(b.w)}x${Math.round(b.h)}]`;
  const problems = [];
  /** Every part inside `container`, no two parts overlapping. */
  const check = (where, container, parts) => {
    for (const part of parts) {
      if (!inside(part.box, container.box)) {
        problems.push(`${label}: ${part.what} ${fmt(part.box)} is not inside `
          + `${container.what} ${fmt(container.box)}`);
      }
    }
    for (let i = 0; i < parts.length; i++) {
      for (let j = i + 1; j < parts.length; j++) {
        const found = overlap(parts[i].box, parts[j].box);
        if (found) {
          problems.push(`${label}: ${parts[i].what} ${fmt(parts[i].box)} overlaps `
            + `${parts[j].what} ${fmt(parts[j].box)} by ${found}${where}`);
        }
      }
    }
  };
  /** A text element whose lines need more height than it has is cut off (overflow hidden). */
  const unclipped = (what, el) => {
    if (el.scrollHeight > el.clientHeight + 1) {
      problems.push(`${label}: ${what} is cut off: its content needs ${el.scrollHeight} px, `
        + `it has ${el.clientHeight} px`);
    }
  };
  let body;
  const areas = [];
  const views = [];
  if (vue) {
    const element = document.querySelector(`[data-node-id="${node.id}"]`);
    if (!shown(element)) return {problems: [`${label}: its Vue node is not shown`], areas: []};
    body = {what: "the node", box: boxOf(element)};
    const rows = [...element.querySelectorAll(".lg-node-widget, [data-widget-name]")]
      .filter((row) => !row.parentElement.closest(".lg-node-widget, [data-widget-name]"));
    for (const row of rows.filter(shown)) {
      const name = row.dataset.widgetName ?? row.textContent.trim().slice(0, 24);
      areas.push({what: `widget ${name}`, box: boxOf(row)});
    }
    for (const preview of [...element.querySelectorAll(".image-preview")].filter(shown)) {
      areas.push({what: "the image preview", box: boxOf(preview)});
    }
  } else {
    body = {what: "the node", box: {x: node.pos[0], y: node.pos[1], w: node.size[0], h: node.size[1]}};
    for (const widget of node.widgets ?? []) {
      if (widget.hidden || widget.type === "hidden" || (widget.computedHeight ?? 1) <= 0) continue;
      if (widget.element) {
        if (shown(widget.element)) areas.push({what: `widget ${widget.name}`, box: boxOf(widget.element)});
        continue;
      }
      if (widget.y == null) continue;
      // A canvas widget is drawn over one widget row from its y (the preview: its computed height).
      const preview = widget.name === "$$canvas-image-preview";
      const height = preview
        ? widget.computedHeight : Math.min(widgetHeight, widget.computedHeight ?? widgetHeight);
      areas.push({what: preview ? "the image preview" : `widget ${widget.name}`,
                  box: {x: body.box.x, y: body.box.y + widget.y, w: body.box.w, h: height}});
    }
    if (node.imgs?.length && !node.widgets?.some((w) => w.name === "$$canvas-image-preview")) {
      // Older frontends draw the preview below the last widget, down to the node's bottom.
      const last = Math.max(0, ...(node.widgets ?? []).map((w) => (w.y ?? 0) + (w.computedHeight ?? 0)));
      areas.push({what: "the image preview",
                  box: {x: body.box.x, y: body.box.y + last, w: body.box.w, h: body.box.h - last}});
    }
  }
  check("", body, areas);
  // The pack's own widgets, inside out.
  const pack = [node.oirStrip?.element, node.oirChart?.element, node.oirProgress, node.oirLevels,
    node.oirSummary].filter(shown);
  for (const el of pack) {
    const what = el.className.split(" ")[0];
    const view = {what, box: boxOf(el)};
    views.push(view);
    if (!inside(view.box, body.box)) {
      problems.push(`${label}: ${what} ${fmt(view.box)} is not inside the node ${fmt(body.box)}`);
    }
    if (el.matches(".oir-progress, .oir-summary")) unclipped(what, el);
    const children = el.matches(".oir-strip")
      ? [...el.querySelectorAll(".oir-strip-row, .oir-placeholder")]
      : el.matches(".oir-chart")
        ? [...el.querySelectorAll(".oir-legend, .oir-error, .oir-panel, .oir-placeholder")] : [];
    const parts = children.filter(shown).map((child) => {
      const kind = child.className.split(" ")[0];
      const pair = child.dataset.pair == null ? "" : ` of pair ${Number(child.dataset.pair) + 1}`;
      return {what: `${kind}${pair}`, box: boxOf(child)};
    });
    check(` in ${what}`, view, parts);
    for (const error of el.querySelectorAll(".oir-error")) unclipped("the step_override error line", error);
    for (const panel of el.querySelectorAll(".oir-panel")) {
      const pair = `pair ${Number(panel.dataset.pair) + 1}`;
      const plot = panel.querySelector("svg.oir-plot");
      if (!plot) continue;
      const plotBox = {what: `the plot of ${pair}`, box: boxOf(plot)};
      const labels = [...plot.querySelectorAll("text.oir-axis")]
        .map((text) => ({what: `axis label ${text.textContent} of ${pair}`, box: boxOf(text)}));
      for (const part of labels) {
        for (const container of [plotBox, view]) {
          if (!inside(part.box, container.box)) {
            problems.push(`${label}: ${part.what} ${fmt(part.box)} is not inside `
              + `${container.what} ${fmt(container.box)}`);
          }
        }
      }
    }
  }
  return {problems, areas: areas.map((a) => `${a.what} ${fmt(a.box)}`),
          views: views.map((v) => `${v.what} ${fmt(v.box)}`)};
})
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


INTO_SUBGRAPH = """
((types) => {
  // The frontend's own conversion (what "Convert to Subgraph" on a selection runs).
  const graph = window.comfyAPI.app.app.graph;
  const nodes = types.map((type) => graph.nodes.find((n) => n.type === type));
  if (nodes.some((n) => !n)) throw new Error(`not all of ${types} are at the top level`);
  const {subgraph} = graph.convertToSubgraph(new Set(nodes));
  return {uuid: String(subgraph.id),
          inner: subgraph.nodes.map((n) => n.type).filter((t) => types.includes(t)).sort(),
          left: graph.nodes.filter((n) => types.includes(n.type)).length};
})
"""

STRIP_AND_CHART = """
(() => {
  // What a person sees on the search node's strip and on the scorer's chart, wherever they are.
  const search = window.__oir.anywhere("OIRParallelStepSearch");
  const scorer = window.__oir.anywhere("OIRMaskMetricScorer");
  const neutral = (cell) => cell.style.background.replace(/\\s/g, "") === "rgb(70,70,78)";
  const rows = [...search.oirStrip.element.querySelectorAll(".oir-strip-row")].map((row) => {
    const cells = [...row.querySelectorAll(".oir-cell")];
    const framed = cells.filter((c) => c.classList.contains("oir-cell-chosen"));
    return {pair: Number(row.dataset.pair), cells: cells.length,
            shaded: cells.filter((c) => !neutral(c)).length,
            framed: framed.map((c) => Number(c.dataset.step)),
            label: row.querySelector(".oir-strip-label")?.textContent ?? ""};
  });
  const charts = scorer.oirChart.charts.map((c) => ({pair: c.pair, chosen: c.chosen}));
  return {rows, charts, searchIn: String(search.graph?.id ?? ""), scorerIn: String(scorer.graph?.id ?? "")};
})()
"""

ADD_THIRD_PAIR = """
((mask) => {
  // A third OIR Edit Pair at the end of the chain, with its own mask (the saucer of the prompt).
  const graph = window.comfyAPI.app.app.graph;
  const LiteGraph = window.LiteGraph ?? window.comfyAPI.litegraph?.LiteGraph;
  const pairs = graph.nodes.filter((n) => n.type === "OIREditPair").sort((a, b) => a.id - b.id);
  const last = pairs[pairs.length - 1];
  const builder = graph.nodes.find((n) => n.type === "OIRGuidedPromptBuilder");
  const set = (node, name, value) => { node.widgets.find((w) => w.name === name).value = value; };
  const loader = LiteGraph.createNode("LoadImageMask");
  loader.pos = [0, 1330];
  graph.add(loader);
  set(loader, "image", mask);
  set(loader, "channel", "red");
  const pair = LiteGraph.createNode("OIREditPair");
  pair.pos = [380, 1330];
  graph.add(pair);
  set(pair, "source", "saucer");
  set(pair, "target", "plate");
  loader.connect(0, pair, pair.findInputSlot("mask"));
  last.connect(0, pair, pair.findInputSlot("edit_pairs"));
  pair.connect(0, builder, builder.findInputSlot("edit_pairs"));
  graph.setDirtyCanvas?.(true, true);
  return graph.nodes.filter((n) => n.type === "OIREditPair").length;
})
"""


def queue_and_wait(ui: UI) -> dict[str, Any]:
    before = ui.js("window.__oir.queue()")
    handle = ui.page.wait_for_function(
        f"window.__oirRuns.length > {before} && window.__oirRuns[{before}]",
        timeout=RUN_TIMEOUT_S * 1000,
        polling=250,
    )
    run = handle.json_value()
    assert run["ok"], f"the workflow failed: {json.dumps(run.get('detail'))[:2000]}"
    return run


def template_types(name: str) -> list[str]:
    """The node types the template file holds (what the frontend must show once it is opened)."""
    data = json.loads((REPO / "example_workflows" / f"{name}.json").read_text(encoding="utf-8"))
    return sorted(node["type"] for node in data["nodes"])


def open_template(ui: UI, name: str) -> None:
    """Open ``name`` from the template browser as a user would, then point it at the tiny models."""
    loaded = ui.js(
        OPEN_TEMPLATE
        % {
            "module": json.dumps(PACK_FOLDER),
            "name": json.dumps(name),
            "expected": json.dumps(template_types(name)),
        }
    )
    assert loaded["label"], f"the {name} card has no title"
    assert not loaded["dialogs"], f"a dialog opened with the template (missing nodes?): {loaded['dialogs']}"
    assert loaded["unregistered"] == [], f"node types the frontend does not know: {loaded['unregistered']}"
    assert set(loaded["types"]) - {"Note", "MarkdownNote"} <= set(ui.server.object_info())
    pictures = ui.js(MISSING_INPUTS)
    shipped = all(p["offered"] and p["value"].startswith("oir_example_") for p in pictures)
    assert pictures and shipped, f"the template names pictures LoadImage does not offer: {pictures}"
    point_at_tiny_models(ui)
    vue_nodes = ui.js("document.querySelectorAll('[data-node-id]').length")
    if ui.mode == "nodes2":
        assert vue_nodes >= len(loaded["types"]) - 1, "Nodes 2.0 is on but the nodes are not Vue nodes"
    else:
        assert vue_nodes == 0, "classic mode shows Vue nodes"


def point_at_tiny_models(ui: UI) -> None:
    """The open graph's loaders and pictures set to the tiny test files; event recorders and helpers."""
    values = {
        "values": json.dumps(WIDGET_VALUES),
        "uploads": json.dumps(ui.uploads),
        "loader": json.dumps(TEST_LOADER),
        "checkpoint": json.dumps(TINY_CHECKPOINT),
        "checkpoints": json.dumps(TINY_CHECKPOINT_FOR),
    }
    ui.js(POINT_AT_TINY_MODELS % values)
    ui.js(HELPERS)


def assert_no_node_overlaps(ui: UI, when: str) -> None:
    """No two nodes' boxes (title bars included) overlap: the grown search and scorer nodes too."""
    ui.js("window.__oir.fitAll()")
    ui.settle()
    ui.settle()
    found = ui.js(NODE_OVERLAPS)
    assert found["vue"] == (ui.mode == "nodes2")
    assert len(found["boxes"]) == found["nodes"], f"{when}: not every node was measured: {found['boxes']}"
    assert not found["overlaps"], f"{when}: {found['overlaps']} (boxes: {found['boxes']})"


def assert_oir_layout(ui: UI, when: str) -> None:
    """Inside every OIR node nothing is clipped or covered (element boxes, each node at scale 1).

    Strip rows, chart legend, error line, panels and their axis labels (the last pair's x-axis
    included) and the progress line each lie inside their widget's element and inside the node,
    and no canvas widget, DOM widget or image preview overlaps another."""
    ids = ui.js(
        "window.__oir.app.graph.nodes.filter((n) => String(n.type).startsWith('OIR')).map((n) => n.id)"
    )
    assert ids, f"{when}: no OIR node in the graph"
    problems: list[str] = []
    for node_id in ids:
        ui.js("(id) => window.__oir.focusId(id)", node_id)
        ui.settle()
        ui.settle()
        found = ui.js(ELEMENT_LAYOUT, node_id)
        problems += found["problems"]
    assert not problems, f"{when}:\n" + "\n".join(problems)


def assert_error_line_fits(ui: UI) -> None:
    """A step_override the node would reject, typed in: the chart's red error line shows, and the
    node grows so nothing is covered; the empty override takes the line away again."""
    shown = ui.js("window.__oir.typeOverride('9, auto')")
    assert shown and "step_override" in shown and "1..5" in shown, f"no error line for '9, auto': {shown!r}"
    assert_no_node_overlaps(ui, "with the step_override error line")
    assert_oir_layout(ui, "with the step_override error line")
    assert ui.js("window.__oir.typeOverride('')") is None


def assert_strip_follows_chart(ui: UI, when: str, pairs: int = 2) -> list[int]:
    """The search node's strip shows the scorer's state: per pair every cell shaded by its score,
    exactly the chart's chosen step framed, and the label naming it; returns the chosen steps."""
    state = ui.js(STRIP_AND_CHART)
    rows, charts = state["rows"], state["charts"]
    assert [c["pair"] for c in charts] == list(range(pairs)), f"{when}: the chart shows {charts}"
    assert [r["pair"] for r in rows] == list(range(pairs)), f"{when}: the strip shows {rows}"
    for row, chart in zip(rows, charts):
        pair = chart["pair"] + 1
        assert row["framed"] == [chart["chosen"]], (
            f"{when}: pair {pair}'s strip frames {row['framed']}, "
            f"the chart chose t={chart['chosen']} ({state})"
        )
        shaded = row["cells"] == STEPS and row["shaded"] == STEPS
        assert shaded, f"{when}: pair {pair}'s strip is not shaded: {row}"
        assert f"chosen t={chart['chosen']}" in row["label"], f"{when}: pair {pair}'s label: {row['label']!r}"
    return [c["chosen"] for c in charts]


def rerun_with_another_step(ui: UI, chosen: list[int], when: str) -> list[int]:
    """Override pair 1 with a step the scorer did not choose, queue, and check that the strip
    (wherever it is) frames the new step the chart (wherever it is) shows."""
    step = next(s for s in (2, 4, 3, 1, 5) if s != chosen[0])
    scorer = "window.__oir.anywhere('OIRMaskMetricScorer')"
    ui.js(f"(text) => window.__oir.typeOverride(text, {scorer})", f"{step}, auto")
    queue_and_wait(ui)
    now = assert_strip_follows_chart(ui, when)
    assert now[0] == step, f"{when}: the override {step} for pair 1 did not reach the chart: {now}"
    return now


def scorer_charts(ui: UI) -> list[dict[str, Any]]:
    return ui.js(
        "window.__oir.node('OIRMaskMetricScorer').oirChart.charts"
        ".map((c) => ({pair: c.pair, steps: c.steps, chosen: c.chosen, override: c.override,"
        " searched: c.searched}))"
    )


def point_of(ui: UI, pair: int, step: int) -> dict[str, float]:
    selector = f'.oir-panel[data-pair="{pair}"] circle.oir-point[data-step="{step}"]'
    point = ui.js("(s) => window.__oir.rect(s)", selector)
    assert point, f"no point for pair {pair}, step {step}"
    return point


def click(ui: UI, point: dict[str, float]) -> None:
    """A real mouse click at viewport coordinates (pointer events and all)."""
    ui.page.mouse.move(point["x"], point["y"])
    ui.page.mouse.click(point["x"], point["y"])


def assert_progress_shown(ui: UI) -> None:
    """The search node's progress line names the engine's stage, level and rows (oir_progress)."""
    text = ui.js("window.__oir.progress('OIRParallelStepSearch')")
    assert text and re.search(r"level \d+/\d+", text) and re.search(r"rows \d+/\d+", text), (
        f"the search node shows no OIR progress: {text!r}"
    )


def run_and_click(ui: UI) -> list[dict[str, Any]]:
    """Queue the open graph; every pair gets a chart, and a click on a step sets step_override."""
    assert_no_node_overlaps(ui, "as loaded")
    assert_oir_layout(ui, "as loaded")
    queue_and_wait(ui)
    assert_no_node_overlaps(ui, "after the run")
    assert_oir_layout(ui, "after the run")
    assert_progress_shown(ui)
    charts = scorer_charts(ui)
    pairs = ui.js("window.__oir.app.graph.nodes.filter((n) => n.type === 'OIREditPair').length")
    assert [c["pair"] for c in charts] == list(range(pairs))
    ui.js("window.__oir.focus('OIRMaskMetricScorer')")
    ui.settle()
    step = next(s for s in (3, 2, 4, 1, 5) if s != charts[0]["chosen"])
    point = point_of(ui, 0, step)
    click(ui, point)
    expected = ", ".join([str(step), *(["auto"] * (pairs - 1))])
    assert ui.js("window.__oir.override()") == expected
    click(ui, point_of(ui, 0, step))  # back to auto
    assert ui.js("window.__oir.override()") == ""
    return charts


# -------------------------------------------------------------------------------------------------
# The tests (per frontend and mode; the page is reused, so the in-depth one comes last)
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [w for w in WORKFLOWS if w != "oir_two_object_edit"])
def test_every_template_opens_runs_and_takes_a_click(ui: UI, name: str) -> None:
    with artifacts_on_failure(ui, name):
        open_template(ui, name)
        run_and_click(ui)
        ui.screenshot(name)
        ui.assert_no_pack_problems()


README_SCREENSHOT = REPO / "docs" / "images" / "two-object-template.png"


def save_readme_screenshot(ui: UI) -> None:
    """With ``OIR_README_SCREENSHOT=1`` (``tests/integration/make_screenshot.sh``), on 1.58.1 classic:
    the two-object template after its first run, search strip, score chart and grid preview in
    view, saved small (1100 px wide, 128 colours) as the README's picture."""
    wanted = os.environ.get("OIR_README_SCREENSHOT") == "1"
    if not wanted or (ui.frontend.version, ui.mode) != (NEW_FRONTEND, "classic"):
        return
    from PIL import Image

    ui.js("window.__oir.focus('OIRParallelStepSearch', 80)")
    ui.settle()
    shot = ARTIFACTS / "readme-two-object-template.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ui.page.screenshot(path=str(shot), clip={"x": 50, "y": 40, "width": 1260, "height": 720})
    with Image.open(shot) as picture:
        small = picture.convert("RGB").resize((1100, round(720 * 1100 / 1260)), Image.LANCZOS)
    README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=128).save(README_SCREENSHOT, optimize=True)


def test_chart_draws_and_steers_the_search(ui: UI) -> None:
    with artifacts_on_failure(ui, "oir_two_object_edit"):
        _in_depth(ui)


def _in_depth(ui: UI) -> None:
    open_template(ui, "oir_two_object_edit")

    # Before any run: a placeholder, no chart, and the override widget untouched.
    ui.js("window.__oir.focus('OIRMaskMetricScorer')")
    ui.settle()
    placeholder = ui.js("window.__oir.node('OIRMaskMetricScorer').oirChart.element.textContent")
    assert placeholder == "Queue the graph to see the search"
    ui.screenshot("before_run")

    # First run.
    assert_no_node_overlaps(ui, "as loaded")
    assert_oir_layout(ui, "as loaded")
    queue_and_wait(ui)
    assert_no_node_overlaps(ui, "after the run")
    assert_oir_layout(ui, "after the run")
    assert_progress_shown(ui)
    save_readme_screenshot(ui)
    charts = scorer_charts(ui)
    assert [c["pair"] for c in charts] == [0, 1]
    assert all(c["steps"] == list(range(1, STEPS + 1)) and c["override"] is None for c in charts)
    assert_error_line_fits(ui)
    ui.js("window.__oir.focus('OIRMaskMetricScorer')")
    ui.settle()
    panels = ui.js(
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
    strip = ui.js(
        "[...document.querySelectorAll('.oir-strip .oir-strip-row')].map((r) => ({"
        " cells: r.querySelectorAll('.oir-cell').length,"
        " chosen: r.querySelector('.oir-cell-chosen')?.dataset.step }))"
    )
    assert strip == [{"cells": STEPS, "chosen": str(c["chosen"])} for c in charts]

    # Hover a step that is not the chosen one: its thumbnail and readout show.
    pair0 = charts[0]
    target = next(s for s in (3, 2, 4, 1, 5) if s != pair0["chosen"])
    point = point_of(ui, 0, target)
    ui.page.mouse.move(point["x"], point["y"])
    caption = ui.js("document.querySelector('.oir-panel[data-pair=\"0\"] .oir-caption').textContent")
    assert caption == f"t={target}"
    ui.screenshot("scorer_chart_hover")

    # Click it: the real widget holds the override; the chart shows the pending step.
    click(ui, point)
    assert ui.js("window.__oir.override()") == f"{target}, auto"
    pending = f'.oir-panel[data-pair="0"] line.oir-next[data-step="{target}"]'
    assert ui.js("(s) => !!document.querySelector(s)", pending)
    saved = ui.js(
        "window.__oir.app.graph.serialize().nodes"
        ".find((n) => n.type === 'OIRMaskMetricScorer').widgets_values"
    )
    assert saved == [f"{target}, auto"]  # the chart itself is never serialised

    # Clicking the overridden step again goes back to auto.
    click(ui, point_of(ui, 0, target))
    assert ui.js("window.__oir.override()") == ""

    # Second pair via its own chart, then the reset button of that pair.
    other = next(s for s in (2, 4, 3, 1, 5) if s != charts[1]["chosen"])
    click(ui, point_of(ui, 1, other))
    assert ui.js("window.__oir.override()") == f"auto, {other}"
    reset = ui.js("window.__oir.rect('.oir-panel[data-pair=\"1\"] .oir-reset')")
    assert reset and reset["width"] > 0
    click(ui, reset)
    assert ui.js("window.__oir.override()") == ""

    # A queued override is honoured on a partial re-run (only the scorer and what follows run).
    click(ui, point_of(ui, 0, target))
    queue_and_wait(ui)
    rerun = scorer_charts(ui)
    assert {k: rerun[0][k] for k in ("chosen", "searched", "override")} == {
        "chosen": target, "searched": pair0["chosen"], "override": target
    }
    assert rerun[1]["override"] is None
    assert assert_strip_follows_chart(ui, "after a partial re-run")[0] == target

    ui.js("window.__oir.focus('OIRMaskMetricScorer')")
    ui.settle()
    ui.page.mouse.move(1000, 900)  # empty canvas: no hover state, no tooltip
    ui.screenshot("scorer_chart_override")
    ui.js("window.__oir.focus('OIRParallelStepSearch')")
    ui.settle()
    ui.screenshot("search_strip")

    # A page reload loses the chart and the strip; queuing the unchanged graph brings them back
    # (the scorer and the search are output nodes: ComfyUI re-sends their cached results).
    ui.page.reload()
    load_frontend(ui)
    point_at_tiny_models(ui)  # the same values: only the event listeners are new
    assert ui.js("window.__oir.node('OIRMaskMetricScorer').oirChart.charts.length") == 0
    queue_and_wait(ui)
    reloaded = ui.js(
        "({charts: window.__oir.node('OIRMaskMetricScorer').oirChart.charts.length,"
        " strip: document.querySelectorAll('.oir-strip .oir-strip-row').length})"
    )
    assert reloaded == {"charts": 2, "strip": 2}, f"after a reload the cached results are lost: {reloaded}"
    assert assert_strip_follows_chart(ui, "after a reload and a cached re-queue")[0] == target
    assert_no_node_overlaps(ui, "after the reload and run")
    assert_oir_layout(ui, "after the reload and run")

    # The paper's 50 steps (synthetic scores; its grid image does not exist): 50 points, sensible
    # ticks, and a missing image only leaves the thumbnail empty.
    drawn = ui.js(SYNTHETIC_50_STEPS)
    assert drawn == {"points": 50, "ticks": drawn["ticks"], "panels": 1} and 4 <= drawn["ticks"] <= 12, drawn
    ui.js("window.__oir.focus('OIRMaskMetricScorer')")
    ui.settle()
    point = ui.js("window.__oir.rect('.oir-panel circle.oir-point[data-step=\"31\"]')")
    ui.page.mouse.move(point["x"], point["y"])
    assert ui.js("document.querySelector('.oir-panel .oir-caption').textContent") == "t=31"
    ui.screenshot("scorer_chart_50_steps")

    # The scorer inside a subgraph: a run reaches its chart (the frontend dispatches the output to
    # the inner node), and outputs handed back by locator id find the node inside the subgraph.
    moved = ui.js(SCORER_INTO_SUBGRAPH)
    assert moved["inRoot"] is False and moved["uuid"]
    queue_and_wait(ui)
    assert ui.js("window.__oirSub.inner.oirChart.charts.length") == 2, (
        "the run did not reach the chart of the scorer inside the subgraph"
    )
    assert_strip_follows_chart(ui, "with the scorer inside a subgraph")
    assert ui.js(OUTPUTS_BY_LOCATOR) == 2, "outputs by locator id did not reach the subgraph's scorer"

    ui.assert_no_pack_problems()


def test_three_pairs_fit_with_the_error_line(ui: UI) -> None:
    """Three pairs (the two-object template and a third OIR Edit Pair): nothing of the strip's
    three rows, the three charts (the last x-axis included) or the error line is covered."""
    with artifacts_on_failure(ui, "three_pairs"):
        open_template(ui, "oir_two_object_edit")
        assert ui.js(ADD_THIRD_PAIR, ui.uploads["third"]) == 3
        assert_no_node_overlaps(ui, "three pairs, as loaded")
        assert_oir_layout(ui, "three pairs, as loaded")
        queue_and_wait(ui)
        assert_no_node_overlaps(ui, "three pairs, after the run")
        assert_oir_layout(ui, "three pairs, after the run")
        assert_strip_follows_chart(ui, "three pairs", pairs=3)
        assert_error_line_fits(ui)
        ui.js("window.__oir.focus('OIRMaskMetricScorer', 100)")
        ui.settle()
        ui.screenshot("three_pairs")
        ui.assert_no_pack_problems()


def test_strip_follows_the_chart_in_every_arrangement(ui: UI) -> None:
    """The strip shows the chart's state with the search inside a subgraph, with the search and
    the scorer each inside its own subgraph, and with both inside one (each nested once); the
    scorer alone inside a subgraph, a partial re-run and a reload with a cached re-queue are
    checked by the in-depth test."""
    with artifacts_on_failure(ui, "arrangements"):
        open_template(ui, "oir_two_object_edit")
        queue_and_wait(ui)
        chosen = assert_strip_follows_chart(ui, "at the top level")

        moved = ui.js(INTO_SUBGRAPH, ["OIRParallelStepSearch"])
        assert moved["left"] == 0 and moved["inner"] == ["OIRParallelStepSearch"], moved
        chosen = rerun_with_another_step(ui, chosen, "the search inside a subgraph")

        moved = ui.js(INTO_SUBGRAPH, ["OIRMaskMetricScorer"])
        assert moved["left"] == 0 and moved["inner"] == ["OIRMaskMetricScorer"], moved
        rerun_with_another_step(ui, chosen, "the search and the scorer, each inside its own subgraph")

        open_template(ui, "oir_two_object_edit")
        moved = ui.js(INTO_SUBGRAPH, ["OIRMaskMetricScorer", "OIRParallelStepSearch"])
        both = ["OIRMaskMetricScorer", "OIRParallelStepSearch"]
        assert moved["left"] == 0 and moved["inner"] == both, moved
        queue_and_wait(ui)
        chosen = assert_strip_follows_chart(ui, "both inside one subgraph")
        rerun_with_another_step(ui, chosen, "both inside one subgraph, re-run")
        ui.assert_no_pack_problems()
