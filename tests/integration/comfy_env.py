"""Finding and preparing a ComfyUI checkout for the integration tests, and loading the pack.

Nothing here imports ``comfy`` at module level: :func:`unavailable_reason` decides whether the
integration tests can run at all, :func:`setup_comfyui` puts ComfyUI on ``sys.path`` in CPU mode,
and :func:`load_pack` imports this repository the way ComfyUI imports a custom node folder.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The pack's folder (the repository root). Never put on ``sys.path``: ``nodes/`` would shadow
ComfyUI's own ``nodes.py``."""

PACK_NAME = "oir_pack_under_test"
"""The package name the pack is imported under (ComfyUI uses the folder name; the checkout's
folder name could clash with ComfyUI's top-level modules, e.g. ``main``)."""

REQUIRED_MODULES = (
    "torch",
    "torchvision",
    "torchsde",
    "numpy",
    "einops",
    "transformers",
    "tokenizers",
    "safetensors",
    "scipy",
    "psutil",
    "yaml",
    "PIL",
    "aiohttp",
    "av",
    "tqdm",
)
"""Import names of ComfyUI's hard requirements for ``comfy.sd`` / ``comfy_api`` on CPU."""

MARKER_FILES = ("main.py", "nodes.py", "comfy/samplers.py", "comfy/model_management.py")


def comfyui_path() -> Path | None:
    """``$COMFYUI_PATH`` as a resolved path, or ``None`` when unset or empty."""
    value = os.environ.get("COMFYUI_PATH", "").strip()
    return Path(value).expanduser().resolve() if value else None


def unavailable_reason() -> str | None:
    """Why the integration tests cannot run here, or ``None`` when they can."""
    path = comfyui_path()
    if path is None:
        return "COMFYUI_PATH is not set (point it at a ComfyUI checkout to run the integration tests)"
    missing = [m for m in MARKER_FILES if not (path / m).is_file()]
    if missing:
        return f"COMFYUI_PATH={path} is not a ComfyUI checkout (missing {', '.join(missing)})"
    absent = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        return f"ComfyUI's requirements are not importable in this Python ({', '.join(absent)} missing)"
    return None


def host_fingerprint(path: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under the host checkout (symlinks by their target).

    Compared before and after the suite to prove the tests never write into the host: no
    ``__pycache__``, preview images, user settings or database appear and no file changes.
    """
    prints: dict[str, str] = {}
    for current, folders, files in os.walk(path):
        folders.sort()
        for name in sorted(files):
            file = Path(current) / name
            relative = file.relative_to(path).as_posix()
            if file.is_symlink():
                prints[relative] = "link:" + os.readlink(file)
            else:
                prints[relative] = hashlib.sha256(file.read_bytes()).hexdigest()
        for name in folders:
            prints.setdefault(Path(current, name).relative_to(path).as_posix() + "/", "dir")
    return prints


HOST_WORK_DIR = Path(tempfile.mkdtemp(prefix="oir-tests-comfyui-"))
"""The input/output/temp/user folders the in-process ComfyUI uses instead of the checkout's own."""


def redirect_host_folders(work: Path = HOST_WORK_DIR) -> None:
    """Point ComfyUI's input, output, temp and user folders at ``work`` (never the checkout)."""
    import folder_paths

    for name, setter in (
        ("input", folder_paths.set_input_directory),
        ("output", folder_paths.set_output_directory),
        ("temp", folder_paths.set_temp_directory),
        ("user", folder_paths.set_user_directory),
    ):
        (work / name).mkdir(parents=True, exist_ok=True)
        setter(str(work / name))


def setup_comfyui(path: Path) -> None:
    """Make ``import comfy`` work for ComfyUI at ``path``, on CPU, without writing into it.

    Puts ``path`` first on ``sys.path`` (ahead of the repository root that ``python -m pytest``
    adds, so ComfyUI's ``nodes.py`` wins over the pack's ``nodes/`` folder) and sets
    ``comfy.cli_args.args.cpu = True`` before ``comfy.model_management`` is imported (it would
    otherwise query CUDA). Raises ``RuntimeError`` if ``comfy.model_management`` was already
    imported without CPU mode. Bytecode caching is switched off (in this process and the servers
    it starts) so importing the host leaves no ``__pycache__`` in it, and ComfyUI's input, output,
    temp and user folders are moved to :data:`HOST_WORK_DIR`.
    """
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    entry = str(path)
    sys.path[:] = [e for e in sys.path if e != entry]
    sys.path.insert(0, entry)
    stray = sys.modules.get("nodes")
    if stray is not None and not str(getattr(stray, "__file__", "") or "").startswith(entry):
        del sys.modules["nodes"]  # the pack's nodes/ imported as a top-level package by mistake
    import comfy.cli_args  # parses an empty argv unless comfy.options enabled parsing

    comfy.cli_args.args.cpu = True
    already = "comfy.model_management" in sys.modules
    import comfy.model_management

    if already and not comfy.model_management.cpu_state == comfy.model_management.CPUState.CPU:
        raise RuntimeError("comfy.model_management was imported before CPU mode could be set")
    redirect_host_folders()


def load_pack(name: str = PACK_NAME, repo: Path = REPO_ROOT) -> ModuleType:
    """Import the repository as a package, as ComfyUI's ``load_custom_node`` does.

    ``spec_from_file_location(name, repo/__init__.py, submodule_search_locations=[repo])``,
    registered in ``sys.modules`` before executing it, so relative imports such as
    ``from ..oir_core.host import Stage`` inside ``nodes/`` resolve. When the root
    ``__init__.py`` does not exist yet, an empty package with the same search path is used.
    """
    if name in sys.modules:
        return sys.modules[name]
    init = repo / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(repo)])
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(repo)]
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        if spec.loader is not None:
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_pack_module(dotted: str, name: str = PACK_NAME) -> ModuleType:
    """Import ``<pack>.<dotted>`` (e.g. ``"nodes.comfy_host"``) after :func:`load_pack`."""
    load_pack(name)
    return importlib.import_module(f"{name}.{dotted}")
