"""A stand-in ComfyUI on the loopback for ``oir-edit`` tests: real HTTP and websocket (aiohttp, in a
thread), answers chosen by the test.

By default it answers like a ComfyUI that runs every edit at once: ``/system_stats``, an
``/object_info/<class>`` for every class (offering checkpoint :data:`CHECKPOINT` and scorer
:data:`SCORER`), ``/upload/image``, ``/prompt`` (id :data:`PROMPT_ID`), a finished ``/history``
entry with the outputs the pack's nodes send (an edited image, one score table per pair) and
``/view`` PNGs. ``answers`` replaces one route's answer (``status, body``, or a callable taking
the request) to play a misbehaving server; ``messages`` are sent on every ``/ws`` connection.
Every request is recorded in :attr:`StubComfy.calls` (``"POST /prompt"``, ...).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web
from PIL import Image

CHECKPOINT = "sd15.safetensors"
SCORER = "clip-b16"
PROMPT_ID = "p1"

Answer = tuple[int, bytes] | Callable[[web.Request], Any]


def png(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, format="PNG")
    return buffer.getvalue()


def history_entry(workflow: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A finished prompt's history entry as ComfyUI and the pack's nodes write it for ``workflow``."""
    classes = (
        "SaveImage",
        "OIREditPair",
        "OIRMaskMetricScorer",
        "OIRParallelStepSearch",
        "OIRObjectReassembly",
        "OIREditRegionScore",
    )
    of = {cls: [i for i, n in workflow.items() if n["class_type"] == cls] for cls in classes}
    pairs = len(of["OIREditPair"])
    image = {"filename": "edited.png", "subfolder": "", "type": "output"}
    outputs: dict[str, Any] = {node: {"images": [image]} for node in of["SaveImage"]}
    outputs[of["OIRMaskMetricScorer"][0]] = {
        "oir_scores": [
            {"pair": k, "source": f"s{k}", "target": f"t{k}", "chosen": 3, "searched": 3, "override": None,
             "table": {"steps": [1, 2, 3]}}
            for k in range(pairs)
        ]
    }  # fmt: skip
    for node in of["OIREditRegionScore"]:
        outputs[node] = {
            "oir_region_scores": [
                {
                    "pair": k,
                    "source": f"s{k}",
                    "target": f"t{k}",
                    "score_text": f"t{k}",
                    "clip_score": 0.25 + k / 100,
                }
                for k in range(pairs)
            ]
        }
    outputs[of["OIRParallelStepSearch"][0]] = {"oir_stats": [{"rows": 10}], "oir_grid": []}
    outputs[of["OIRObjectReassembly"][0]] = {
        "oir_reassembly": [{"reassembly_step": 1, "pairs": [{"step": 3, "source": "search"}] * pairs}]
    }
    return {
        "prompt": [0, PROMPT_ID, workflow, {}, []],
        "outputs": outputs,
        "status": status or {"status_str": "success", "completed": True, "messages": []},
    }


class LoopbackApp:
    """An aiohttp application served on a free loopback port from a thread of its own."""

    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class StubComfy(LoopbackApp):
    """The stand-in server (see the module docstring); :meth:`stop` it when done."""

    def __init__(self, answers: dict[str, Answer] | None = None, messages: list[Any] | None = None) -> None:
        self.answers = dict(answers or {})
        self.messages = list(messages or [])
        self.calls: list[str] = []
        self.workflow: dict[str, Any] | None = None
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/system_stats", self._route("system_stats", self._system_stats))
        app.router.add_get("/object_info/{cls}", self._route("object_info", self._object_info))
        app.router.add_post("/upload/image", self._route("upload", self._upload))
        app.router.add_post("/prompt", self._route("prompt", self._prompt))
        app.router.add_get("/history/{id}", self._route("history", self._history))
        app.router.add_get("/view", self._route("view", lambda r: web.Response(body=png())))
        app.router.add_post("/queue", self._route("queue", lambda r: web.json_response({})))
        app.router.add_post("/interrupt", self._route("interrupt", lambda r: web.json_response({})))
        app.router.add_get("/ws", self._websocket)
        super().__init__(app)

    def _route(self, name: str, default: Callable[[web.Request], Any]) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.calls.append(f"{request.method} {request.path}")
            if request.path == "/prompt":
                self.workflow = (await request.json())["prompt"]
            answer = self.answers.get(name, default)
            if isinstance(answer, tuple):
                return web.Response(status=answer[0], body=answer[1])
            result = answer(request)
            return await result if asyncio.iscoroutine(result) else result

        return handle

    def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"system": {"comfyui_version": "stub", "python_version": "3.x", "pytorch_version": "none"},
             "devices": [{"name": "cpu", "type": "cpu"}]}
        )  # fmt: skip

    def _object_info(self, request: web.Request) -> web.Response:
        cls = request.match_info["cls"]
        required: dict[str, Any] = {}
        if cls == "CheckpointLoaderSimple":
            required["ckpt_name"] = [[CHECKPOINT], {}]
        if cls == "OIRLoadCLIPScorer":
            required["clip_name"] = ["COMBO", {"options": [SCORER]}]
        return web.json_response({cls: {"input": {"required": required}}})

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        image = form["image"]
        return web.json_response({"name": image.filename, "subfolder": form["subfolder"], "type": "input"})  # type: ignore[union-attr]

    def _prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"prompt_id": PROMPT_ID, "number": 0, "node_errors": {}})

    def _history(self, request: web.Request) -> web.Response:
        assert self.workflow is not None
        return web.json_response({PROMPT_ID: history_entry(self.workflow)})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        for message in self.messages:
            await socket.send_str(message if isinstance(message, str) else json.dumps(message))
        async for _ in socket:  # open like ComfyUI's until the client closes it
            pass
        return socket
