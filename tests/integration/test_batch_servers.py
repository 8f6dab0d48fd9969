"""``oir-edit batch`` over several real ComfyUI servers on the loopback (``oir_cli/scheduler.py``).

Servers: ``a`` (the session's shared test server), ``b`` (this module's), ``c`` (started with the
tiny SD1.5 checkpoint hidden: a server whose models folder lacks the checkpoint the cases use), and
per test one more where a test kills it. ``OIRTestWaitForFile`` (another client's prompt) holds a
server's queue, so oir-edit's prompt is provably pending there when the test kills the server or
presses Ctrl-C; nothing depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from aiohttp import ClientSession, web
from comfy_server import (
    STALLING_LOADER,
    TEST_LOADER,
    TINY_CHECKPOINT,
    TestServer,
    shared_test_server,
    start_test_server,
)
from PIL import Image
from test_cli import console_script

HIDE_ENV = "OIR_TEST_HIDE_CHECKPOINTS"  # custom_nodes/oir_test_models: names the loaders do not offer
WAIT = 300.0
"""Upper bound of every wait on a server or the command (never reached when things work)."""


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def bc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestServer, TestServer]]:
    """``b`` (like ``a``) and ``c`` (no tiny-sd15 checkpoint), started side by side."""
    with ThreadPoolExecutor(2) as pool:
        b_future = pool.submit(start_test_server, tmp_path_factory.mktemp("server_b"), controlnet=False)
        c_future = pool.submit(
            start_test_server,
            tmp_path_factory.mktemp("server_c"),
            controlnet=False,
            env={HIDE_ENV: TINY_CHECKPOINT},
        )
        b, c = b_future.result(), c_future.result()
    try:
        yield b, c
    finally:
        b.stop()
        c.stop()


def _wait_until(condition: Any, what: str, limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------------
# Cases and commands


def write_cases(root: Path, names: list[str]) -> Path:
    """One folder per case (``specs/<name>/<name>.yaml``), each with its own 64x64 picture, so no
    case reuses another's cached inversion; tiny settings (3 steps)."""
    specs = root / "specs"
    for index, name in enumerate(names):
        folder = specs / name
        folder.mkdir(parents=True)
        rng = np.random.default_rng(100 + index)
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(folder / "image.png")
        for object_name, (top, bottom, left, right) in {
            "dog": (8, 40, 4, 28),
            "gift": (24, 56, 36, 60),
        }.items():
            mask = np.zeros((64, 64), dtype="uint8")
            mask[top:bottom, left:right] = 255
            Image.fromarray(mask, mode="L").save(folder / f"{object_name}.png")
        spec = {
            "image": "image.png",
            "prompt": "a dog sitting next to a gift",
            "edits": ["dog=cat:dog.png", "gift=cake:gift.png"],
            "checkpoint": TINY_CHECKPOINT,
            "steps": 3,
            "reassembly_step": 1,
            "reinversion_steps": 1,
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return specs


def batch_command(specs: Path, out: Path, *servers: str, loader: str = TEST_LOADER) -> list[str]:
    flags = [flag for url in servers for flag in ("--server", url)]
    return [console_script(), "batch", str(specs), "--out", str(out), *flags, "--model-loader", loader]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT, check=False)


def batch_report(out: Path) -> dict[str, Any]:
    return json.loads((out / "batch_report.json").read_text(encoding="utf-8"))


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cases = {case["name"]: case for case in report["cases"]}
    assert len(cases) == len(report["cases"]), "a case is listed twice"
    return cases


def servers_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {server["url"]: server for server in report["servers"]}


def _closed_port() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


class OtherPackProxy:
    """Forwards every request to a server but answers ``/oir/pack`` with another code hash: a server
    running a different build of the pack."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self._start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(30)

    async def _start(self) -> None:
        self.session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        async with self.session.request(request.method, self.upstream + request.path_qs) as answer:
            body = await answer.read()
            if request.path == "/oir/pack":
                info = json.loads(body)
                info["code"] = "0" * len(info["code"])
                body = json.dumps(info).encode()
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self.session.close()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


# --------------------------------------------------------------------------------------------------
# Tests


def test_checks_leave_bad_servers_out_and_a_case_gives_the_same_files_on_any_server(
    a: TestServer, bc: tuple[TestServer, TestServer], tmp_path: Path
) -> None:
    b, c = bc
    names = ["one", "two", "three", "four"]
    specs = write_cases(tmp_path, names)
    out = tmp_path / "out"
    proxy = OtherPackProxy(b.url)
    closed = _closed_port()
    listed = tmp_path / "servers.txt"
    listed.write_text(f"# more servers\n{c.url}\n\n{proxy.url}   # another build of the pack\n{closed}\n")
    try:
        result = run([*batch_command(specs, out, a.url, b.url), "--servers", str(listed)])
    finally:
        proxy.stop()
    assert result.returncode == 0, result.stderr
    report = batch_report(out)
    assert report["counts"] == {"done": 4, "skipped": 0, "failed": 0}
    servers = servers_of(report)
    assert servers[a.url]["status"] == servers[b.url]["status"] == "ready"
    assert servers[c.url]["status"] == "left out"
    assert f"'{TINY_CHECKPOINT}' is not offered" in servers[c.url]["reason"]  # names the missing checkpoint
    assert servers[proxy.url]["status"] == "left out" and "OIR pack" in servers[proxy.url]["reason"]
    assert servers[closed]["status"] == "left out" and "cannot reach ComfyUI" in servers[closed]["reason"]
    assert f"server {c.url} left out" in result.stderr
    cases = by_name(report)
    assert set(cases) == set(names)
    assert all(case["tries"] == 1 and case["server"] in (a.url, b.url) for case in cases.values())
    assert sum(s["cases_done"] for s in servers.values()) == 4
    for name, case in cases.items():
        assert json.loads((out / name / "report.json").read_text())["server"]["url"] == case["server"]

    # One case per server that ran any, run again alone on the other server: the same files.
    other = {a.url: b.url, b.url: a.url}
    compared = {case["server"]: name for name, case in cases.items()}
    for first_server, name in compared.items():
        again = tmp_path / f"again_{name}"
        alone = run(batch_command(specs / name, again, other[first_server]))
        assert alone.returncode == 0, alone.stderr
        first_report = json.loads((out / name / "report.json").read_text())
        second_report = json.loads((again / name / "report.json").read_text())
        assert second_report["server"]["url"] == other[first_server] != first_report["server"]["url"]
        pictures = sorted(p.name for p in (out / name).glob("*.png"))
        assert pictures == sorted(p.name for p in (again / name).glob("*.png")) and "edited.png" in pictures
        for picture in pictures:
            assert (out / name / picture).read_bytes() == (again / name / picture).read_bytes(), picture
        for key in ("chosen_steps", "pairs", "scores", "prompts", "workflow", "split"):
            assert first_report[key] == second_report[key], key


def test_a_server_killed_mid_case_has_that_case_finished_on_another(a: TestServer, tmp_path: Path) -> None:
    doomed = start_test_server(tmp_path / "server_d", controlnet=False)
    names = ["k1", "k2", "k3"]
    specs = write_cases(tmp_path, names)
    out = tmp_path / "out"
    try:
        blocker = doomed.hold_queue(tmp_path / "never")
        command = subprocess.Popen(
            batch_command(specs, out, doomed.url, a.url), stderr=subprocess.PIPE, text=True
        )
        try:
            # oir-edit's prompt waits on the doomed server behind the blocker: that server is mid-case
            _wait_until(lambda: [p for p in doomed.queue_ids("queue_pending") if p != blocker], "a case on d")
            assert doomed.server.process is not None
            os.killpg(doomed.server.process.pid, signal.SIGKILL)
            _, err = command.communicate(timeout=WAIT)
        finally:
            if command.poll() is None:
                command.kill()
    finally:
        doomed.stop()
    assert command.returncode == 0, err
    report = batch_report(out)
    assert report["counts"] == {"done": 3, "skipped": 0, "failed": 0}
    cases = by_name(report)
    moved = [case for case in cases.values() if case["tries"] == 2]
    assert len(moved) == 1, cases
    (case,) = moved
    assert [t["server"] for t in case["attempts"]] == [doomed.url, a.url]
    assert "cannot reach ComfyUI" in case["attempts"][0]["error"] and case["attempts"][1]["error"] is None
    assert case["server"] == a.url and (out / case["name"] / "edited.png").is_file()
    assert all(c["tries"] == 1 and c["server"] == a.url for c in cases.values() if c is not case)
    lost = servers_of(report)[doomed.url]
    assert lost["status"] == "lost" and "cannot reach ComfyUI" in lost["reason"]


def test_ctrl_c_cancels_only_its_own_prompts_and_a_rerun_on_other_servers_resumes(
    a: TestServer, bc: tuple[TestServer, TestServer], tmp_path: Path
) -> None:
    b, _ = bc
    names = ["r1", "r2", "r3", "r4"]
    specs = write_cases(tmp_path, names)
    out = tmp_path / "out"
    release = tmp_path / "release"
    blocker = b.hold_queue(release)
    try:
        command = subprocess.Popen(batch_command(specs, out, a.url, b.url), stderr=subprocess.PIPE, text=True)
        try:
            _wait_until(
                lambda: (
                    list(out.glob("*/report.json"))
                    and [p for p in b.queue_ids("queue_pending") if p != blocker]
                ),
                "a finished case on a and a pending case on b",
            )
            command.send_signal(signal.SIGINT)
            _, err = command.communicate(timeout=WAIT)
        finally:
            if command.poll() is None:
                command.kill()
        assert command.returncode == 130, err
        assert "oir-edit: interrupted" in err
        # b: oir-edit's pending prompt removed; the other client's running prompt untouched
        assert b.queue_ids("queue_pending") == [] and b.queue_ids("queue_running") == [blocker]
        # a: nothing of this batch left queued or running
        _wait_until(
            lambda: not a.queue_ids("queue_running") and not a.queue_ids("queue_pending"),
            "a's queue to empty",
        )
    finally:
        release.touch()
    entry = b.client.wait(blocker, None, WAIT, poll_every=0.5)
    assert entry["status"]["status_str"] == "success"  # never interrupted
    report = batch_report(out)
    assert report["interrupted"] is True
    cases = by_name(report)
    assert set(cases) == set(names)
    done = {name for name, case in cases.items() if case["status"] == "done"}
    assert done and done == {p.parent.name for p in out.glob("*/report.json")}
    rest = set(names) - done
    assert rest and all(cases[n]["status"] == "failed" and cases[n]["interrupted"] for n in rest)
    assert any(cases[n]["server"] == b.url for n in rest), (cases, err)  # the case that waited on b
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")}

    resumed = run(batch_command(specs, out, b.url))  # another set of servers
    assert resumed.returncode == 0, resumed.stderr
    report = batch_report(out)
    assert report["counts"] == {"done": len(rest), "skipped": len(done), "failed": 0}
    assert {n for n, c in by_name(report).items() if c["status"] == "skipped"} == done
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/report.json") if p in finished} == finished
    assert all((out / n / "report.json").is_file() for n in names)


def test_ctrl_c_interrupts_the_prompt_a_server_runs(a: TestServer, tmp_path: Path) -> None:
    """The stalling loader keeps oir-edit's prompt running until it is interrupted."""
    specs = write_cases(tmp_path, ["stalls"])
    out = tmp_path / "out"
    listed = tmp_path / "servers.txt"  # --servers: the many-server batch, here with one server
    listed.write_text(f"{a.url}\n", encoding="utf-8")
    command = subprocess.Popen(
        [*batch_command(specs, out, loader=STALLING_LOADER), "--servers", str(listed)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_until(lambda: a.queue_ids("queue_running"), "the case to run")
        (running,) = a.queue_ids("queue_running")
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=WAIT)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 130, err
    entry = a.client.wait(running, None, WAIT, poll_every=0.5)
    assert any(kind == "execution_interrupted" for kind, _ in entry["status"]["messages"]), entry["status"]
    assert not a.queue_ids("queue_running") and not a.queue_ids("queue_pending")
    case = by_name(batch_report(out))["stalls"]
    assert (
        case["status"] == "failed" and case["interrupted"] and not (out / "stalls" / "report.json").exists()
    )
