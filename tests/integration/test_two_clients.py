"""Two ``oir-edit`` processes against one ComfyUI at the same time.

The real console script, twice, against the shared test server: each gets its own edit (outputs,
``report.json``, progress), and Ctrl-C (SIGINT) in one cancels that one's prompt only, whether it
is still queued or already running; the other finishes with its own outputs, the server keeps
serving, and the interrupted command exits 130 with one line.

ComfyUI runs one prompt at a time, so "at the same time" means one prompt queued while the other
runs. Queue states are made certain without timing: ``OIRTestWaitForFile`` (the test node pack)
holds the queue until the test creates a file, and ``OIRTestStallingCheckpointLoader`` runs until
it is interrupted.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from comfy_server import (
    STALLING_LOADER,
    TEST_LOADER,
    TINY_CHECKPOINT,
    TestServer,
    shared_test_server,
    write_test_images,
)
from PIL import Image
from test_cli import console_script

WAIT_S = 300.0
"""Bound on every wait for a queue state or a command (never reached unless something is broken)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dog/gift picture and masks, and a second picture ("horse" in a field) with its own mask."""
    folder = tmp_path_factory.mktemp("two_clients_images")
    paths = write_test_images(folder)
    rng = np.random.default_rng(29)
    Image.fromarray((rng.random((64, 96, 3)) * 255).astype("uint8")).save(folder / "field.png")
    mask = np.zeros((64, 96), dtype="uint8")
    mask[16:56, 40:88] = 255
    Image.fromarray(mask, mode="L").save(folder / "horse_mask.png")
    paths["field"], paths["horse"] = folder / "field.png", folder / "horse_mask.png"
    return paths


def dog_edit(images: dict[str, Path], out: Path, loader: str = TEST_LOADER) -> list[str]:
    """Client A's command: two objects, 5 steps, the exhaustive search."""
    return [
        console_script(), "--server", "{url}", "--model-loader", loader, "--checkpoint", TINY_CHECKPOINT,
        "--steps", "5", "--reassembly-step", "2", "--reinversion-steps", "2",
        "--image", str(images["image"]), "--prompt", "a dog sitting next to a gift",
        "--edit", f"dog=cat:{images['dog']}", "--edit", f"gift=cake:{images['gift']}", "--out", str(out),
    ]  # fmt: skip


def horse_edit(images: dict[str, Path], out: Path, loader: str = TEST_LOADER) -> list[str]:
    """Client B's command: one object, 4 steps, coarse-to-fine, the preserve background."""
    return [
        console_script(), "--server", "{url}", "--model-loader", loader, "--checkpoint", TINY_CHECKPOINT,
        "--steps", "4", "--reassembly-step", "1", "--reinversion-steps", "1",
        "--search-mode", "coarse_to_fine", "--coarse-stride", "2", "--background", "preserve",
        "--image", str(images["field"]), "--prompt", "a horse standing in a field",
        "--edit", f"horse=cow:{images['horse']}", "--out", str(out),
    ]  # fmt: skip


def start(command: list[str], server: TestServer) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [server.url if part == "{url}" else part for part in command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    """Wait for a command; its exit code and stderr (killed if it overruns the bound)."""
    try:
        _, err = process.communicate(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"oir-edit did not finish within {WAIT_S} s: {err}")
    return process.returncode, err


def queue_item(server: TestServer, where: str, matches: Callable[[list[Any]], bool]) -> list[Any] | None:
    """The ``/queue`` item (``queue_running`` or ``queue_pending``) that ``matches``, if any."""
    for item in server.client.get_json("/queue")[where]:
        if matches(item):
            return item
    return None


def wait_for_item(server: TestServer, where: str, matches: Callable[[list[Any]], bool]) -> list[Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        item = queue_item(server, where, matches)
        if item is not None:
            return item
        time.sleep(0.1)
    pytest.fail(f"no {where} prompt as expected within {WAIT_S} s")


def mentions(word: str) -> Callable[[list[Any]], bool]:
    """A queue item whose workflow contains ``word`` (the prompts differ, so this names the client)."""
    return lambda item: word in json.dumps(item[2])


def check_own_edit(
    server: TestServer, out: Path, err: str, mine: dict[str, Any], other_words: tuple[str, ...]
) -> dict[str, Any]:
    """The report, outputs and progress in ``out`` / ``err`` are this client's edit only."""
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "ok" and report["spec"]["prompt"] == mine["prompt"]
    assert report["spec"]["steps"] == mine["steps"] and report["spec"]["search_mode"] == mine["search_mode"]
    assert [(p["source"], p["target"]) for p in report["pairs"]] == mine["pairs"]
    assert all(1 <= step <= mine["steps"] for step in report["chosen_steps"])
    assert Image.open(out / "edited.png").size == mine["size"]
    names = {f"candidates_{k}_{s}-{t}.png" for k, (s, t) in enumerate(mine["pairs"], 1)}
    assert {p.name for p in out.glob("candidates_*.png")} == names
    history = server.client.history(report["prompt_id"])
    assert history is not None and history["prompt"][2] == report["workflow"]  # ComfyUI ran this one
    assert history["status"]["status_str"] == "success"
    for word in other_words:  # the other client's prompt id, or a word of its prompt or edits
        assert not re.search(rf"\b{re.escape(word)}\b", err), (word, err)
    return report


DOG = {
    "prompt": "a dog sitting next to a gift", "steps": 5, "search_mode": "exhaustive",
    "pairs": [("dog", "cat"), ("gift", "cake")], "size": (64, 64),
}  # fmt: skip
HORSE = {
    "prompt": "a horse standing in a field", "steps": 4, "search_mode": "coarse_to_fine",
    "pairs": [("horse", "cow")], "size": (96, 64),
}  # fmt: skip


def test_two_clients_at_once_each_get_their_own_edit(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    dog = start(dog_edit(images, tmp_path / "dog"), server)
    horse = start(horse_edit(images, tmp_path / "horse"), server)
    (dog_code, dog_err), (horse_code, horse_err) = finish(dog), finish(horse)
    assert dog_code == 0 and horse_code == 0, (dog_err, horse_err)
    assert "dog -> cat" in dog_err and "horse -> cow" in horse_err  # each client's last line
    dog_report = check_own_edit(server, tmp_path / "dog", dog_err, DOG, ("horse", "cow", "field"))
    horse_report = check_own_edit(
        server, tmp_path / "horse", horse_err, HORSE, ("dog", "cat", "gift", "cake", dog_report["prompt_id"])
    )
    assert dog_report["prompt_id"] not in horse_err and horse_report["prompt_id"] not in dog_err
    assert horse_report["reassembly"]["background"] == "preserve"


def test_ctrl_c_on_a_queued_edit_cancels_only_that_one(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """Both edits wait behind another client's prompt; Ctrl-C in the horse client removes its prompt
    from the queue; released, the queue runs the dog edit to its own outputs."""
    release = tmp_path / "release"
    blocker = server.hold_queue(release)
    dog = horse = None
    try:
        dog = start(dog_edit(images, tmp_path / "dog"), server)
        horse = start([*horse_edit(images, tmp_path / "horse"), "-q"], server)
        wait_for_item(server, "queue_pending", mentions("a dog sitting"))
        horse_item = wait_for_item(server, "queue_pending", mentions("a horse standing"))
        horse.send_signal(signal.SIGINT)
        horse_code, horse_err = finish(horse)
    finally:
        release.touch()
        if horse is not None and horse.poll() is None:
            horse.kill()
    assert horse_code == 130 and horse_err == "oir-edit: interrupted\n", horse_err
    assert queue_item(server, "queue_pending", mentions("a horse standing")) is None
    assert dog is not None
    dog_code, dog_err = finish(dog)
    assert dog_code == 0, dog_err
    check_own_edit(server, tmp_path / "dog", dog_err, DOG, ("horse", "cow", horse_item[1]))
    assert server.client.history(horse_item[1]) is None  # never ran
    assert server.client.history(blocker)["status"]["status_str"] == "success"  # not interrupted
    assert not (tmp_path / "horse" / "report.json").exists()


def test_ctrl_c_on_a_running_edit_interrupts_only_that_one_and_the_server_keeps_serving(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """The dog client's edit runs (a loader that stalls until interrupted), the horse client's waits
    behind it; Ctrl-C in the dog client interrupts its prompt, the horse edit then runs to its own
    outputs, and a third prompt afterwards succeeds."""
    dog = horse = None
    try:
        dog = start([*dog_edit(images, tmp_path / "dog", STALLING_LOADER), "-q"], server)
        dog_item = wait_for_item(server, "queue_running", mentions(STALLING_LOADER))
        horse = start(horse_edit(images, tmp_path / "horse"), server)
        wait_for_item(server, "queue_pending", mentions("a horse standing"))
        dog.send_signal(signal.SIGINT)
        dog_code, dog_err = finish(dog)
        horse_code, horse_err = finish(horse)
    finally:
        for process in (dog, horse):
            if process is not None and process.poll() is None:
                process.kill()
    assert dog_code == 130 and dog_err == "oir-edit: interrupted\n", dog_err
    interrupted = server.client.history(dog_item[1])
    assert interrupted is not None and interrupted["status"]["status_str"] == "error"
    assert any(kind == "execution_interrupted" for kind, _ in interrupted["status"]["messages"])
    assert horse_code == 0, horse_err
    check_own_edit(server, tmp_path / "horse", horse_err, HORSE, ("dog", "gift", dog_item[1]))
    # the server keeps serving: a third, small prompt runs to the end
    done = tmp_path / "done"
    done.touch()
    third = server.run(
        {"1": {"class_type": "OIRTestWaitForFile", "inputs": {"path": str(done), "timeout": 60}}}
    )
    assert third["status"]["status_str"] == "success"
