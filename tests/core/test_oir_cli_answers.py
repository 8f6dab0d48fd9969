"""``oir-edit`` against servers that misbehave, and its exit codes row by row (docs/headless.md).

The servers are real HTTP/websocket servers on the loopback (``stub_comfy``: aiohttp in a thread)
answering what a test chooses; the command runs in-process through ``cli.main`` (a subprocess for
Ctrl-C). ``tests/integration/test_cli.py`` kills a real ComfyUI during an edit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from PIL import Image
from stub_comfy import CHECKPOINT, PROMPT_ID, StubComfy, history_entry

from oir_cli import cli

REPO = Path(__file__).resolve().parents[2]
ENTRY = "import sys; from oir_cli.cli import main; sys.exit(main())"
PROMPT = "a dog sitting next to a gift"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (120, 80, 40)).save(image)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    mask.save(tmp_path / "dog.png")
    return {"image": image, "dog": tmp_path / "dog.png"}


def edit_args(files: dict[str, Path], server: str, out: Path, *more: str) -> list[str]:
    return [
        "--image", str(files["image"]), "--prompt", PROMPT, "--edit", f"dog=cat:{files['dog']}",
        "--checkpoint", CHECKPOINT, "--steps", "5", "--server", server, "--out", str(out), "-q", *more,
    ]  # fmt: skip


@pytest.fixture
def stubs() -> Iterator[Callable[..., StubComfy]]:
    started: list[StubComfy] = []

    def start(answers: dict[str, Any] | None = None, messages: list[Any] | None = None) -> StubComfy:
        started.append(StubComfy(answers, messages))
        return started[-1]

    yield start
    for stub in started:
        stub.stop()


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(args)
    return code, capsys.readouterr().err


def _closed_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def _json(status: int, value: Any) -> tuple[int, bytes]:
    return status, json.dumps(value).encode()


def _error_status(exception_type: str, message: str) -> dict[str, Any]:
    data = {"prompt_id": PROMPT_ID, "node_id": "9", "node_type": "OIRDDIMInversion",
            "exception_type": exception_type, "exception_message": message,
            "traceback": ["line 1"]}  # fmt: skip
    return {"status_str": "error", "completed": False, "messages": [["execution_error", data]]}


def _drop_connection(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()  # as a killed server does: no answer, the connection gone
    raise web.HTTPInternalServerError()


NOT_FINISHED = _json(200, {})


# --------------------------------------------------------------------------------------------------
# bad answers, endpoint by endpoint

BAD_ANSWERS: list[tuple[str, dict[str, Any], list[Any], str]] = [
    ("system_stats not JSON", {"system_stats": (200, b"<html>hello</html>")}, [],
     r"GET /system_stats: the body is not JSON \(it starts '<html>hello</html>'\)"),
    ("system_stats a list", {"system_stats": _json(200, [])}, [], r"GET /system_stats: .*valid dictionary"),
    ("object_info not JSON", {"object_info": (200, b"ok")}, [],
     r"GET /object_info/\w+: the body is not JSON"),
    ("object_info input a list", {"object_info": _json(200, {"OIREditPair": {"input": []}})}, [],
     r"GET /object_info/\w+: OIREditPair.input: .*valid dictionary"),
    ("object_info limit not a number",
     {"object_info": lambda r: web.json_response({r.match_info["cls"]: {"input": {"required": {
         "steps": ["INT", {"min": "two"}]}}}})}, [],
     r"GET /object_info/\w+: .*steps: the input's 'min' 'two' is not a number"),
    ("upload not JSON", {"upload": (200, b"stored!")}, [], r"POST /upload/image: the body is not JSON"),
    ("upload without a name", {"upload": _json(200, {"subfolder": "oir-edit"})}, [],
     r"POST /upload/image: name: Field required"),
    ("prompt not JSON", {"prompt": (200, b"queued")}, [], r"POST /prompt: the body is not JSON"),
    ("prompt without an id", {"prompt": _json(200, {"number": 3})}, [],
     r"POST /prompt: prompt_id: Field required"),
    ("prompt 400 not JSON", {"prompt": (400, b"<h1>Bad Request</h1>")}, [],
     r"POST /prompt \(400\): the body is not JSON"),
    ("prompt 400 node_errors of the wrong shape", {"prompt": _json(400, {"node_errors": {"9": "no"}})}, [],
     r"POST /prompt \(400\): node_errors.9: "),
    ("history not JSON", {"history": (200, b"\x89PNG...")}, [], r"GET /history/p1: the body is not JSON"),
    ("history outputs a list", {"history": _json(200, {PROMPT_ID: {"outputs": []}})}, [],
     r"GET /history/p1: p1.outputs: "),
    ("history image without a file name",
     {"history": _json(200, {PROMPT_ID: {"outputs": {"14": {"images": [{"subfolder": ""}]}},
                                         "status": {"status_str": "success"}}})}, [],
     r"GET /history/p1: p1.outputs.14.images.0.filename: Field required"),
    ("view not an image", {"view": (200, b"GIF89a but not really")}, [],
     r"GET /view \(edited.png\): not an image"),
    ("ws message not JSON", {"history": NOT_FINISHED}, ["this is not JSON"],
     r"/ws: a message is not JSON \(it starts 'this is not JSON'\)"),
    ("ws message without a type", {"history": NOT_FINISHED}, [{"data": {"prompt_id": PROMPT_ID}}],
     r"/ws: a message is not an event: type: Field required"),
    ("ws progress not a number", {"history": NOT_FINISHED},
     [{"type": "progress", "data": {"prompt_id": PROMPT_ID, "node": "9", "value": "half", "max": 5}}],
     r"/ws: a 'progress' event: value: "),
    ("ws executing data a list", {"history": NOT_FINISHED}, [{"type": "executing", "data": ["9"]}],
     r"/ws: a 'executing' event: "),
]  # fmt: skip
"""(case, route answers, websocket messages, the expected problem after 'unexpected answer to')."""


@pytest.mark.parametrize(
    ("answers", "messages", "problem"),
    [case[1:] for case in BAD_ANSWERS],
    ids=[case[0] for case in BAD_ANSWERS],
)
def test_an_answer_that_is_not_comfyuis_is_one_line_exit_1_with_error_txt(
    files: dict[str, Path],
    tmp_path: Path,
    stubs: Callable[..., StubComfy],
    capsys: pytest.CaptureFixture[str],
    answers: dict[str, Any],
    messages: list[Any],
    problem: str,
) -> None:
    stub = stubs(answers, messages)
    out = tmp_path / "out"
    code, err = run(edit_args(files, stub.url, out, "--timeout", "8"), capsys)
    assert code == 1, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(
        rf"^oir-edit: error: ComfyUI at {stub.url} gave an unexpected answer to {problem}", err
    ), err
    assert "unexpected answer" in (out / "error.txt").read_text(encoding="utf-8")
    assert not (out / "report.json").exists()


def test_a_score_table_per_pair_or_the_answer_is_refused(
    files: dict[str, Path],
    tmp_path: Path,
    stubs: Callable[..., StubComfy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_scores(request: web.Request) -> web.Response:
        entry = history_entry(stub.workflow or {})
        for outputs in entry["outputs"].values():
            outputs.pop("oir_scores", None)
        return web.json_response({PROMPT_ID: entry})

    stub = stubs({"history": no_scores})
    code, err = run(edit_args(files, stub.url, tmp_path / "out"), capsys)
    assert code == 1 and err.count("\n") == 1
    assert "GET /history/p1: OIR Mask Metric Scorer (node" in err and "0 score tables for 1 edit pairs" in err


def test_the_final_images_region_score_per_pair_goes_into_the_report_or_the_answer_is_refused(
    files: dict[str, Path],
    tmp_path: Path,
    stubs: Callable[..., StubComfy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stub = stubs()
    code, err = run(edit_args(files, stub.url, tmp_path / "ok"), capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "ok" / "report.json").read_text(encoding="utf-8"))
    region = [i for i, n in report["workflow"].items() if n["class_type"] == "OIREditRegionScore"]
    assert len(region) == 1  # queued in the same prompt as the edit
    sent = history_entry(stub.workflow or {})["outputs"][region[0]]["oir_region_scores"]
    assert [p["final_clip_score"] for p in report["pairs"]] == [row["clip_score"] for row in sent]

    def no_region_scores(request: web.Request) -> web.Response:
        entry = history_entry(stub.workflow or {})
        for outputs in entry["outputs"].values():
            outputs.pop("oir_region_scores", None)
        return web.json_response({PROMPT_ID: entry})

    stub = stubs({"history": no_region_scores})
    code, err = run(edit_args(files, stub.url, tmp_path / "out"), capsys)
    assert code == 1 and err.count("\n") == 1
    assert "GET /history/p1: OIR Edit Region Score (node" in err and "0 scores for 1 edit pairs" in err
    assert not (tmp_path / "out" / "report.json").exists()


# --------------------------------------------------------------------------------------------------
# numbers and paths that cannot mean anything: refused before anything is sent


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--timeout", "nan"], r"--timeout nan: must be a number of seconds above 0"),
        (["--timeout", "inf"], r"--timeout inf: must be a number of seconds above 0"),
        (["--timeout", "0"], r"--timeout 0.0: must be a number of seconds above 0"),
        (["--timeout", "-5"], r"--timeout -5.0: must be"),
        (["--startup-timeout", "nan"], r"--startup-timeout nan: must be"),
        (["--cfg", "nan"], r"'cfg' = nan is not a finite number"),
        (["--cfg", "inf"], r"'cfg' = inf is not a finite number"),
        (["--editing-weight", "nan"], r"'editing_weight' = nan is not a finite number"),
        (
            ["--lora", "style.safetensors:nan"],
            r"--lora 'style.safetensors:nan': strength 'nan' is not a finite",
        ),
        (["--lora", "style.safetensors:1:inf"], r"clip strength 'inf' is not a finite number"),
        (["--controlnet", "depth.pth:nan"], r"--controlnet 'depth.pth:nan': strength 'nan' is not a finite"),
    ],
)
def test_numbers_that_cannot_mean_anything_are_refused_before_queueing(
    files: dict[str, Path],
    tmp_path: Path,
    stubs: Callable[..., StubComfy],
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    stub = stubs()
    code, err = run(edit_args(files, stub.url, tmp_path / "out", *flags), capsys)
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err
    assert stub.calls == []  # not even /system_stats


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            {"loras": [{"name": "style.safetensors", "strength": float("nan")}]},
            "strength nan is not a finite",
        ),
        (
            {"loras": [{"name": "style.safetensors", "strength_clip": float("inf")}]},
            "strength_clip inf is not a",
        ),
        ({"controlnets": [{"name": "d.pth", "end_percent": "most"}]}, "end_percent 'most' is not a number"),
    ],
)
def test_spec_file_strengths_must_be_finite(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], items: Any, message: str
) -> None:
    spec = tmp_path / "spec.yaml"
    fields = {"image": str(files["image"]), "prompt": PROMPT, "edits": [f"dog=cat:{files['dog']}"], **items}
    spec.write_text(yaml.safe_dump(fields), encoding="utf-8")
    code, err = run(["--spec", str(spec), "--server", _closed_url(), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(
    ("which", "path", "message"),
    [
        ("image", lambda tmp: tmp, "is a directory: give the picture file inside it"),
        ("mask", lambda tmp: tmp, "is a directory: give the picture file inside it"),
        ("image", lambda tmp: Path("/dev/zero"), "/dev/zero is not a regular file"),
        ("mask", lambda tmp: Path("/dev/null"), "/dev/null is not a regular file"),
    ],
)
def test_paths_that_exist_but_are_not_files_are_named_as_such(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
    path: Any,
    message: str,
) -> None:
    target = path(tmp_path)
    if which == "image":
        files = dict(files, image=target)
    else:
        files = dict(files, dog=target)
    code, err = run(edit_args(files, _closed_url(), tmp_path / "out"), capsys)
    assert code == 2 and err.count("\n") == 1 and message in err and "does not exist" not in err, err


# --------------------------------------------------------------------------------------------------
# the exit-code table of docs/headless.md, row by row


def _readme_exit_table() -> list[list[str]]:
    """The cells of the exit-code table in ``docs/headless.md``, row by row."""
    text = (REPO / "docs" / "headless.md").read_text(encoding="utf-8")
    table = text.split("| what happened | exit | `error.txt` |", 1)[1].split("\n\n", 1)[0]
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in table.strip().splitlines()[1:]]


def _readme_exit_rows() -> dict[str, str]:
    return {cells[0]: cells[1] for cells in _readme_exit_table()}


def _row_done(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    return edit_args(files, stubs().url, tmp / "out"), None


def _row_local(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    stub = stubs()
    return edit_args(files, stub.url, tmp / "out", "--timeout", "0"), stub


def _row_no_server(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    return edit_args(files, _closed_url(), tmp / "out"), None


def _row_not_offered(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    stub = stubs()
    args = edit_args(files, stub.url, tmp / "out")
    args[args.index(CHECKPOINT)] = "sdxl.safetensors"
    return args, stub


def _row_validation(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    error = {"message": "Value smaller than min", "details": "steps: 1 < 2"}
    refusal = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
        "node_errors": {"9": {"errors": [error], "class_type": "OIRDDIMInversion"}},
    }
    return edit_args(files, stubs({"prompt": _json(400, refusal)}).url, tmp / "out"), None


def _finished(status: dict[str, Any]) -> Callable[[Any], Any]:
    def make(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
        holder: list[StubComfy] = []

        def answer(request: web.Request) -> web.Response:
            return web.json_response({PROMPT_ID: history_entry(holder[0].workflow or {}, status)})

        holder.append(stubs({"history": answer}))
        return edit_args(files, holder[0].url, tmp / "out"), None

    return make


def _row_timeout(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    stub = stubs({"history": NOT_FINISHED})
    return edit_args(files, stub.url, tmp / "out", "--timeout", "0.5"), stub


def _row_lost(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    return edit_args(files, stubs({"history": _drop_connection}).url, tmp / "out"), None


def _row_status(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    return edit_args(files, stubs({"prompt": (500, b"Internal Server Error")}).url, tmp / "out"), None


def _row_bad_answer(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    return edit_args(files, stubs({"system_stats": (200, b"not json")}).url, tmp / "out"), None


def _row_batch(files: dict[str, Path], tmp: Path, stubs: Any) -> tuple[list[str], StubComfy | None]:
    folder = tmp / "specs"
    folder.mkdir()
    for name, checkpoint in (("good", CHECKPOINT), ("typo", "sdxl.safetensors")):
        spec = {"image": str(files["image"]), "prompt": PROMPT, "edits": [f"dog=cat:{files['dog']}"],
                "checkpoint": checkpoint, "steps": 5}  # fmt: skip
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return ["batch", str(folder), "--out", str(tmp / "out"), "--server", stubs().url, "-q"], None


EXIT_ROWS: dict[str, tuple[Callable[..., Any], int, str]] = {
    "the edit is done (`report.json` written)": (_row_done, 0, ""),
    "a file, prompt, setting or flag refused locally (e.g. `--timeout 0`, a mask that is a directory)":
        (_row_local, 2, "--timeout 0.0: must be"),
    "nothing answers at `--server`": (_row_no_server, 2, "cannot reach ComfyUI at"),
    "a name or range the server does not offer (checkpoint, scorer, LoRA, steps)":
        (_row_not_offered, 2, "--checkpoint 'sdxl.safetensors' is not offered"),
    "ComfyUI's validation refuses the queued prompt":
        (_row_validation, 2, "refused the workflow: node 9 (OIR DDIM Inversion): Value smaller than min"),
    "an OIR node refuses an input before its heavy work":
        (_finished(_error_status("oir_core.errors.OIRInputError", "OIR: input 'x' = 1: bad. Fix: y.")), 2,
         "node 9 (OIR DDIM Inversion) refused an input: OIR: input 'x'"),
    "a node fails inside ComfyUI (e.g. a corrupt LoRA file)":
        (_finished(_error_status("RuntimeError", "boom")), 1,
         "ComfyUI failed in node 9 (OIR DDIM Inversion): boom"),
    "the edit does not finish within `--timeout`": (_row_timeout, 1, "did not finish within 0.5 s"),
    "the server is lost during the edit": (_row_lost, 1, "cannot reach ComfyUI at"),
    "the server answers with an error status":
        (_row_status, 1, "answered 500 to /prompt: Internal Server Error"),
    "an answer that is not ComfyUI's": (_row_bad_answer, 1, "unexpected answer to GET /system_stats"),
    "`oir-edit batch`: a case failed (the others still ran)": (_row_batch, 1, ""),
}  # fmt: skip
"""Exit-code table row -> (arguments and the stub they use, exit code, a part of the error line); Ctrl-C
(exit 130) has its own test below."""


def test_the_readme_table_is_the_tested_one() -> None:
    rows = _readme_exit_rows()
    assert {row: int(code) for row, code in rows.items()} == {
        **{row: code for row, (_, code, _) in EXIT_ROWS.items()},
        "interrupted (Ctrl-C; the prompt is taken off the server's queue)": 130,
    }


@pytest.mark.parametrize("row", list(EXIT_ROWS))
def test_exit_code_row(
    row: str, files: dict[str, Path], tmp_path: Path, stubs: Callable[..., StubComfy],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    make, expected, message = EXIT_ROWS[row]
    args, stub = make(files, tmp_path, stubs)
    code, err = run(args, capsys)
    assert code == expected, err
    assert "Traceback" not in err
    out = tmp_path / "out"
    if row.startswith("`oir-edit batch`"):
        assert (out / "good" / "report.json").is_file() and "is not offered" in (
            out / "typo" / "error.txt"
        ).read_text()
        return
    assert message in err and (err.count("\n") == 1 if code else err == ""), err
    assert (out / "report.json").is_file() == (code == 0)
    with_error_txt = {cells[0] for cells in _readme_exit_table() if cells[2] == "yes"}
    assert (out / "error.txt").is_file() == (row in with_error_txt)
    if code == 2 and stub is not None:  # refused before anything was queued
        assert "POST /prompt" not in stub.calls


def test_ctrl_c_is_exit_130_and_takes_the_prompt_off_the_queue(
    files: dict[str, Path], tmp_path: Path, stubs: Callable[..., StubComfy]
) -> None:
    stub = stubs({"history": NOT_FINISHED})
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-c", ENTRY, *edit_args(files, stub.url, tmp_path / "out")],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "POST /prompt" not in stub.calls and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "POST /prompt" in stub.calls, process.communicate(timeout=10)[1]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "oir-edit: interrupted"
    assert "POST /queue" in stub.calls and "POST /interrupt" in stub.calls
