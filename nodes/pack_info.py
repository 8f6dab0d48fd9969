"""``GET /oir/pack``: which OIR pack a ComfyUI server runs, for clients that spread work over servers.

``oir-edit batch`` with several servers runs each case on whichever server is free, so every server
must run the same pack for a case to give the same result wherever it ran (ARCHITECTURE.md §8).
The answer names the release (``pyproject.toml``'s version) and a hash of the pack's Python code
(``nodes/``, ``oir_core/`` and the package ``__init__.py``), so two installs of one release with
local edits are told apart too.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from .server_routes import register_on_prompt_server

PACK_ROOT = Path(__file__).resolve().parents[1]
ROUTE = "/oir/pack"


def pack_version(root: Path = PACK_ROOT) -> str:
    """The ``version`` of the pack's ``pyproject.toml`` (``unknown`` without one)."""
    project = root / "pyproject.toml"
    text = project.read_text(encoding="utf-8") if project.is_file() else ""
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return match.group(1) if match else "unknown"


def code_hash(root: Path = PACK_ROOT) -> str:
    """SHA-256 (first 16 hex digits) over the pack's Python files, their relative paths included."""
    digest = hashlib.sha256()
    files = [
        root / "__init__.py",
        *sorted((root / "nodes").rglob("*.py")),
        *sorted((root / "oir_core").rglob("*.py")),
    ]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=1)
def pack_info() -> dict[str, Any]:
    """``{"name", "version", "code"}`` of this pack (computed once per server process)."""
    return {"name": "oir-edit", "version": pack_version(), "code": code_hash()}


def add_pack_route(routes: Any) -> None:
    """Add ``GET /oir/pack`` to an aiohttp ``RouteTableDef``."""
    from aiohttp import web

    @routes.get(ROUTE)
    async def oir_pack_info(request: web.Request) -> web.Response:
        return web.json_response(pack_info())


def register_pack_route() -> bool:
    """Serve ``GET /oir/pack`` on ComfyUI's server; ``False`` when there is none (tests, scripts)."""
    return register_on_prompt_server(add_pack_route, ROUTE)
