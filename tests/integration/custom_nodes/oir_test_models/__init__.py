"""Test-only ComfyUI node pack: loaders of the tiny models of ``tests/integration/tiny_models.py``.

Loaded by the headless-server tests (``tests/integration/comfy_server.py`` registers this folder's
parent as a custom-nodes folder). Real checkpoints are far too slow on CPU and tiny ones are not
auto-detected by CheckpointLoaderSimple (its SD15 detection needs full-size channel counts), so
``OIRTestTinyCheckpointLoader`` stands in for it: same ``ckpt_name`` input, same MODEL/CLIP/VAE
outputs. LoRA and ControlNet need no stand-in: ``tiny_files.py`` writes real tiny files that
ComfyUI's own LoraLoader and ControlNetLoader load.

V1 nodes keep this pack independent of the V3 API version under test.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

_HERE = Path(__file__).resolve().parent


def _load_sibling(module_name: str, path: Path) -> ModuleType:
    """Import a helper module of the test suite by path (the tests folder is not a package)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def tiny_models() -> ModuleType:
    """``tests/integration/tiny_models.py`` (imports comfy, so only inside ComfyUI)."""
    return _load_sibling("oir_test_tiny_models", _HERE.parents[1] / "tiny_models.py")


CHECKPOINTS: dict[str, tuple[str, str, int]] = {
    "tiny-sd15": ("sd15", "eps", 0),
    "tiny-sd15-v": ("sd15", "v", 1),
    "tiny-sd15-flow": ("sd15", "flow", 2),
    "tiny-sdxl": ("sdxl", "eps", 0),
    "tiny-sd3": ("sd3", "flow", 0),
    "tiny-flux": ("flux", "flow", 0),
}
"""Checkpoint name -> (family, model type, weight seed); seeds match the pytest fixtures. SD1.5 takes
the model type given; SDXL, SD3 and Flux their own (``tiny_models.build_tiny_family_model``)."""

CLIP_SEED, VAE_SEED = 3, 4

HIDE_CHECKPOINTS_ENV = "OIR_TEST_HIDE_CHECKPOINTS"
"""Comma-separated checkpoint names the loaders do not offer in this server process: a server
started with it set stands for one whose models folder lacks those checkpoints."""


def offered_checkpoints() -> list[str]:
    """:data:`CHECKPOINTS`' names minus those hidden by :data:`HIDE_CHECKPOINTS_ENV`."""
    import os

    hidden = {name.strip() for name in os.environ.get(HIDE_CHECKPOINTS_ENV, "").split(",")}
    return [name for name in CHECKPOINTS if name not in hidden]


class OIRTestTinyCheckpointLoader:
    """Tiny MODEL, CLIP and VAE (SD1.5, SDXL, SD3 or Flux architecture) with deterministic random weights."""

    _cache: ClassVar[dict[str, tuple[Any, Any, Any]]] = {}

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"ckpt_name": (offered_checkpoints(), {"tooltip": "Which tiny model."})}}

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"
    CATEGORY = "OIR/testing"
    DESCRIPTION = "Test only: tiny models standing in for CheckpointLoaderSimple."

    def load(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        if ckpt_name not in self._cache:
            builders = tiny_models()
            family, model_type, seed = CHECKPOINTS[ckpt_name]
            model = (
                builders.build_tiny_unet(model_type, seed=seed)
                if family == "sd15"
                else builders.build_tiny_family_model(family, seed=seed)
            )
            self._cache[ckpt_name] = (
                model,
                builders.build_tiny_family_clip(family, seed=CLIP_SEED),
                builders.build_tiny_family_vae(family, seed=VAE_SEED),
            )
        return self._cache[ckpt_name]


class OIRTestStallingCheckpointLoader(OIRTestTinyCheckpointLoader):
    """Test only: a loader that never finishes (until interrupted, or :data:`STALL_LIMIT_S`), so a
    test can act on a server that is certainly in the middle of an edit (kill it, time it out)."""

    DESCRIPTION = "Test only: stalls until interrupted, standing in for a long edit."

    def load(self, ckpt_name: str) -> tuple[Any, Any, Any]:
        import time

        import comfy.model_management

        deadline = time.monotonic() + STALL_LIMIT_S
        while time.monotonic() < deadline:
            comfy.model_management.throw_exception_if_processing_interrupted()
            time.sleep(0.05)
        raise RuntimeError(f"OIRTestStallingCheckpointLoader stalled for {STALL_LIMIT_S} s")


STALL_LIMIT_S = 300.0
"""A stalled prompt gives up by itself after this long (a test that forgot it cannot block a server)."""


def memory_report() -> dict[str, Any]:
    """What ComfyUI's model management holds, and how many scorer CLIPs are still alive anywhere.

    ``loaded``: the class name of each model in ``current_loaded_models`` (``ScorerWeights`` is the
    OIR scorer); ``scorer_clips``: live ``ClipModel`` objects after a garbage collection (the node
    cache, or anything else, still holding the scorer's weights in memory).
    """
    import gc

    import comfy.model_management

    gc.collect()
    loaded = [
        type(entry.model.model).__name__
        for entry in comfy.model_management.current_loaded_models
        if entry.model is not None
    ]
    clips = [
        obj for obj in gc.get_objects() if type(obj).__name__ in ("TransformersClipModel", "OpenClipModel")
    ]
    return {"loaded": loaded, "scorer_clips": len(clips)}


LIVE_KINDS: dict[str, tuple[str, ...]] = {
    "trajectories": ("oir_core.inversion.InversionTrajectory",),
    "candidate_caches": (
        "oir_core.candidates.CandidateSet",
        "oir_core.search.SearchResult",
        "oir_core.search.CoarseToFineRun",
        "nodes.payloads.CandidateBundle",
        "nodes.payloads.SearchRecipe",
        "nodes.payloads.ChosenSteps",
    ),
    "scorers": (
        "oir_core.clip_scorer.ClipScorer",
        "oir_core.clip_backends.TransformersClipModel",
        "oir_core.clip_backends.OpenClipModel",
        "oir_core.metric.SearchMetric",
        "nodes.scoring_nodes.ScorerWeights",
    ),
    "hosts": (
        "nodes.comfy_host.ComfyHost",
        "nodes.comfy_host.GuidedCFGGuider",
        "nodes.comfy_host.StageSampler",
        "nodes.progress.StageProgress",
    ),
}
"""Kinds of pack objects :func:`live_objects` counts: ``module.Class`` relative to the pack's package
(ComfyUI imports the pack as a package named after its folder, so ``<pack>.oir_core.inversion``)."""


def _pack_prefixes() -> list[str]:
    """Module-name prefixes of the loaded OIR pack (``<pack>.`` for each package holding ``oir_core``),
    and ``""`` for a plain ``oir_core`` on ``sys.path``."""
    prefixes = {name[: -len("oir_core")] for name in list(sys.modules) if name.endswith(".oir_core")}
    if "oir_core" in sys.modules:
        prefixes.add("")
    return sorted(prefixes)


def _held_tensors(roots: list[Any], pack_modules: tuple[str, ...]) -> dict[int, Any]:
    """Tensors reachable from ``roots`` through pack objects, containers and torch modules
    (``id -> tensor``). Foreign objects (a ComfyUI ModelPatcher, a model) are not entered: their
    tensors belong to ComfyUI's model management, which ``POST /free`` empties on its own."""
    import gc

    import torch

    found: dict[int, Any] = {}
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if issubclass(type(obj), torch.Tensor):
            found[id(obj)] = obj
            continue
        module = getattr(type(obj), "__module__", None)
        enter = (
            isinstance(obj, (dict, list, tuple, set, frozenset, torch.nn.Module))
            or (isinstance(module, str) and module.startswith(pack_modules))
            or type(obj).__name__ in ("partial", "mappingproxy")
        )
        if enter:
            stack.extend(gc.get_referents(obj))
    return found


def live_objects() -> dict[str, Any]:
    """After a garbage collection: the live objects of the pack's classes, by kind, and what they hold.

    ``counts``: per kind of :data:`LIVE_KINDS`, the live objects; ``by_class``: every live instance of
    any class defined in the pack, by ``module.Class`` (pack-relative); ``held_tensors`` /
    ``held_bytes``: the distinct tensors (and their storage bytes) reachable from those objects;
    ``module_tensors``: tensors reachable from the pack modules' globals (a module-level cache);
    ``gc_tensors``: the live ``torch.Tensor`` objects the garbage collector tracks (context only).
    """
    import gc

    import torch

    gc.collect()
    prefixes = _pack_prefixes()
    pack_modules = tuple(f"{prefix}{package}" for prefix in prefixes for package in ("oir_core", "nodes"))
    by_class: dict[str, int] = {}
    pack_objects: list[Any] = []
    gc_tensors = 0
    for obj in gc.get_objects():
        cls = type(obj)
        if issubclass(cls, torch.Tensor):  # type(), not isinstance(): no __class__ lookups on proxies
            gc_tensors += 1
            continue
        module = getattr(cls, "__module__", None)  # a descriptor on some C types
        if not isinstance(module, str) or not module.startswith(pack_modules) or isinstance(obj, type):
            continue
        prefix = next(p for p in prefixes if module.startswith(p))
        key = f"{module[len(prefix) :]}.{cls.__qualname__}"
        by_class[key] = by_class.get(key, 0) + 1
        pack_objects.append(obj)
    counts = {kind: sum(by_class.get(name, 0) for name in names) for kind, names in LIVE_KINDS.items()}
    held = _held_tensors(pack_objects, pack_modules)
    globals_roots = [
        value
        for name, module in list(sys.modules.items())
        if name.startswith(pack_modules) and module is not None
        for value in vars(module).values()
        if isinstance(value, (dict, list, set, tuple, torch.Tensor))
    ]
    module_tensors = _held_tensors(globals_roots, pack_modules)
    del pack_objects, globals_roots

    def nbytes(tensors: dict[int, Any]) -> int:
        storages = {}
        for tensor in tensors.values():
            try:
                storage = tensor.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # meta / sparse tensors
                continue
        return sum(storages.values())

    return {
        "pack_prefixes": prefixes,
        "counts": counts,
        "by_class": dict(sorted(by_class.items())),
        "held_tensors": len(held),
        "held_bytes": nbytes(held),
        "module_tensors": len(module_tensors),
        "module_bytes": nbytes(module_tensors),
        "gc_tensors": gc_tensors,
        "loaded_models": len(__import__("comfy.model_management").model_management.current_loaded_models),
    }


def _register_routes() -> None:
    """``GET /oir_test/memory`` and ``GET /oir_test/live_objects`` (test only): :func:`memory_report`
    and :func:`live_objects` as JSON."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:  # imported outside a ComfyUI server (pytest in-process)
        return
    if getattr(PromptServer, "instance", None) is None:
        return

    @PromptServer.instance.routes.get("/oir_test/memory")
    async def memory(request: Any) -> Any:
        return web.json_response(memory_report())

    @PromptServer.instance.routes.get("/oir_test/live_objects")
    async def live(request: Any) -> Any:
        import traceback

        try:
            return web.json_response(live_objects())
        except Exception:  # the test reads why the probe failed
            return web.Response(status=500, text=traceback.format_exc())


_register_routes()


class OIRTestWaitForFile:
    """Holds ComfyUI's queue until ``path`` exists (a test's release signal), at most ``timeout`` s.

    Lets a test keep another prompt *pending* behind it for as long as it needs, with no timing. It
    honours an interrupt like any working node (between its checks), so a test sees whether a
    cancel meant for another prompt reached it.
    """

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"path": ("STRING", {}), "timeout": ("FLOAT", {"default": 300.0})}}

    @classmethod
    def IS_CHANGED(cls, **_: Any) -> float:
        return float("nan")  # never cached

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "wait"
    CATEGORY = "OIR/testing"

    def wait(self, path: str, timeout: float) -> dict[str, Any]:
        import time

        import comfy.model_management

        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            comfy.model_management.throw_exception_if_processing_interrupted()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear within {timeout} s")
            time.sleep(0.05)
        return {}


NODE_CLASS_MAPPINGS = {
    "OIRTestTinyCheckpointLoader": OIRTestTinyCheckpointLoader,
    "OIRTestStallingCheckpointLoader": OIRTestStallingCheckpointLoader,
    "OIRTestWaitForFile": OIRTestWaitForFile,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OIRTestTinyCheckpointLoader": "OIR Test: Tiny Checkpoint Loader",
    "OIRTestStallingCheckpointLoader": "OIR Test: Stalling Checkpoint Loader",
    "OIRTestWaitForFile": "OIR Test: Wait For File",
}
