"""A headless ComfyUI server with the OIR pack and tiny test models, for integration tests.

Reusable by any test (server, CLI, headless-browser frontend tests)::

    server = start_test_server(tmp_path)            # python main.py --cpu --listen 127.0.0.1 --port N ...
    server.client.system_stats(); server.object_info()
    server.stop()

or, shared by every test module of a session, ``shared_test_server(tmp_path_factory, request)``.

What it sets up (ARCHITECTURE.md §7):

- ComfyUI from ``$COMFYUI_PATH`` on CPU, on a free loopback port, with ``--disable-api-nodes``,
  temporary input/output/temp/user folders and an in-memory database (the checkout stays clean);
- the repository linked into a temporary ``custom_nodes`` folder (through
  :class:`oir_cli.server.ComfyServer`, the launcher ``oir-edit`` uses), plus this folder's
  ``custom_nodes`` with the test node pack ``oir_test_models`` (tiny checkpoint loader);
- a temporary models folder registered by an extra-model-paths YAML: ``oir_clip/tiny-clip`` (a
  tiny transformers CLIP scorer), ``loras/tiny-lora.safetensors`` and
  ``controlnet/tiny-controlnet.safetensors`` (real tiny files for ComfyUI's own loaders);
- the frontend: the installed comfyui-frontend-package unless ``front_end_root`` is given (the
  frontend tests need the real one).

Every wait is bounded; the server is terminated (then killed) on :meth:`TestServer.stop`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import comfy_env
import pytest

from oir_cli.client import OIR_NODE_IDS, ComfyClient
from oir_cli.server import ComfyServer

HERE = Path(__file__).resolve().parent
TEST_NODES_DIR = HERE / "custom_nodes"
"""Folder of test-only node packs (registered as an extra custom-nodes folder)."""

TEST_LOADER = "OIRTestTinyCheckpointLoader"
STALLING_LOADER = "OIRTestStallingCheckpointLoader"
"""Same input as :data:`TEST_LOADER`; never finishes until interrupted (a server surely mid-edit)."""
TINY_CHECKPOINT = "tiny-sd15"
TINY_CHECKPOINT_FOR = {"sd_xl_base_1.0.safetensors": "tiny-sdxl", "flux1-dev-fp8.safetensors": "tiny-flux"}
"""A template's checkpoint -> the tiny model of its family (others: :data:`TINY_CHECKPOINT`)."""
TINY_IMAGE_SCALE = 1.0
"""The SDXL/Flux templates scale the photo to the model's resolution; the tiny runs keep 64x64."""
TINY_SCORER = "tiny-clip"
TINY_LORA = "tiny-lora.safetensors"
TINY_CONTROLNET = "tiny-controlnet.safetensors"
LINKED_SCORER = "linked-clip"
"""A symlink inside models/oir_clip to a scorer folder outside it (how people share model folders)."""
LINKED_FILE_SCORER = "linked-oc.safetensors"
"""A symlinked open_clip checkpoint (and its sidecar) inside models/oir_clip."""
SHARED_SCORER = "shared-clip"
"""A scorer in a second oir_clip folder, registered only through extra_model_paths.yaml."""
BROKEN_LORA = "broken-lora.safetensors"
"""Not a safetensors file: ComfyUI's LoraLoader fails on it (a failure inside ComfyUI)."""
IMAGE_SIZE = 64
"""Test images are 64x64: 8x8 latents with the tiny VAE."""

STARTUP_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0


def _tiny_clip() -> ModuleType:
    """``tests/core/tiny_clip.py`` (the tiny CLIP scorer writers)."""
    return _import_path("oir_tests_tiny_clip", HERE.parent / "core" / "tiny_clip.py")


def sample_files_module() -> ModuleType:
    """``tests/core/sample_files.py`` (picture files LoadImage alone would misread)."""
    return _import_path("oir_tests_sample_files", HERE.parent / "core" / "sample_files.py")


def tiny_files_module() -> ModuleType:
    """``custom_nodes/oir_test_models/tiny_files.py`` (imports comfy: ComfyUI must be set up)."""
    package = TEST_NODES_DIR / "oir_test_models"
    if "oir_test_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "oir_test_models", package / "__init__.py", submodule_search_locations=[str(package)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["oir_test_models"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("oir_test_models.tiny_files")


def _import_path(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_PREPARE_LOCK = threading.Lock()
"""Servers started side by side import the tiny model builders once, not concurrently (a module
half-executed by one thread would be seen without its functions by another)."""


def prepare_models(root: Path, controlnet: bool = True) -> Path:
    """Write the tiny scorer / LoRA / ControlNet under ``root/models``; returns the YAML registering them.

    The YAML also registers :data:`TEST_NODES_DIR` as a custom-nodes folder.
    """
    with _PREPARE_LOCK:
        return _prepare_models(root, controlnet)


def _prepare_models(root: Path, controlnet: bool) -> Path:
    models = root / "models"
    clip = _tiny_clip()
    clip.make_transformers_clip(models / "oir_clip" / TINY_SCORER, image_size=32, patch_size=8)
    # shared model folders live elsewhere: the links leave models/oir_clip
    linked = clip.make_transformers_clip(root / "elsewhere" / "clip", image_size=32, patch_size=8, seed=1)
    (models / "oir_clip" / LINKED_SCORER).symlink_to(linked, target_is_directory=True)
    elsewhere = clip.make_open_clip(root / "elsewhere", "oc", image_size=32, patch_size=8)
    (models / "oir_clip" / LINKED_FILE_SCORER).symlink_to(elsewhere)
    (models / "oir_clip" / LINKED_FILE_SCORER).with_suffix(".json").symlink_to(elsewhere.with_suffix(".json"))
    clip.make_transformers_clip(root / "shared_scorers" / SHARED_SCORER, image_size=32, patch_size=8, seed=2)
    files = tiny_files_module()
    files.write_tiny_lora(models / "loras" / TINY_LORA)
    (models / "loras" / BROKEN_LORA).write_bytes(b"not a safetensors file")
    if controlnet:
        files.write_tiny_controlnet(models / "controlnet" / TINY_CONTROLNET)
    yaml_path = root / "test_model_paths.yaml"
    yaml_path.write_text(
        "oir_integration_tests:\n"
        f"  base_path: {json.dumps(str(models))}\n"
        "  oir_clip: oir_clip\n"
        "  loras: loras\n"
        "  controlnet: controlnet\n"
        f"  custom_nodes: {json.dumps(str(TEST_NODES_DIR))}\n"
        "oir_integration_shared_scorers:\n"
        f"  base_path: {json.dumps(str(root))}\n"
        "  oir_clip: shared_scorers\n",
        encoding="utf-8",
    )
    return yaml_path


def write_test_images(folder: Path) -> dict[str, Path]:
    """A 64x64 source image, "dog" and "gift" masks (white on black) and a control hint."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    pixels = (rng.random((IMAGE_SIZE, IMAGE_SIZE, 3)) * 255).astype("uint8")
    paths = {"image": folder / "dog_gift.png", "hint": folder / "hint.png"}
    Image.fromarray(pixels).save(paths["image"])
    Image.fromarray(255 - pixels).save(paths["hint"])
    for name, (top, bottom, left, right) in {"dog": (8, 40, 4, 28), "gift": (24, 56, 36, 60)}.items():
        mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype="uint8")
        mask[top:bottom, left:right] = 255
        paths[name] = folder / f"{name}_mask.png"
        Image.fromarray(mask, mode="L").save(paths[name])
    return paths


class TestServer:
    """A running test server: the launcher, a client, and checks on what ComfyUI loaded."""

    __test__ = False  # not a pytest test class

    def __init__(self, server: ComfyServer, root: Path) -> None:
        self.server = server
        self.root = root
        self.client = ComfyClient(server.url, timeout=60.0)
        self._object_info: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def object_info(self) -> dict[str, Any]:
        """``GET /object_info`` (every node; cached)."""
        if self._object_info is None:
            self._object_info = self.client.get_json("/object_info")
        return self._object_info

    def import_problems(self) -> list[str]:
        """Log lines where ComfyUI failed to import the pack or the test node pack."""
        return self.server.import_problems(["oir_test_models"])

    def check_loaded(self) -> None:
        """Fail (AssertionError) unless every OIR node and the test loader loaded without import errors."""
        info = self.object_info()
        missing = [node for node in (*OIR_NODE_IDS, TEST_LOADER) if node not in info]
        problems = self.import_problems()
        assert not missing and not problems, f"missing nodes {missing}; import problems {problems}"

    def upload(self, path: Path) -> str:
        """Upload an image into the input folder; returns the LoadImage value."""
        return self.client.upload_image(path, path.name, subfolder="oir-tests")

    def run(self, workflow: dict[str, Any], timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        """Queue an API-format workflow, wait (polling ``/history``), return its history entry."""
        prompt_id = self.client.queue(workflow, client_id="oir-integration-tests")
        return self.client.wait(prompt_id, None, timeout, poll_every=0.5)

    def queue_ids(self, which: str) -> list[str]:
        """The prompt ids in ``GET /queue``'s ``queue_running`` or ``queue_pending``."""
        return [str(item[1]) for item in self.client.get_json("/queue").get(which, [])]

    def hold_queue(self, release: Path, timeout: float = RUN_TIMEOUT) -> str:
        """Queue another client's prompt that runs until ``release`` exists, wait until it runs, and
        return its id: what an edit queued next waits behind."""
        waits = {"class_type": "OIRTestWaitForFile", "inputs": {"path": str(release), "timeout": 600}}
        answer = self.client.post_json("/prompt", {"prompt": {"1": waits}, "client_id": "someone-else"})
        prompt_id = str(answer["prompt_id"])
        deadline = time.monotonic() + timeout
        while prompt_id not in self.queue_ids("queue_running"):
            assert time.monotonic() < deadline, f"the blocker {prompt_id} never ran"
            time.sleep(0.1)
        return prompt_id

    def stop(self) -> None:
        self.server.stop()


def start_test_server(
    root: Path,
    *,
    front_end_root: Path | None = None,
    comfyui: Path | None = None,
    controlnet: bool = True,
    env: dict[str, str] | None = None,
    cpu: bool = True,
) -> TestServer:
    """Start ComfyUI with the pack, the test node pack and the tiny model files under ``root``.

    Args:
        root: an empty temporary folder for the model files and the YAML.
        front_end_root: a frontend build to serve; ``None`` = the installed comfyui-frontend-package.
        comfyui: the ComfyUI checkout (default ``$COMFYUI_PATH``).
        controlnet: also write the tiny ControlNet file.
        env: environment variables for this server's process only.
        cpu: start ComfyUI with ``--cpu`` (the tests always; a benchmark on a GPU not).
    """
    path = comfyui or comfy_env.comfyui_path()
    if path is None:
        raise RuntimeError("COMFYUI_PATH is not set")
    yaml_path = prepare_models(root, controlnet=controlnet)
    server = ComfyServer(
        path,
        python=sys.executable,
        cpu=cpu,
        front_end_root=front_end_root,
        extra_model_paths=[yaml_path],
        startup_timeout=STARTUP_TIMEOUT,
        env=env,
    )
    server.start()
    return TestServer(server, root)


_SHARED: dict[str, TestServer] = {}


def stop_shared_server() -> None:
    """Stop the session's shared server now, if one runs (later callers would start a new one)."""
    server = _SHARED.pop("server", None)
    if server is not None:
        server.stop()


def shared_test_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> TestServer:
    """One server for the whole pytest session (stopped when the session ends).

    Test modules call this from their own fixtures; the module-level cache makes every caller
    share one process (a server start costs ~15 s on 2 CPU cores).
    """
    if "server" not in _SHARED:
        server = start_test_server(tmp_path_factory.mktemp("comfy_server"))

        request.config.add_cleanup(stop_shared_server)
        _SHARED["server"] = server
    return _SHARED["server"]
