"""Unattended runs against a real ComfyUI: a stalling server never ends a batch or strands a job,
and a partial prompt costs no search.

- A small aiohttp proxy on 127.0.0.1 (:class:`StallingProxy`) stands in front of the test server and
  holds or drops chosen answers; ``oir_cli.cli.run_batch`` runs real cases through it.
- ``OIRTestWaitForFile`` (the test node pack) holds ComfyUI's queue until the test releases it, so a
  prompt is provably still pending when the client gives up on it; nothing depends on timing.
- The shipped two-object workflow with OIR Mask Metric Scorer's ``scorer`` link removed is accepted
  by ComfyUI's partial-run rule (the scorer's branch is dropped); OIR's sampling nodes must then
  refuse before their first model call.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession, web
from comfy_server import (
    RUN_TIMEOUT,
    TEST_LOADER,
    TINY_CHECKPOINT,
    TestServer,
    shared_test_server,
    write_test_images,
)
from test_server import api_twin, assert_succeeded, tiny_workflow

from oir_cli.cli import EditRunner, run_batch
from oir_cli.client import ComfyClient
from oir_cli.discovery import discover_cases

REQUEST_TIMEOUT = 2.0
"""Seconds one try of one request may take through the proxy (the client's default is 30)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


class StallingProxy:
    """Forwards every request to ComfyUI, except ``GET /history/<first prompt>``: its answers follow
    ``plan`` (``"stall"``: never answered, ``"drop"``: connection closed; then answered), or are
    never given with ``stall_forever``. The first prompt is the first one queued through the proxy.
    ``on_cancel`` runs when the client deletes the first prompt from the queue. ``/ws`` is refused
    (the client then polls ``/history``)."""

    def __init__(
        self,
        upstream: str,
        plan: list[str] | None = None,
        stall_forever: bool = False,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self.upstream = upstream
        self.plan = list(plan or [])
        self.stall_forever = stall_forever
        self.on_cancel = on_cancel
        self.first_prompt: str | None = None
        self.seen: list[tuple[str, str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the proxy did not start"

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self.release = asyncio.Event()
        self.session = ClientSession()
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            payload = json.loads(body) if body and request.content_type == "application/json" else None
        except json.JSONDecodeError:
            payload = None
        self.seen.append((request.method, request.path, payload))
        if request.path == "/ws":
            raise web.HTTPNotFound()
        if request.path == f"/history/{self.first_prompt}":
            action = "stall" if self.stall_forever else (self.plan.pop(0) if self.plan else "answer")
            if action == "stall":
                await self.release.wait()  # until the proxy stops; the client has given up by then
                raise web.HTTPServiceUnavailable()
            if action == "drop":
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
        if (
            request.path == "/queue"
            and isinstance(payload, dict)
            and self.first_prompt in payload.get("delete", [])
        ):
            if self.on_cancel is not None:
                self.on_cancel()
        headers = (
            {"Content-Type": request.headers["Content-Type"]} if "Content-Type" in request.headers else {}
        )
        async with self.session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            data = await answer.read()
            if request.path == "/prompt" and self.first_prompt is None and answer.status == 200:
                self.first_prompt = str(json.loads(data)["prompt_id"])
            kind = answer.headers.get("Content-Type", "application/octet-stream")
            return web.Response(status=answer.status, body=data, headers={"Content-Type": kind})

    def requests_for(self, prompt_id: str) -> list[tuple[str, str, Any]]:
        return [entry for entry in self.seen if prompt_id in json.dumps(entry)]

    def stop(self) -> None:
        async def shutdown() -> None:
            self.release.set()
            await self.session.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def _batch_folder(root: Path, names: list[str]) -> Path:
    """Spec files for tiny two-object edits (folders built here)."""
    images = write_test_images(root / "images")
    folder = root / "specs"
    folder.mkdir()
    for name in names:
        for role in ("image", "dog", "gift"):
            shutil.copy(images[role], folder / f"{name}_{role}.png")
        spec = {
            "image": f"{name}_image.png",
            "prompt": "a dog sitting next to a gift",
            "edits": [f"dog=cat:{name}_dog.png", f"gift=cake:{name}_gift.png"],
            "checkpoint": TINY_CHECKPOINT,
            "steps": 5,
            "reassembly_step": 2,
            "reinversion_steps": 2,
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return folder


def _run_through(proxy: StallingProxy, folder: Path, out: Path) -> list[Any]:
    client = ComfyClient(proxy.url, timeout=REQUEST_TIMEOUT)
    runner = EditRunner(client, model_loader=TEST_LOADER, timeout=RUN_TIMEOUT, stream=None)
    return run_batch(discover_cases(folder, exclude=[out]), out, lambda: runner, stream=None)


def test_a_slow_answer_and_a_dropped_connection_do_not_end_the_batch(
    server: TestServer, tmp_path: Path
) -> None:
    folder = _batch_folder(tmp_path, ["first", "second"])
    proxy = StallingProxy(server.url, plan=["stall", "drop"])
    try:
        results = _run_through(proxy, folder, tmp_path / "out")
    finally:
        proxy.stop()
    assert [(r.name, r.status, r.error) for r in results] == [
        ("first", "done", None),
        ("second", "done", None),
    ]
    assert proxy.first_prompt is not None
    polls = [e for e in proxy.requests_for(proxy.first_prompt) if e[1].startswith("/history/")]
    assert len(polls) >= 3  # held, dropped, then answered: the client retried
    summary = json.loads((tmp_path / "out" / "batch_report.json").read_text(encoding="utf-8"))
    assert summary["counts"] == {"done": 2, "skipped": 0, "failed": 0}


def test_giving_up_on_a_case_cancels_its_own_prompt_and_the_batch_goes_on(
    server: TestServer, tmp_path: Path
) -> None:
    folder = _batch_folder(tmp_path, ["first", "second"])
    release = tmp_path / "release"
    # ComfyUI's queue is held by another client's prompt until the client cancels the first case, so
    # that case's prompt is still pending then; the cancel must remove it and must not interrupt the
    # prompt that is running.
    blocker = server.client.post_json(
        "/prompt",
        {
            "prompt": {
                "1": {"class_type": "OIRTestWaitForFile", "inputs": {"path": str(release), "timeout": 600}}
            },
            "client_id": "someone-else",
        },
    )["prompt_id"]
    proxy = StallingProxy(server.url, stall_forever=True, on_cancel=release.touch)
    try:
        results = _run_through(proxy, folder, tmp_path / "out")
    finally:
        release.touch()
        proxy.stop()
    first = proxy.first_prompt
    assert first is not None
    assert [(r.name, r.status) for r in results] == [("first", "failed"), ("second", "done")]
    assert "cannot reach ComfyUI" in (results[0].error or "") and "no answer within the timeout" in (
        results[0].error or ""
    )
    assert "no answer within the timeout" in (tmp_path / "out" / "first" / "error.txt").read_text()
    sent = proxy.requests_for(first)
    assert ("POST", "/queue", {"delete": [first]}) in sent and (
        "POST",
        "/interrupt",
        {"prompt_id": first},
    ) in sent
    # the first case never ran: removed while pending, not in the queue, no history
    assert server.client.history(first) is None
    queue = server.client.get_json("/queue")
    assert first not in json.dumps(queue["queue_running"] + queue["queue_pending"])
    assert_succeeded(server.client.wait(blocker, None, 120, poll_every=0.5))  # not interrupted
    listed = json.loads((tmp_path / "out" / "batch_report.json").read_text(encoding="utf-8"))["cases"]
    assert [(c["name"], c["status"]) for c in listed] == [("first", "failed"), ("second", "done")]


PARTIAL_STEPS = 4
"""Steps no other test uses, so the inversion is not cached from another test's run."""


def _partial_graph(server: TestServer, tmp_path: Path, prefix: str) -> dict[str, Any]:
    uploads = {role: server.upload(path) for role, path in write_test_images(tmp_path / "images").items()}
    graph = tiny_workflow(api_twin("oir_two_object_edit"), uploads, prefix)
    for node in graph.values():
        if node["class_type"] == "OIRDDIMInversion":
            node["inputs"]["steps"] = PARTIAL_STEPS
    return graph


def _node(graph: dict[str, Any], class_type: str) -> str:
    return next(i for i, n in graph.items() if n["class_type"] == class_type)


def _queue_raw(server: TestServer, graph: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """Queue ``graph`` as any API client does (partial prompts kept); the answer, history and events."""
    client_id = uuid.uuid4().hex
    stream = server.client.events(client_id)
    assert stream is not None
    try:
        answer = server.client.post_json("/prompt", {"prompt": graph, "client_id": client_id})
        events: list[Any] = []
        entry = server.client.wait(
            answer["prompt_id"], stream, RUN_TIMEOUT, on_event=lambda kind, data: events.append((kind, data))
        )
    finally:
        stream.close()
    return answer, entry, events


def _without_scorer_link(graph: dict[str, Any]) -> dict[str, Any]:
    partial = json.loads(json.dumps(graph))
    del partial[_node(partial, "OIRMaskMetricScorer")]["inputs"]["scorer"]
    return partial


def _assert_refused_by(entry: dict[str, Any], events: list[Any], node: str, graph: dict[str, Any]) -> None:
    status = entry["status"]
    assert status["status_str"] == "error", status
    ((_, error),) = [m for m in status["messages"] if m[0] == "execution_error"]
    assert error["node_id"] == node, error
    assert "none of the outputs that use its results will run" in error["exception_message"]
    sampling = {_node(graph, "OIRDDIMInversion"), _node(graph, "OIRParallelStepSearch")}
    assert not [
        d for kind, d in events if kind == "progress" and str(d.get("node")) in sampling
    ]  # no model call
    assert _node(graph, "OIRParallelStepSearch") not in entry.get("outputs", {})


def test_a_partial_prompt_runs_no_inversion_and_no_search(server: TestServer, tmp_path: Path) -> None:
    graph = _without_scorer_link(_partial_graph(server, tmp_path, "oir-tests/partial-fresh"))
    answer, entry, events = _queue_raw(server, graph)
    assert _node(graph, "OIRMaskMetricScorer") in answer["node_errors"]  # ComfyUI dropped that branch
    _assert_refused_by(entry, events, _node(graph, "OIRDDIMInversion"), graph)


def test_a_partial_prompt_on_a_cached_inversion_runs_no_search(server: TestServer, tmp_path: Path) -> None:
    graph = _partial_graph(server, tmp_path, "oir-tests/partial-cached")
    complete, _, _ = _queue_raw(server, graph)  # the whole edit: its inversion is now cached
    assert not complete["node_errors"]
    partial = _without_scorer_link(graph)
    partial[_node(partial, "OIRParallelStepSearch")]["inputs"]["cfg"] = 6.5  # the search is not cached
    answer, entry, events = _queue_raw(server, partial)
    assert answer["node_errors"]
    _assert_refused_by(entry, events, _node(partial, "OIRParallelStepSearch"), partial)
