"""The template cards' pictures on every host (ARCHITECTURE.md §9).

The frontend (1.27.10 to 1.58.1) asks for a custom pack's template thumbnail at
``/api/workflow_templates/<pack folder>/<name>.jpg``. ComfyUI 0.3.64 and 0.33.0 serve the pack's
``example_workflows`` folder statically there; newer hosts (0.38.x, ``app/custom_node_manager.py``)
serve ``.json`` files only, so the card would show its name without a picture. The pack therefore
registers its own route for its own ``.jpg`` thumbnails (registered before ComfyUI's generic
template route, and more specific, so it answers first on every host); anything else is left to
ComfyUI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .server_routes import register_on_prompt_server

EXAMPLE_WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows"


def thumbnail_names() -> set[str]:
    """The template names that have a ``.jpg`` card picture."""
    return {path.stem for path in EXAMPLE_WORKFLOWS.glob("*.jpg")}


def add_thumbnail_route(routes: Any, pack_folder: str) -> None:
    """Add ``GET /workflow_templates/<pack_folder>/{name}.jpg`` to an aiohttp ``RouteTableDef``.

    Only the shipped thumbnails are served (a name is looked up, never joined into a path); any
    other name is a 404.
    """
    from aiohttp import web

    @routes.get(f"/workflow_templates/{pack_folder}/{{name}}.jpg")
    async def oir_template_thumbnail(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in thumbnail_names():
            raise web.HTTPNotFound()
        return web.FileResponse(EXAMPLE_WORKFLOWS / f"{name}.jpg")


def register_thumbnail_route(pack_folder: str) -> bool:
    """Serve the thumbnails on ComfyUI's server; ``False`` when there is no server (tests, scripts)
    or the folder name cannot be a route (a log line, the cards then show names only)."""
    return register_on_prompt_server(
        lambda routes: add_thumbnail_route(routes, pack_folder),
        f"template thumbnails for folder {pack_folder!r}",
    )
