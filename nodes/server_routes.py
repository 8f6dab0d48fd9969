"""Routes the pack adds to ComfyUI's own aiohttp server (``PromptServer.instance.routes``).

The pack serves its template pictures (``template_thumbnails.py``) and its identity
(``pack_info.py``) this way. Outside a running server (unit tests, scripts, the benchmarks) there is
no ``PromptServer`` instance, and registering is skipped rather than failing the import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any


def register_on_prompt_server(add_routes: Callable[[Any], None], what: str) -> bool:
    """Call ``add_routes(routes)`` with ComfyUI's ``RouteTableDef``.

    Returns ``False`` (with a log line naming ``what`` when aiohttp refused the route) when there is
    no server, or when aiohttp refuses the route: a path it cannot parse (``ValueError``), or one
    added twice because the pack was imported again (``RuntimeError``). Never raises: a route the
    pack cannot serve must not stop ComfyUI from loading the nodes.
    """
    try:
        from server import PromptServer
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None or not hasattr(instance, "routes"):
        return False
    try:
        add_routes(instance.routes)
    except (ValueError, RuntimeError) as error:
        logging.warning("OIR: %s not served (%s)", what, error)
        return False
    return True
