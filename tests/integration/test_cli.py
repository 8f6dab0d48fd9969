"""``oir-edit`` end to end: the installed console script against a real ComfyUI with tiny models.

The test server (``comfy_server``) provides the pack, the tiny checkpoint loader node and tiny
scorer / LoRA / ControlNet files; the command reaches it with ``--server URL`` and loads the tiny
checkpoint with ``--model-loader OIRTestTinyCheckpointLoader``. One test lets the command start
(and stop) its own ComfyUI with ``--comfyui``, exercising the launcher.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from comfy_server import (
    BROKEN_LORA,
    IMAGE_SIZE,
    STALLING_LOADER,
    TEST_LOADER,
    TEST_NODES_DIR,
    TINY_CHECKPOINT,
    TINY_CONTROLNET,
    TINY_LORA,
    TestServer,
    sample_files_module,
    shared_test_server,
    start_test_server,
    write_test_images,
)
from PIL import Image

from oir_cli.runner import pack_version

STEPS = 5
TINY_FLAGS = ["--steps", str(STEPS), "--reassembly-step", "2", "--reinversion-steps", "2"]
COMMAND_TIMEOUT = 300


def console_script() -> str:
    """The installed ``oir-edit`` next to this interpreter (``pip install -e .`` puts it there)."""
    found = Path(sys.executable).parent / "oir-edit"
    if not found.is_file():
        found = Path(shutil.which("oir-edit") or "")
    if not found.is_file():
        pytest.skip("the oir-edit console script is not installed (run: pip install -e .)")
    return str(found)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_test_images(tmp_path_factory.mktemp("cli_images"))


def oir_edit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        cwd=cwd,
        check=False,
    )


def server_flags(server: TestServer) -> list[str]:
    return ["--server", server.url, "--model-loader", TEST_LOADER, "--checkpoint", TINY_CHECKPOINT]


def check_outputs(out: Path, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Every output file exists and is an image of the right kind; returns the report."""
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    edited = Image.open(out / "edited.png")
    assert edited.size == (IMAGE_SIZE, IMAGE_SIZE)
    names = {f"{k}_{s}-{t}" for k, (s, t) in enumerate(pairs, 1)}
    assert {p.name for p in out.glob("candidates_*.png")} == {f"candidates_{n}.png" for n in names}
    assert {p.name for p in out.glob("scores_*.png")} == {f"scores_{n}.png" for n in names}
    for grid in out.glob("candidates_*.png"):
        assert Image.open(grid).size[0] > IMAGE_SIZE  # a grid of several candidates
    assert report["outputs"]["edited"] == ["edited.png"]
    assert sorted(report["outputs"]["candidate_grids"]) == sorted(f"candidates_{n}.png" for n in names)
    assert not (out / "error.txt").exists()
    return report


def test_single_edit_against_a_running_server(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = oir_edit(
        *server_flags(server),
        *TINY_FLAGS,
        "--image",
        str(images["image"]),
        "--prompt",
        "a dog sitting next to a gift",
        "--edit",
        f"dog=cat:{images['dog']}",
        "--edit",
        f"gift=cake:{images['gift']}",
        "--seed",
        "7",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "Parallel Step Search" in result.stderr  # progress, node by node
    report = check_outputs(out, [("dog", "cat"), ("gift", "cake")])
    assert report["status"] == "ok" and report["case"] == "dog_gift"
    assert report["prompts"]["target"] == "a cat sitting next to a cake"
    assert report["prompts"]["guided"] == ["a cat sitting next to a gift", "a dog sitting next to a cake"]
    assert len(report["chosen_steps"]) == 2 and all(1 <= s <= STEPS for s in report["chosen_steps"])
    assert [p["chosen_step"] for p in report["pairs"]] == report["chosen_steps"]
    for pair, table in zip(report["pairs"], report["scores"]):
        assert table["table"]["steps"] == list(range(1, STEPS + 1))
        assert len(table["table"]["combined"]) == STEPS and table["chosen"] == pair["chosen_step"]
    # official convention (auto): each pair's step-1 candidate is the source latent, no rows for it
    assert report["search"]["stats"][0]["rows"] == 2 * (STEPS * (STEPS + 1) // 2 - 1)
    # the split into model calls is reported per stage: the search's level of 2 x STEPS rows fits
    # one call of the tiny model, as planned (no memory fallback)
    search_split = [s for s in report["split"] if s["stage"] == "search"]
    assert search_split and all(s["as_planned"] and not s["fallbacks"] for s in report["split"])
    assert search_split[0]["rows_per_call"] == search_split[0]["largest_call"] > 1
    # the search saw the reassembly's constant R in the queued workflow and kept its latents there:
    # the reassembly reused them instead of denoising the pairs again
    assert [p["source"] for p in report["reassembly"]["pairs"]] == [
        "search" if t > 2 else "inverted" for t in report["chosen_steps"]
    ]
    stats = server.client.system_stats()
    assert report["versions"]["comfyui"] == stats["system"]["comfyui_version"]
    assert report["versions"]["oir_edit"] == pack_version()
    assert report["spec"]["seed"] == 7 and report["spec"]["steps"] == STEPS
    assert report["server"] == {"url": server.url, "launched": False, "start_s": None, "devices": ["cpu"]}
    for key in ("validate_s", "server_check_s", "upload_s", "execute_s", "download_s", "total_s"):
        assert report["timings"][key] >= 0
    assert {n["title"] for n in report["timings"]["nodes"].values()} >= {"OIR Parallel Step Search"}
    # The recorded workflow is exactly the one ComfyUI ran.
    history = server.client.history(report["prompt_id"])
    assert history is not None and history["prompt"][2] == report["workflow"]
    assert report["workflow"]["1"]["class_type"] == TEST_LOADER


def test_levels_beyond_the_typed_steps_are_accepted_as_the_server_counts_them(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """``ddim_uniform`` makes 7 levels of ``steps`` = 6 (ComfyUI walks 1000 // 6 levels at a time
    from level 1), so level 7 is a valid ``step_override`` and ``R`` = 6 leaves a level to re-invert:
    the command's own checks, made before any server answers, must not refuse what the server takes."""
    out = tmp_path / "out"
    result = oir_edit(
        *server_flags(server),
        "--steps", "6", "--scheduler", "ddim_uniform", "--reassembly-step", "6", "--reinversion-steps", "1",
        "--step-override", "7, auto",
        "--image", str(images["image"]), "--prompt", "a dog sitting next to a gift",
        "--edit", f"dog=cat:{images['dog']}", "--edit", f"gift=cake:{images['gift']}",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = check_outputs(out, [("dog", "cat"), ("gift", "cake")])
    assert report["chosen_steps"][0] == 7
    assert all(table["table"]["steps"] == list(range(1, 8)) for table in report["scores"])
    assert (report["reassembly"]["reassembly_step"], report["reassembly"]["reinversion_steps"]) == (6, 1)
    refused = oir_edit(
        *server_flags(server), "--steps", "6", "--step-override", "8, auto",
        "--image", str(images["image"]), "--prompt", "a dog sitting next to a gift",
        "--edit", f"dog=cat:{images['dog']}", "--edit", f"gift=cake:{images['gift']}",
        "--out", str(tmp_path / "refused"),
    )  # fmt: skip
    assert refused.returncode == 2 and "step_override" in refused.stderr, refused.stderr


def test_spec_file_with_lora_and_controlnet(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    spec = tmp_path / "spec.yaml"
    shutil.copy(images["image"], tmp_path / "photo.png")
    shutil.copy(images["dog"], tmp_path / "dog.png")
    shutil.copy(images["hint"], tmp_path / "hint.png")
    spec.write_text(
        yaml.safe_dump(
            {
                "image": "photo.png",
                "prompt": "a dog sitting next to a gift",
                "edits": [{"source": "dog", "target": "cat", "mask": "dog.png"}],
                "steps": 3,  # the flag below wins
                "loras": [f"{TINY_LORA}:0.8"],
                "controlnets": [{"name": TINY_CONTROLNET, "strength": 0.7, "hint": "hint.png"}],
                "search-mode": "coarse_to_fine",
                "coarse_stride": 2,
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = oir_edit(*server_flags(server), *TINY_FLAGS, "--spec", str(spec), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # --quiet
    report = check_outputs(out, [("dog", "cat")])
    assert report["case"] == "spec" and report["spec"]["steps"] == STEPS
    classes = sorted(node["class_type"] for node in report["workflow"].values())
    assert classes.count("LoraLoader") == 1 and classes.count("ControlNetApplyAdvanced") == 1
    lora = next(n for n in report["workflow"].values() if n["class_type"] == "LoraLoader")
    assert lora["inputs"]["strength_model"] == 0.8
    search = next(n for n in report["workflow"].values() if n["class_type"] == "OIRParallelStepSearch")
    assert search["inputs"]["search_mode"] == "coarse_to_fine"


def _bench_layout(root: Path, images: dict[str, Path]) -> Path:
    """A miniature OIR-Bench: dataset image, mask/<case>/<object>.png, and the official YAML schema."""
    bench = root / "OIR-Bench" / "multi_object"
    (bench / "dataset").mkdir(parents=True)
    (bench / "mask" / "multi_object_009").mkdir(parents=True)
    shutil.copy(images["image"], bench / "dataset" / "multi_object_009.png")
    shutil.copy(images["dog"], bench / "mask" / "multi_object_009" / "dumplings.png")
    shutil.copy(images["gift"], bench / "mask" / "multi_object_009" / "chopsticks.png")
    config = sample_files_module().oir_bench_multi_object(reassembly_step=2)
    (root / "OIR-Bench" / "multi_object.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return root


def test_batch_runs_specs_and_oir_bench_skips_finished_and_reports_failures(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    batch = _bench_layout(tmp_path / "batch", images)
    good = {
        "image": str(images["image"]),
        "prompt": "a dog sitting next to a gift",
        "edits": [f"gift=cake:{images['gift']}"],
    }
    (batch / "gift.yaml").write_text(yaml.safe_dump(good), encoding="utf-8")
    (batch / "broken.json").write_text(
        json.dumps(dict(good, edits=[f"cat=dog:{images['dog']}"])), encoding="utf-8"
    )
    (batch / "notes.yaml").write_text("just: some notes\n", encoding="utf-8")  # not a spec: ignored
    out = tmp_path / "results"
    args = ["batch", str(batch), "--out", str(out), *server_flags(server), *TINY_FLAGS]

    first = oir_edit(*args)
    assert first.returncode == 1, first.stderr  # one case failed
    summary = json.loads((out / "batch_report.json").read_text(encoding="utf-8"))
    status = {case["name"]: case["status"] for case in summary["cases"]}
    assert status == {"broken": "failed", "gift": "done", "multi_object_009": "done"}
    broken = next(case for case in summary["cases"] if case["name"] == "broken")
    assert "'cat'" in broken["error"] and "not found" in broken["error"]
    assert "not found" in (out / "broken" / "error.txt").read_text(encoding="utf-8")
    bench = check_outputs(out / "multi_object_009", [("dumplings", "fry_rice"), ("chopsticks", "knife")])
    assert bench["prompts"]["guided"] == [
        "a bowl of fry rice on the left and chopsticks on the right",
        "a bowl of dumplings on the left and knife on the right",
    ]
    assert bench["prompts"]["target"] == "a bowl of fry rice on the left and knife on the right"
    assert bench["spec"]["reassembly_step"] == 2
    check_outputs(out / "gift", [("gift", "cake")])
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")}

    second = oir_edit(*args)
    assert second.returncode == 1  # the broken case is still broken
    summary = json.loads((out / "batch_report.json").read_text(encoding="utf-8"))
    assert summary["counts"] == {"done": 0, "skipped": 2, "failed": 1}
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")} == finished  # untouched


def test_failure_inside_comfyui_is_one_line_with_details_saved(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """A LoRA file that is not safetensors passes every check ComfyUI offers and fails in LoraLoader."""
    out = tmp_path / "out"
    result = oir_edit(
        *server_flags(server), *TINY_FLAGS, "--image", str(images["image"]), "--lora", f"{BROKEN_LORA}:1.0",
        "--prompt", "a dog sitting next to a gift", "--edit", f"dog=cat:{images['dog']}",
        "--out", str(out), "-q",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "oir-edit: error: ComfyUI failed in node" in result.stderr
    assert "LoraLoader" in result.stderr or "LoRA" in result.stderr
    details = (out / "error.txt").read_text(encoding="utf-8")
    assert "traceback" in details and not (out / "report.json").exists()


def test_mask_that_vanishes_at_the_latent_grid_is_refused_before_queueing(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """A 2x2-pixel mask between the cells the latent grid samples: exit 2 before ComfyUI sees a prompt."""
    speck = tmp_path / "speck.png"
    mask = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)
    mask.paste(255, (33, 33, 35, 35))
    mask.save(speck)
    before = len(server.client.get_json("/history"))
    result = oir_edit(
        *server_flags(server), *TINY_FLAGS, "--image", str(images["image"]),
        "--prompt", "a dog sitting next to a gift", "--edit", f"dog=cat:{speck}",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "speck.png" in result.stderr and "latent grid" in result.stderr
    assert len(server.client.get_json("/history")) == before  # nothing was queued


def test_sixteen_bit_photo_odd_size_and_alpha_mask_reach_comfyui_as_seen(
    server: TestServer, tmp_path: Path
) -> None:
    """A 16-bit grey 123x89 photo (LoadImage alone would make it white and VAE Encode would crop it)
    and a mask whose object is only in its alpha channel. The upload ComfyUI reads is the picture,
    padded to 128x96; edited.png is 123x89 and report.json says so; progress shows rows and an ETA."""
    photo, mask, grey, _ = sample_files_module().grey16_photo_and_alpha_mask(tmp_path, seed=8)
    out = tmp_path / "out"
    result = oir_edit(
        *server_flags(server), *TINY_FLAGS, "--image", str(photo), "--prompt", "a dog sitting next to a gift",
        "--edit", f"dog=cat:{mask}", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["image_size"] == [123, 89] and report["worked_at_size"] == [128, 96]
    assert report["mask_rules"] == ["alpha"]
    assert Image.open(out / "edited.png").size == (123, 89)
    loader = next(n for n in report["workflow"].values() if n["class_type"] == "LoadImage")
    folder, name = loader["inputs"]["image"].split("/")
    uploaded = Image.open(
        io.BytesIO(server.client.view({"filename": name, "subfolder": folder, "type": "input"}))
    )
    assert uploaded.size == (128, 96)
    assert np.array_equal(
        np.asarray(uploaded.convert("RGB"))[:89, :123], np.repeat(grey[..., None], 3, axis=2)
    )
    # not a TTY: one line per stage when it finishes (and every 10 s meanwhile)
    search_lines = [line for line in result.stderr.splitlines() if line.strip().startswith("search")]
    assert search_lines and all("rows" in line and "ETA" in line for line in search_lines)
    assert any(f"level {STEPS}/{STEPS}" in line for line in result.stderr.splitlines())


def test_bad_input_is_one_line_before_any_work(images: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    common = [
        "--image",
        str(images["image"]),
        "--prompt",
        "a dog sitting next to a gift",
        "--out",
        str(tmp_path),
    ]
    missing = oir_edit(*common, "--edit", f"dog=cat:{tmp_path / 'nope.png'}", "--server", closed)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "nope.png does not exist" in missing.stderr
    unreachable = oir_edit(
        *common, "--edit", f"dog=cat:{images['dog']}", "--server", closed, "--checkpoint", "x"
    )
    assert unreachable.returncode == 2
    assert unreachable.stderr.count("\n") == 1 and "cannot reach ComfyUI" in unreachable.stderr
    assert not (tmp_path / "report.json").exists()


def test_command_starts_and_stops_its_own_comfyui(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """--comfyui: the pack is linked into a temporary custom_nodes; the test loader comes in by
    --extra-custom-nodes, the tiny scorer by --extra-model-paths-config."""
    import comfy_env

    models = server.root / "models"
    config = tmp_path / "models.yaml"
    config.write_text(
        yaml.safe_dump({"tiny": {"base_path": str(models), "oir_clip": "oir_clip"}}), encoding="utf-8"
    )
    out = tmp_path / "out"
    result = oir_edit(
        "--comfyui",
        str(comfy_env.comfyui_path()),
        "--cpu",
        "--extra-custom-nodes",
        str(TEST_NODES_DIR / "oir_test_models"),
        "--extra-model-paths-config",
        str(config),
        "--model-loader",
        TEST_LOADER,
        "--checkpoint",
        TINY_CHECKPOINT,
        *TINY_FLAGS,
        "--image",
        str(images["image"]),
        "--prompt",
        "a dog sitting next to a gift",
        "--edit",
        f"dog=cat:{images['dog']}",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "ComfyUI ready at" in result.stderr
    report = check_outputs(out, [("dog", "cat")])
    assert report["server"]["launched"] is True and report["server"]["start_s"] > 0
    port = int(report["server"]["url"].rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):  # the server is gone
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def _edit_running(server: TestServer, deadline: float) -> bool:
    """Whether the server runs a prompt (``/queue``), waiting up to ``deadline`` (monotonic)."""
    while time.monotonic() < deadline:
        if server.client.get_json("/queue").get("queue_running"):
            return True
        time.sleep(0.1)
    return False


def test_comfyui_killed_during_the_edit_is_exit_1_with_error_txt(
    images: dict[str, Path], tmp_path: Path
) -> None:
    """A ComfyUI of its own, killed (SIGKILL) while it certainly runs the edit (the stalling loader):
    the edit failed, the input was fine: exit 1, one line, the reason in error.txt."""
    server = start_test_server(tmp_path / "server", controlnet=False)
    out = tmp_path / "out"
    try:
        command = subprocess.Popen(
            [console_script(), "--server", server.url, "--model-loader", STALLING_LOADER,
             "--checkpoint", TINY_CHECKPOINT, *TINY_FLAGS, "--image", str(images["image"]),
             "--prompt", "a dog sitting next to a gift", "--edit", f"dog=cat:{images['dog']}",
             "--out", str(out), "-q"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert _edit_running(server, time.monotonic() + COMMAND_TIMEOUT), "the edit never started"
            assert server.server.process is not None
            os.killpg(server.server.process.pid, signal.SIGKILL)  # its own session: ComfyUI and children
            _, err = command.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            if command.poll() is None:
                command.kill()
    finally:
        server.stop()
    assert command.returncode == 1, err
    assert err.count("\n") == 1 and f"oir-edit: error: cannot reach ComfyUI at {server.url}" in err, err
    assert "cannot reach ComfyUI" in (out / "error.txt").read_text(encoding="utf-8")
    assert not (out / "report.json").exists()


def test_edit_past_its_timeout_is_exit_1_and_leaves_the_server_free(
    server: TestServer, images: dict[str, Path], tmp_path: Path
) -> None:
    """The exit-code table's timeout row (docs/headless.md) on a real ComfyUI: the stalled prompt
    is interrupted and taken off."""
    out = tmp_path / "out"
    result = oir_edit(
        "--server", server.url, "--model-loader", STALLING_LOADER, "--checkpoint", TINY_CHECKPOINT,
        *TINY_FLAGS, "--image", str(images["image"]), "--prompt", "a dog sitting next to a gift",
        "--edit", f"dog=cat:{images['dog']}", "--out", str(out), "-q", "--timeout", "3",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "the edit did not finish within 3 s" in result.stderr
    assert "did not finish" in (out / "error.txt").read_text(encoding="utf-8")
    deadline = time.monotonic() + 60
    while server.client.get_json("/queue").get("queue_running") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.client.get_json("/queue").get("queue_running")  # interrupted, not left running
