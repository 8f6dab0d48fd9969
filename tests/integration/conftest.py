"""Integration tests against a real ComfyUI checkout (ARCHITECTURE.md §7).

Run with ``COMFYUI_PATH=/path/to/ComfyUI python -m pytest tests/integration -q -rs``. Without a
usable checkout the whole folder is skipped, with the reason shown by ``-rs``.

When ComfyUI is available, this file puts it on ``sys.path`` in CPU mode, imports the pack the way
ComfyUI imports a custom node folder, and provides tiny deterministic models as fixtures.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import comfy_env
import pytest

# The helpers of tests/core (tiny_clip, engine_fixtures, ...) serve these tests too.
_CORE_HELPERS = str(Path(__file__).resolve().parents[1] / "core")
if _CORE_HELPERS not in sys.path:
    sys.path.insert(0, _CORE_HELPERS)

_REASON = comfy_env.unavailable_reason()
_PATH = comfy_env.comfyui_path()
_HOST_BEFORE: dict[str, str] = {}
if _REASON is None:
    assert _PATH is not None
    # Before anything imports the host: the suite must leave the checkout byte-for-byte unchanged.
    _HOST_BEFORE = comfy_env.host_fingerprint(_PATH)
    try:
        comfy_env.setup_comfyui(_PATH)
    except ModuleNotFoundError as exc:  # a requirement ComfyUI imports that find_spec did not cover
        _REASON = f"ComfyUI at {_PATH} cannot be imported ({exc})"


class _UnavailableModule(pytest.Module):
    """Stands in for a test module when ComfyUI is unavailable: reports it skipped, with the reason.

    (``pytest.skip(allow_module_level=True)`` in a conftest crashes pytest when that conftest is
    loaded as an initial one, e.g. ``pytest tests/integration``; this works for every invocation.)
    """

    def collect(self) -> Any:
        pytest.skip(f"integration tests skipped: {_REASON}")


def pytest_pycollect_makemodule(module_path: Any, parent: Any) -> Any:
    if _REASON is not None:
        return _UnavailableModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``runs_last`` (the host-untouched check) run after every other test."""
    last = [item for item in items if item.get_closest_marker("runs_last")]
    items[:] = [item for item in items if not item.get_closest_marker("runs_last")] + last


def pytest_report_header(config: pytest.Config) -> str:
    if _REASON is not None:
        return f"integration tests skipped: {_REASON}"
    return f"ComfyUI for integration tests: {_PATH} (CPU mode); pack imported as {comfy_env.PACK_NAME}"


def _tiny() -> ModuleType:
    """``tiny_models``, imported only once ComfyUI is set up (it imports ``comfy``)."""
    import tiny_models

    return tiny_models


@pytest.fixture(scope="session")
def host_before() -> tuple[Any, dict[str, str]]:
    """``(checkout path, fingerprint)`` of the host taken before the suite imported it."""
    return _PATH, _HOST_BEFORE


@pytest.fixture(scope="session")
def pack() -> ModuleType:
    """The repository imported as a ComfyUI custom-node package (``pack.nodes.comfy_host``, ...)."""
    module = comfy_env.load_pack()
    comfy_env.import_pack_module("nodes.comfy_host")
    return module


@pytest.fixture(scope="session")
def comfy_host(pack: ModuleType) -> ModuleType:
    """The ``nodes.comfy_host`` module of the pack."""
    return comfy_env.import_pack_module("nodes.comfy_host")


@pytest.fixture(scope="session")
def oir_host(pack: ModuleType) -> ModuleType:
    """The engine's ``oir_core.host`` module, as imported inside the pack."""
    return comfy_env.import_pack_module("oir_core.host")


@pytest.fixture(scope="session")
def nodes(pack: ModuleType) -> dict[str, Any]:
    """The pack's nodes by node id, as ComfyUI registers them."""
    module = sys.modules[f"{pack.__name__}.nodes"]
    return {cls.define_schema().node_id: cls for cls in module.NODES}


@pytest.fixture(scope="session")
def scorer_folder(tmp_path_factory: pytest.TempPathFactory, pack: ModuleType) -> str:
    """A tiny transformers CLIP inside a registered oir_clip folder; returns its listed name."""
    import folder_paths
    import tiny_clip

    root = tmp_path_factory.mktemp("oir_clip")
    tiny_clip.make_transformers_clip(root / "tiny-clip", image_size=32, patch_size=8)
    scoring = sys.modules[f"{pack.__name__}.nodes.scoring_nodes"]
    scoring.register_scorer_folder()
    paths, extensions = folder_paths.folder_names_and_paths[scoring.SCORER_FOLDER]
    folder_paths.folder_names_and_paths[scoring.SCORER_FOLDER] = ([*paths, str(root)], extensions)
    return "tiny-clip"


@pytest.fixture(scope="session")
def tiny_unet() -> Any:
    """An EPS tiny UNet ModelPatcher (shared: clone before patching)."""
    return _tiny().build_tiny_unet("eps", seed=0)


@pytest.fixture(scope="session")
def tiny_unet_v() -> Any:
    """A v-prediction tiny UNet ModelPatcher."""
    return _tiny().build_tiny_unet("v", seed=1)


@pytest.fixture(scope="session")
def tiny_unet_flow() -> Any:
    """A flow (``ModelType.FLOW``, CONST sampling) tiny UNet ModelPatcher."""
    return _tiny().build_tiny_unet("flow", seed=2)


@pytest.fixture(scope="session")
def tiny_clip() -> Any:
    """A tiny CLIP-L-architecture text encoder (hidden size 64)."""
    return _tiny().build_tiny_clip(seed=3)


@pytest.fixture(scope="session")
def tiny_vae() -> Any:
    """A tiny AutoencoderKL VAE (8x, 4 latent channels)."""
    return _tiny().build_tiny_vae(seed=4)


@pytest.fixture(scope="session")
def prompts(tiny_clip: Any) -> dict[str, list]:
    """CONDITIONINGs from the tiny CLIP: original, two guided prompts, target and a negative."""
    texts = {
        "original": "a dog sitting next to a gift",
        "guided_0": "a cat sitting next to a gift",
        "guided_1": "a dog sitting next to a cake",
        "target": "a cat sitting next to a cake",
        "negative": "blurry, low quality",
    }
    return {k: _tiny().encode_prompt(tiny_clip, v) for k, v in texts.items()}


@pytest.fixture(autouse=True)
def _no_stale_interrupt() -> Any:
    """Never let an interrupt flag leak between tests."""
    import comfy.model_management

    comfy.model_management.interrupt_current_processing(False)
    yield
    comfy.model_management.interrupt_current_processing(False)


@pytest.fixture
def latent_shape() -> tuple[int, int, int]:
    """The smallest latent the tiny UNet takes comfortably: ``(4, 8, 8)``."""
    return (_tiny().LATENT_CHANNELS, 8, 8)
