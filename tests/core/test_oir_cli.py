"""The headless ``oir-edit`` command without ComfyUI: specs, flags, OIR-Bench, workflows, errors, batches.

Everything here runs in CI: the server side is a fake client with canned ``/object_info``
answers, a throw-away websocket server on the loopback, or fake ``main.py`` scripts for the
launcher. ``tests/integration/test_cli.py`` runs the real thing against ComfyUI.
"""

from __future__ import annotations

import copy
import io
import json
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sample_files
import yaml
from PIL import Image
from stub_comfy import LoopbackApp

from oir_cli import answers, arguments, checks, cli, discovery, results, runner
from oir_cli import server as launcher
from oir_cli.arguments import build_parser, spec_from_args
from oir_cli.batch import run_batch
from oir_cli.checks import validate_local
from oir_cli.client import (
    BadAnswer,
    ComfyClient,
    ExecutionFailed,
    HeadlessError,
    ServerUnreachable,
    describe_refusal,
)
from oir_cli.discovery import Case, discover_cases
from oir_cli.filling import fill_workflow, load_template, nodes_of
from oir_cli.progress import Progress
from oir_cli.runner import EditRunner
from oir_cli.server import ComfyServer
from oir_cli.specs import (
    ControlNetItem,
    EditItem,
    EditSpec,
    LoraItem,
    SpecError,
    parse_controlnet_arg,
    parse_edit_arg,
    parse_lora_arg,
    spec_from_mapping,
)

PROMPT = "a dog sitting next to a gift"


# --------------------------------------------------------------------------------------------------
# fixtures


def _save(
    path: Path, size: tuple[int, int], box: tuple[int, int, int, int] | None = None, rgb: bool = False
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgb:
        Image.new("RGB", size, (120, 80, 40)).save(path)
        return path
    image = Image.new("L", size, 0)
    if box is not None:
        image.paste(255, box)
    image.save(path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A 64x48 image, masks at full and half resolution, a wrong-aspect and an empty mask, a hint."""
    return {
        "image": _save(tmp_path / "photo.png", (64, 48), rgb=True),
        "dog": _save(tmp_path / "masks" / "dog.png", (64, 48), (4, 8, 28, 40)),
        "gift": _save(tmp_path / "masks" / "gift.png", (32, 24), (18, 12, 30, 23)),  # half resolution: fine
        "square": _save(tmp_path / "masks" / "square.png", (48, 48), (4, 4, 20, 20)),
        "empty": _save(tmp_path / "masks" / "empty.png", (64, 48)),
        "hint": _save(tmp_path / "hint.png", (64, 48), rgb=True),
        "speck": _save(tmp_path / "masks" / "speck.png", (64, 48), (35, 35, 37, 37)),  # between grid samples
        "green": _green_on_white(tmp_path / "masks" / "green.png", (64, 48)),
        "clear": _clear(tmp_path / "masks" / "clear.png", (64, 48)),
    }


def _green_on_white(path: Path, size: tuple[int, int]) -> Path:
    """A green object on white: luminance above one half everywhere; red marks the background only."""
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((0, 255, 0), (4, 8, 28, 40))
    image.save(path)
    return path


def _clear(path: Path, size: tuple[int, int]) -> Path:
    """White colours, fully transparent: empty by the alpha rule."""
    Image.new("RGBA", size, (255, 255, 255, 0)).save(path)
    return path


def make_spec(files: dict[str, Path], **changes: Any) -> EditSpec:
    fields: dict[str, Any] = {
        "name": "case",
        "image": files["image"],
        "prompt": PROMPT,
        "edits": (EditItem("dog", "cat", files["dog"]), EditItem("gift", "cake", files["gift"])),
        "checkpoint": "sd15.safetensors",
        "steps": 5,
        "reassembly_step": 2,
        "reinversion_steps": 2,
    }
    fields.update(changes)
    return EditSpec(**fields)


def uploads_for(spec: EditSpec) -> dict[Path, str]:
    return {path: f"up/{path.name}" for path in spec.files()}


# --------------------------------------------------------------------------------------------------
# shorthand arguments


def test_edit_argument_forms(tmp_path: Path) -> None:
    edit = parse_edit_arg("dog=cat:masks/dog.png", tmp_path)
    assert edit == EditItem("dog", "cat", tmp_path / "masks" / "dog.png")
    second = parse_edit_arg("red car#2=blue car:C:\\masks\\car.png", tmp_path)
    assert (second.source, second.target, second.occurrence) == ("red car", "blue car", 2)
    assert second.mask.name == "C:\\masks\\car.png"  # the mask path keeps its own colons


@pytest.mark.parametrize(
    "text", ["dog:cat.png", "dog=cat", "=cat:m.png", "dog=:m.png", "dog=cat:", "dog#0=cat:m.png"]
)
def test_bad_edit_argument_is_one_line(text: str) -> None:
    with pytest.raises(SpecError, match="--edit") as caught:
        parse_edit_arg(text)
    assert "\n" not in str(caught.value)


def test_lora_and_controlnet_arguments(tmp_path: Path) -> None:
    assert parse_lora_arg("style.safetensors:0.8") == LoraItem("style.safetensors", 0.8, 0.8)
    assert parse_lora_arg("style.safetensors:0.8:0.3") == LoraItem("style.safetensors", 0.8, 0.3)
    assert parse_lora_arg("style.safetensors") == LoraItem("style.safetensors", 1.0, 1.0)
    with pytest.raises(SpecError, match="not a number"):
        parse_lora_arg("style.safetensors:strong")
    assert parse_controlnet_arg("depth.pth:0.6:hints/h.png", tmp_path) == ControlNetItem(
        "depth.pth", 0.6, tmp_path / "hints" / "h.png"
    )
    assert parse_controlnet_arg("depth.pth") == ControlNetItem("depth.pth", 1.0, None)
    with pytest.raises(SpecError, match="--controlnet"):
        parse_controlnet_arg("depth.pth:strong")


# --------------------------------------------------------------------------------------------------
# spec files and flags


def _spec_mapping(files: dict[str, Path], folder: Path) -> dict[str, Any]:
    return {
        "image": str(files["image"].relative_to(folder)),
        "prompt": PROMPT,
        "edits": [
            {"source": "dog", "target": "cat", "mask": str(files["dog"].relative_to(folder))},
            f"gift=cake:{files['gift'].relative_to(folder)}",
        ],
        "checkpoint": "sd15.safetensors",
        "reassembly-step": 3,
        "loras": ["style.safetensors:0.5", {"name": "detail.safetensors", "strength": 0.3}],
        "controlnets": [{"name": "depth.pth", "strength": 0.6, "hint": "hint.png"}],
    }


def test_spec_file_paths_are_relative_to_the_file(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "edit.yaml"
    path.write_text(yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8")
    (case,) = discovery.load_spec_file(path)
    spec = case.spec
    assert spec is not None and case.error is None and spec.name == "edit"
    assert spec.image == files["image"] and spec.prompt == PROMPT
    assert spec.edits == (EditItem("dog", "cat", files["dog"]), EditItem("gift", "cake", files["gift"]))
    assert spec.reassembly_step == 3 and spec.steps == 50  # dashes accepted; defaults elsewhere
    assert spec.loras == (LoraItem("style.safetensors", 0.5, 0.5), LoraItem("detail.safetensors", 0.3, 0.3))
    assert spec.controlnets == (ControlNetItem("depth.pth", 0.6, files["hint"]),)
    json_path = tmp_path / "edit.json"
    json_path.write_text(json.dumps(_spec_mapping(files, tmp_path)), encoding="utf-8")
    (twin,) = discovery.load_spec_file(json_path)
    assert twin.spec == spec  # same fields in JSON


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reasembly_step": 3}, "unknown field.*reasembly_step"),
        ({"edits": []}, "missing 'edits'"),
        ({"search_mode": "fast"}, "'search_mode' = 'fast' is not one of exhaustive"),
        ({"steps": "many"}, "'steps' = 'many' is not a whole number"),
        ({"cfg": "high"}, "'cfg' = 'high' is not a number"),
        ({"steps": 5.5}, "'steps' = 5.5 is not a whole number"),
        ({"max_batch": True}, "'max_batch' = True is not a whole number"),  # YAML's yes
        ({"scorer_precision": "fp8"}, "'scorer_precision' = 'fp8' is not one of fp32, fp16"),
        ({"background": "keep"}, "'background' = 'keep' is not one of official, preserve"),
        ({"feather": 1.5}, "'feather' = 1.5 is not a whole number"),
        ({"edits": [{"source": "dog", "target": "cat"}]}, "lacks mask"),
        ({"edits": [{"source": "dog", "target": "cat", "mask": "m.png", "colour": 1}]}, "unknown edit field"),
        ({"edits": [{"source": "dog", "target": "cat", "mask": "m.png", "occurrence": -1}]}, "occurrence -1"),
    ],
)
def test_bad_spec_fields_are_named(
    files: dict[str, Path], tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = dict(_spec_mapping(files, tmp_path), **change)
    with pytest.raises(SpecError, match=message) as caught:
        spec_from_mapping(data, tmp_path, "case")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("case: ")


def test_spec_settings_take_what_yaml_and_flags_give(files: dict[str, Path], tmp_path: Path) -> None:
    data = dict(
        _spec_mapping(files, tmp_path),
        steps="20",  # a flag's text
        reassembly_step=8.0,  # a whole float
        cfg=7,
        step_override=12,  # YAML reads a bare 12 as a number
        checkpoint=" sd15.safetensors ",
        target_prompt="  ",  # empty: built from the pairs
    )
    spec = spec_from_mapping(data, tmp_path, "case")
    assert (spec.steps, spec.reassembly_step, spec.cfg) == (20, 8, 7.0)
    assert (spec.step_override, spec.checkpoint, spec.target_prompt) == ("12", "sd15.safetensors", None)


def test_flags_alone_make_a_spec(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser("run").parse_args(
        [
            "--image",
            "photo.png",
            "--prompt",
            PROMPT,
            "--edit",
            "dog=cat:masks/dog.png",
            "--edit",
            "gift#1=cake:masks/gift.png",
            "--checkpoint",
            "sd15.safetensors",
            "--steps",
            "5",
            "--lora",
            "style.safetensors:0.8",
            "--controlnet",
            "depth.pth:0.6",
            "--out",
            "out",
        ]
    )
    spec = spec_from_args(args)
    assert spec.name == "photo" and spec.image == files["image"] and spec.steps == 5
    assert spec.edits == (EditItem("dog", "cat", files["dog"]), EditItem("gift", "cake", files["gift"], 1))
    assert spec.loras == (LoraItem("style.safetensors", 0.8, 0.8),)
    assert spec.controlnets == (ControlNetItem("depth.pth", 0.6, None),)
    assert spec.cfg == 7.5 and spec.search_mode == "exhaustive"  # untouched defaults


def test_flags_override_the_spec_file(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(dict(_spec_mapping(files, tmp_path), steps=50, cfg=5.0)), encoding="utf-8")
    monkeypatch.chdir(files["dog"].parent)
    args = build_parser("run").parse_args(
        ["--spec", str(path), "--steps", "8", "--edit", "dog=kitten:dog.png", "--out", "o"]
    )
    spec = spec_from_args(args)
    assert spec.steps == 8 and spec.cfg == 5.0  # the flag wins, the file's other fields stay
    assert spec.edits == (EditItem("dog", "kitten", files["dog"]),)  # --edit replaces the file's edits
    assert spec.reassembly_step == 3


def test_background_flags_reach_the_reassembly_and_are_checked_locally(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    flags = ["--spec", str(path), "--background", "preserve", "--feather", "2", "--out", "o"]
    spec = spec_from_args(build_parser("run").parse_args(flags))
    assert (spec.background, spec.feather) == ("preserve", 2)
    graph = fill_workflow(load_template(), spec, uploads_for(spec), scorer="clip-b16")
    reassembly = next(n for n in graph.values() if n["class_type"] == "OIRObjectReassembly")
    assert (reassembly["inputs"]["background"], reassembly["inputs"]["feather"]) == ("preserve", 2)
    assert reassembly["inputs"]["vae"] == ["1", 2]  # the node measures the background's PSNR
    wide = spec_from_args(build_parser("run").parse_args([*flags[:-2], "--feather", "99", "--out", "o"]))
    with pytest.raises(SpecError, match=r"feather.*0\.\.32"):
        checks.validate_local(wide)


def test_single_run_refuses_a_file_with_several_cases(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    mapping = _spec_mapping(files, tmp_path)
    path.write_text(yaml.safe_dump({"one": mapping, "two": mapping}), encoding="utf-8")
    with pytest.raises(SpecError, match="holds 2 cases: run them with 'oir-edit batch"):
        discovery.single_spec(path)
    with pytest.raises(SpecError, match="not an edit spec"):
        (tmp_path / "other.yaml").write_text("a: 1\n", encoding="utf-8")
        discovery.single_spec(tmp_path / "other.yaml")


def test_batch_flags_are_defaults_and_cases_win(files: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.yaml").write_text(
        yaml.safe_dump(dict(_spec_mapping(files, tmp_path), steps=9)), encoding="utf-8"
    )
    (folder / "b.yaml").write_text(yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8")
    args = build_parser("batch").parse_args([str(folder), "--out", str(tmp_path / "out"), "--steps", "7"])
    defaults = arguments.spec_fields_from_args(args)
    cases = {c.name: c.spec for c in discover_cases(folder, defaults)}
    assert cases["a"] is not None and cases["a"].steps == 9
    assert cases["b"] is not None and cases["b"].steps == 7
    with pytest.raises(SystemExit):  # batch mode takes no per-edit flags
        build_parser("batch").parse_args([str(folder), "--out", "o", "--image", "x.png"])


# --------------------------------------------------------------------------------------------------
# OIR-Bench layout and batch discovery


def _oir_bench(root: Path) -> Path:
    """The official configs' schema: multi-object (templates) and single-object (target changes)."""
    bench = root / "OIR-Bench"
    _save(bench / "multi_object" / "dataset" / "multi_object_009.png", (64, 64), rgb=True)
    _save(bench / "multi_object" / "mask" / "multi_object_009" / "dumplings.png", (64, 64), (0, 0, 30, 30))
    _save(bench / "multi_object" / "mask" / "multi_object_009" / "chopsticks.png", (64, 64), (34, 34, 60, 60))
    _save(bench / "single_object" / "dataset" / "bird_0001_0.png", (64, 64), rgb=True)
    _save(bench / "single_object" / "mask" / "bird_0001_0" / "bird.png", (64, 64), (10, 10, 40, 40))
    multi = sample_files.oir_bench_multi_object(reassembly_step=10)
    single = {
        "bird_0001_0": {
            "image_path": "OIR-Bench/single_object/dataset/bird_0001_0.png",
            "origin_prompt": "a bird perched on a branch with white flowers ",
            "target_prompt_list": ["a ", " perched on a branch with white flowers"],
            "target_changes": ["duck", "flamingo"],
            "origin_prompt_mask": "OIR-Bench/single_object/mask/bird_0001_0/bird.png",
            "generation_image_path": "single_object_results/",
        }
    }
    (bench / "multi_object.yaml").write_text(yaml.safe_dump(multi), encoding="utf-8")
    (bench / "single_object.yaml").write_text(yaml.safe_dump(single), encoding="utf-8")
    return bench


def test_oir_bench_layout_is_discovered(tmp_path: Path) -> None:
    bench = _oir_bench(tmp_path)
    cases = {case.name: case for case in discover_cases(bench)}
    assert sorted(cases) == ["bird_0001_0/duck", "bird_0001_0/flamingo", "multi_object_009"]
    multi = cases["multi_object_009"].spec
    assert multi is not None
    assert multi.image == bench / "multi_object" / "dataset" / "multi_object_009.png"
    assert [(e.source, e.target) for e in multi.edits] == [("dumplings", "fry rice"), ("chopsticks", "knife")]
    assert [e.mask.name for e in multi.edits] == ["dumplings.png", "chopsticks.png"]
    assert all(e.mask.is_file() for e in multi.edits)
    assert [e.guided_prompt for e in multi.edits] == [
        "a bowl of fry rice on the left and chopsticks on the right",
        "a bowl of dumplings on the left and knife on the right",
    ]
    assert multi.target_prompt == "a bowl of fry rice on the left and knife on the right"
    assert (multi.reassembly_step, multi.reinversion_steps) == (10, 10)
    duck = cases["bird_0001_0/duck"].spec
    assert duck is not None and duck.prompt == "a bird perched on a branch with white flowers"
    (edit,) = duck.edits
    assert (edit.source, edit.target) == ("bird", "duck")
    assert edit.mask == bench / "single_object" / "mask" / "bird_0001_0" / "bird.png"
    assert duck.target_prompt == "a duck perched on a branch with white flowers"
    plan = validate_local(multi).plan
    assert plan.guided == [e.guided_prompt for e in multi.edits] and plan.score_texts == ["fry rice", "knife"]
    assert results.safe_case_dir("bird_0001_0/duck") == Path("bird_0001_0") / "duck"


def test_bench_paths_are_used_exactly_as_named(tmp_path: Path) -> None:
    """Relative to the folder holding OIR-Bench (the official repository's root), never a same-named
    file elsewhere: a missing mask fails its case with its exact path, even with a decoy nearby."""
    bench = _oir_bench(tmp_path)
    assert discovery.bench_base(bench / "multi_object.yaml") == tmp_path
    assert discovery.bench_base(bench / "sub" / "deeper.yaml") == tmp_path
    assert discovery.bench_base(tmp_path / "configs" / "c.yaml") == tmp_path / "configs"  # like a spec file
    named = "OIR-Bench/multi_object/mask/multi_object_009/dumplings.png"
    (bench / "multi_object" / "mask" / "multi_object_009" / "dumplings.png").unlink()
    _save(bench / "dumplings.png", (64, 64), (0, 0, 30, 30))  # decoys: the same name next to the config
    _save(bench / "multi_object" / "dumplings.png", (64, 64), (0, 0, 30, 30))
    _save(tmp_path / "mask" / "multi_object_009" / "dumplings.png", (64, 64), (0, 0, 30, 30))
    (bench / "single_object.yaml").write_text(
        yaml.safe_dump(
            {
                "bird_0001_0": {
                    **yaml.safe_load((bench / "single_object.yaml").read_text())["bird_0001_0"],
                    "origin_prompt_mask": "/home/someone/OIR/OIR-Bench/single_object/mask/b/bird.png",
                }
            }
        ),
        encoding="utf-8",
    )
    cases = {case.name: case for case in discover_cases(bench)}
    multi = cases["multi_object_009"].spec
    assert multi is not None and multi.edits[0].mask == tmp_path / named
    with pytest.raises(SpecError) as refused:
        validate_local(multi)
    assert f"{tmp_path / named} does not exist" in str(refused.value)
    duck = cases["bird_0001_0/duck"].spec  # an absolute path from another machine stays as it is
    assert duck is not None and duck.edits[0].mask == Path(
        "/home/someone/OIR/OIR-Bench/single_object/mask/b/bird.png"
    )


def test_discovery_ignores_non_specs_skips_output_and_reports_broken_files(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "batch"
    (folder / "out" / "a").mkdir(parents=True)
    (folder / "a.yaml").write_text(yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8")
    (folder / "notes.yaml").write_text("owner: me\n", encoding="utf-8")
    (folder / "broken.yaml").write_text("image: [unclosed\n", encoding="utf-8")
    (folder / "out" / "a" / "report.json").write_text('{"image": "x", "prompt": "p"}', encoding="utf-8")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "h.yaml").write_text(
        yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8"
    )
    (folder / "sub").mkdir()
    (folder / "sub" / "a.json").write_text(json.dumps(_spec_mapping(files, tmp_path)), encoding="utf-8")
    cases = discover_cases(folder, exclude=[folder / "out"])
    assert [(c.name, c.error is None) for c in cases] == [("a", True), ("broken", False), ("a", False)]
    assert "not valid YAML" in (cases[1].error or "")
    assert "case name also used in" in (cases[2].error or "")
    with pytest.raises(SpecError, match="does not exist"):
        discover_cases(tmp_path / "nope")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\x00\xff\xfe", "a binary file, not YAML text"),
        (b"image: photo.png\nprompt: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 28)"),
        (b"- image: photo.png\n- prompt: p\n", "a list, not an edit spec"),
        (b"just words\n", "a str, not an edit spec"),
        (b"", "empty, not an edit spec"),
        (b"x: [[[\n", "not valid YAML"),
    ],
)
def test_a_bad_spec_file_fails_its_own_case_and_the_batch_goes_on(
    files: dict[str, Path], tmp_path: Path, content: bytes, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.yaml").write_text(yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8")
    (folder / "bad.yaml").write_bytes(content)
    (folder / "c.yaml").write_text(yaml.safe_dump(_spec_mapping(files, tmp_path)), encoding="utf-8")
    cases = discover_cases(folder)
    assert [(c.name, c.spec is not None) for c in cases] == [("a", True), ("bad", False), ("c", True)]
    error = cases[1].error or ""
    assert error.startswith(f"{folder / 'bad.yaml'}: ") and problem in error and "\n" not in error
    # --spec with the same file: one line, exit 2
    assert cli.main(["--spec", str(folder / "bad.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"oir-edit: error: {error}"


def test_huge_spec_files_and_bad_entries_fail_their_own_cases(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    good = _spec_mapping(files, tmp_path)
    monkeypatch.setattr(discovery, "MAX_SPEC_BYTES", 2048)
    (folder / "huge.yaml").write_text("# padding\n" * 300 + yaml.safe_dump(good), encoding="utf-8")
    mixed = {
        "fine": good,
        "listed": [1, 2],
        "odd_lora": dict(good, loras=[{"name": "x", "strength": "lots"}]),
    }
    (folder / "mixed.yaml").write_text(yaml.safe_dump(mixed), encoding="utf-8")
    cases = {c.name: c for c in discover_cases(folder)}
    assert sorted(cases) == ["fine", "huge", "listed", "odd_lora"] and cases["fine"].spec is not None
    assert "too large for a spec file (at most 0 MiB" in (cases["huge"].error or "")
    assert "entry 'listed' is not an edit spec" in (cases["listed"].error or "")
    assert cases["odd_lora"].spec is None  # the bad entry fails alone, in one line
    assert cases["odd_lora"].error == "odd_lora: lora 1: strength 'lots' is not a number"


# --------------------------------------------------------------------------------------------------
# local validation: every bad input is one line, before any server work


def test_valid_spec_passes_local_checks(files: dict[str, Path]) -> None:
    check = validate_local(make_spec(files))
    assert check.image_size == (64, 48) and check.mask_sizes == ((64, 48), (32, 24))
    assert check.plan.target == "a cat sitting next to a cake"
    assert check.padded_size == (64, 48) and check.mask_rules == ("luminance", "luminance")


def _uploaded(check: Any, path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(check.uploads[path][1])))


def test_uploads_are_what_a_person_sees_padded_to_the_latent_factor(tmp_path: Path) -> None:
    """A 16-bit grey 123x89 photo, an alpha-only mask and a half-size mask: each upload is exact."""
    photo, alpha_mask, grey, shape = sample_files.grey16_photo_and_alpha_mask(tmp_path, seed=3)
    spec = make_spec(
        {"image": photo, "dog": alpha_mask, "gift": alpha_mask},
        edits=(EditItem("dog", "cat", alpha_mask),),
        prompt="a dog",
    )
    check = validate_local(spec)
    assert check.image_size == (123, 89) and check.padded_size == (128, 96) and check.mask_rules == ("alpha",)
    image = _uploaded(check, photo)
    assert image.shape == (96, 128, 3)
    assert np.array_equal(image[:89, :123], np.repeat(grey[..., None], 3, axis=2))  # not clipped to white
    assert np.array_equal(image[89:, :123], np.repeat(image[88:89, :123], 7, axis=0))  # edge repeated
    mask = _uploaded(check, alpha_mask)
    assert mask.shape == (96, 128) and np.array_equal(mask[:89, :123], shape) and not mask[89:].any()
    names = [name for name, _ in check.uploads.values()]
    assert len(set(names)) == 2 and all(name.endswith(".png") for name in names)


def test_output_folder_problems_are_one_line(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("x", encoding="utf-8")
    with pytest.raises(SpecError, match=r"taken\.txt is a file: give a folder"):
        cli.writable_folder(a_file)
    with pytest.raises(SpecError, match="cannot write there"):
        cli.writable_folder(a_file / "below")
    common = ["--image", str(files["image"]), "--prompt", PROMPT, "--edit", f"dog=cat:{files['dog']}"]
    code = cli.main([*common, "--out", str(a_file), "--server", _closed_url()])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "is a file: give a folder" in err  # before the server


BAD_LOCAL_INPUTS: list[tuple[Any, str]] = [
    (lambda f: {"image": f["image"].with_name("missing.png")}, "image .*missing.png does not exist"),
    (lambda f: {"image": f["image"].with_name("text.png")}, "not a readable image"),
    (
        lambda f: {"edits": (EditItem("dog", "cat", f["dog"].with_name("nope.png")),)},
        "nope.png does not exist",
    ),
    (lambda f: {"edits": (EditItem("dog", "cat", f["square"]),)}, "48x48 but the image is 64x48.*aspect"),
    (lambda f: {"edits": (EditItem("dog", "cat", f["empty"]),)}, "empty.png is empty"),
    (lambda f: {"edits": (EditItem("cow", "cat", f["dog"]),)}, "edit 1 source.*'cow'.*not found"),
    (lambda f: {"prompt": "a dog next to a dog"}, "occurs 2 times"),
    (lambda f: {"reassembly_step": 5}, "reassembly_step.*must lie in 0..4"),
    (lambda f: {"reinversion_steps": 4}, "exceeds the inversion's"),
    (lambda f: {"steps": 1}, "at least 2 steps"),
    (lambda f: {"cfg": 0.0}, "cfg = 0.0: must be positive"),
    (lambda f: {"step_override": "auto, 3, 4"}, "3 entries for 2 edit pairs"),
    # ddim_uniform makes at most 7 levels of 6 steps (1000 // 6 at a time from level 1); other
    # schedules at most the typed steps
    (lambda f: {"steps": 6, "step_override": "8, auto"}, r"step in 1\.\.7"),
    (lambda f: {"steps": 6, "scheduler": "normal", "step_override": "7, auto"}, r"step in 1\.\.6"),
    (lambda f: {"search_mode": "custom", "custom_steps": "1-9"}, "steps must lie in 1..5"),
    (lambda f: {"search_mode": "coarse_to_fine", "coarse_stride": 9}, "coarse_stride"),
    (
        lambda f: {"controlnets": (ControlNetItem("cn", 1.0, f["hint"].with_name("h2.png")),)},
        "hint of controlnet 1",
    ),
    # the catalogue of bad inputs: each refused before anything is queued
    (
        lambda f: {"image": _save(f["image"].with_name("tiny.png"), (24, 18), rgb=True)},
        "24x18: OIR needs at least 32",
    ),
    (lambda f: {"edits": (EditItem("dog", "dog", f["dog"]),)}, "edit 1 target.*same as its source 'dog'"),
    (lambda f: {"edits": (EditItem("dog", "DOG", f["dog"]),)}, "same as its source"),
    (
        lambda f: {"edits": (EditItem("dog", "  ", f["dog"]),)},
        "empty: nothing says what 'dog' should become",
    ),
    (
        lambda f: {"edits": (EditItem("dog", "cat", f["speck"]),)},
        r"mask of edit 1 \(dog -> cat, speck.png\).*empty at the 8x6 latent grid",
    ),
    (
        lambda f: {"edits": (EditItem("dog", "cat", f["dog"]), EditItem("gift", "cake", f["dog"]))},
        "edit 1 .*covered by later pairs",
    ),
    (
        lambda f: {
            "overlap": "error",
            "edits": (EditItem("dog", "cat", f["dog"]), EditItem("gift", "cake", f["dog"])),
        },
        "masks of several edit pairs overlap",
    ),
    (
        lambda f: {"edits": (EditItem("dog", "cat", f["green"]),)},
        "whole image by its luminance.*red marks only",
    ),
    (lambda f: {"edits": (EditItem("dog", "cat", f["clear"]),)}, "clear.png is empty by its alpha"),
]
"""(spec change, message): every local refusal, through the function and through the command."""


def test_a_level_the_schedule_adds_beyond_the_typed_steps_is_not_refused(files: dict[str, Path]) -> None:
    """ComfyUI's ddim_uniform makes 7 levels of steps = 6; the server accepts level 7 and R = 6, so
    the checks made before it answers must too."""
    check = validate_local(
        make_spec(files, steps=6, step_override="7, auto", reassembly_step=6, reinversion_steps=1)
    )
    assert check.reassembly == (6, 1)


@pytest.mark.parametrize(("change", "message"), BAD_LOCAL_INPUTS)
def test_bad_input_is_one_line_naming_the_problem(files: dict[str, Path], change: Any, message: str) -> None:
    files["image"].with_name("text.png").write_text("not an image", encoding="utf-8")
    with pytest.raises(SpecError, match=message) as caught:
        validate_local(make_spec(files, **change(files)))
    assert "\n" not in str(caught.value) and str(caught.value).startswith("case: ")


@pytest.mark.parametrize(("change", "message"), BAD_LOCAL_INPUTS)
def test_every_local_refusal_is_exit_2_through_the_command(
    files: dict[str, Path], change: Any, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same catalogue through ``oir-edit --spec``: exit 2, one line, before any server is contacted."""
    files["image"].with_name("text.png").write_text("not an image", encoding="utf-8")
    fields = make_spec(files, **change(files)).to_dict()
    del fields["name"]
    spec = tmp_path / "case.yaml"
    spec.write_text(yaml.safe_dump(fields), encoding="utf-8")
    code = cli.main(["--spec", str(spec), "--server", _closed_url(), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(message, err) and "cannot reach ComfyUI" not in err


def test_cli_stops_at_local_errors_before_contacting_the_server(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = _closed_url()
    common = [
        "--image",
        str(files["image"]),
        "--prompt",
        PROMPT,
        "--out",
        str(tmp_path / "o"),
        "--server",
        closed,
    ]
    code = cli.main([*common, "--edit", f"dog=cat:{files['square']}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "aspect ratios differ" in err  # not the server's error
    code = cli.main([*common, "--edit", f"dog=cat:{files['dog']}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"cannot reach ComfyUI at {closed}" in err
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    code = cli.main([*common[:-2], "--edit", f"dog=cat:{files['dog']}"])
    err = capsys.readouterr().err
    assert code == 2 and "no ComfyUI: give --server URL, or --comfyui PATH" in err


def _closed_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_unreachable_server_is_one_line() -> None:
    with pytest.raises(ServerUnreachable, match=r"cannot reach ComfyUI at http://127\.0\.0\.1:") as caught:
        ComfyClient(_closed_url(), timeout=2, retries=1).system_stats()
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------------
# workflow filling: exact node inputs


def test_two_pair_spec_fills_every_input(files: dict[str, Path]) -> None:
    spec = make_spec(
        files, seed=3, cfg=6.0, step_override="auto, 4", search_mode="custom", custom_steps="2-5"
    )
    graph = fill_workflow(load_template(), spec, uploads_for(spec), scorer="clip-b16")
    assert graph["1"] == {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sd15.safetensors"},
        "_meta": {"title": "Load Checkpoint"},
    }
    assert graph["2"]["inputs"] == {"image": "up/photo.png"}
    assert graph["3"]["inputs"] == {"image": "up/dog.png", "channel": "red"}
    assert graph["4"]["inputs"] == {"image": "up/gift.png", "channel": "red"}
    assert graph["6"]["inputs"] == {
        "source": "dog", "target": "cat", "occurrence": 0, "guided_prompt": "", "mask": ["3", 0]
    }  # fmt: skip
    assert graph["7"]["inputs"] == {
        "source": "gift", "target": "cake", "occurrence": 0, "guided_prompt": "", "mask": ["4", 0],
        "edit_pairs": ["6", 0],
    }  # fmt: skip
    assert graph["8"]["inputs"] == {
        "original_prompt": PROMPT, "target_prompt": "", "clip": ["1", 1], "edit_pairs": ["7", 0]
    }  # fmt: skip
    assert graph["9"]["inputs"] == {
        "steps": 5, "scheduler": "ddim_uniform", "convention": "auto",
        "model": ["1", 0], "latent": ["5", 0], "original": ["8", 0],
    }  # fmt: skip
    assert graph["10"]["inputs"] == {
        "clip_name": "clip-b16",
        "backend": "auto",
        "device": "auto",
        "precision": "fp32",
        "editing_weight": 0.5,
        "attention_mode": "official",
        "fidelity_space": "official",
        "mask_geometry": "official",
    }
    assert graph["11"]["inputs"] == {
        "cfg": 6.0, "search_mode": "custom", "custom_steps": "2-5", "coarse_stride": 5, "refine_radius": 2,
        "max_batch": 0, "model": ["1", 0], "trajectory": ["9", 0], "oir_edit": ["8", 2], "original": ["8", 0],
        "vae": ["1", 2], "scorer": ["10", 0], "image": ["2", 0],
    }  # fmt: skip
    assert graph["12"]["inputs"] == {
        "step_override": "auto, 4", "candidates": ["11", 0], "scorer": ["10", 0], "image": ["2", 0],
    }  # fmt: skip
    assert graph["13"]["inputs"] == {
        "cfg": 6.0, "reassembly_step": 2, "reinversion_steps": 2, "overlap": "later_wins", "max_batch": 0,
        "mask_geometry": "official", "background": "official", "feather": 0, "vae": ["1", 2],
        "model": ["1", 0], "trajectory": ["9", 0], "oir_edit": ["8", 2],
        "chosen_steps": ["12", 0], "original": ["8", 0], "target": ["8", 1],
    }  # fmt: skip
    assert graph["15"]["inputs"] == {"filename_prefix": "oir-edit/case", "images": ["14", 0]}
    # the final image is scored in the same run, with the search's scorer and the builder's pairs
    assert graph["18"] == {
        "class_type": "OIREditRegionScore",
        "inputs": {"image": ["14", 0], "scorer": ["10", 0], "oir_edit": ["8", 2]},
        "_meta": {"title": "OIR Edit Region Score"},
    }
    assert sorted(graph, key=int) == [str(i) for i in range(1, 19)]


def test_pairs_are_removed_or_added_to_match_the_spec(files: dict[str, Path]) -> None:
    one = make_spec(files, edits=(EditItem("dog", "cat", files["dog"], 1, "a cat here"),))
    graph = fill_workflow(load_template(), one, uploads_for(one), scorer="s")
    assert "7" not in graph and "4" not in graph
    assert graph["6"]["inputs"] == {
        "source": "dog", "target": "cat", "occurrence": 1, "guided_prompt": "a cat here", "mask": ["3", 0]
    }  # fmt: skip
    assert graph["8"]["inputs"]["edit_pairs"] == ["6", 0]
    three = make_spec(files, prompt="a dog, a gift and a dog toy", edits=(
        EditItem("dog", "cat", files["dog"], 1), EditItem("gift", "cake", files["gift"]),
        EditItem("dog toy", "ball", files["dog"]),
    ))  # fmt: skip
    graph = fill_workflow(load_template(), three, uploads_for(three), scorer="s")
    assert graph["18"] == {
        "class_type": "LoadImageMask", "inputs": {"image": "up/dog.png", "channel": "red"},
        "_meta": {"title": "Mask: dog toy"},
    }  # fmt: skip
    assert graph["19"]["class_type"] == "OIREditPair"
    assert graph["19"]["inputs"] == {
        "source": "dog toy", "target": "ball", "occurrence": 0, "guided_prompt": "", "mask": ["18", 0],
        "edit_pairs": ["7", 0],
    }  # fmt: skip
    assert graph["8"]["inputs"]["edit_pairs"] == ["19", 0]


def test_lora_and_controlnet_insertion_reproduces_the_shipped_template(files: dict[str, Path]) -> None:
    spec = make_spec(
        files,
        loras=(LoraItem("style.safetensors", 0.8, 0.6),),
        controlnets=(ControlNetItem("depth.pth", 0.6, files["hint"], 0.1, 0.9),),
    )
    graph = fill_workflow(load_template(), spec, uploads_for(spec), scorer="s")
    shipped = load_template("oir_lora_controlnet_edit")
    (region,) = nodes_of(graph, "OIREditRegionScore")  # added at fill time, not in the templates
    assert sorted(set(graph) - {region}) == sorted(shipped)
    for node_id, node in shipped.items():
        links = {k: v for k, v in node["inputs"].items() if isinstance(v, list)}
        filled = {k: v for k, v in graph[node_id]["inputs"].items() if isinstance(v, list)}
        assert (graph[node_id]["class_type"], filled) == (node["class_type"], links), node_id
    assert graph["18"]["inputs"]["lora_name"] == "style.safetensors"
    assert (graph["18"]["inputs"]["strength_model"], graph["18"]["inputs"]["strength_clip"]) == (0.8, 0.6)
    assert graph["19"]["inputs"] == {"control_net_name": "depth.pth"}
    apply_inputs = {k: v for k, v in graph["20"]["inputs"].items() if not isinstance(v, list)}
    assert apply_inputs == {"strength": 0.6, "start_percent": 0.1, "end_percent": 0.9}
    assert graph["21"]["inputs"] == {"image": "up/hint.png"}


def test_chained_loras_controlnet_without_hint_and_model_loader(files: dict[str, Path]) -> None:
    spec = make_spec(
        files,
        loras=(LoraItem("a.safetensors"), LoraItem("b.safetensors")),
        controlnets=(ControlNetItem("tile.pth", 0.5),),
        scorer="mine",
    )
    template = load_template()
    before = copy.deepcopy(template)
    graph = fill_workflow(template, spec, uploads_for(spec), model_loader="TinyLoader", filename_prefix="p/x")
    assert template == before  # the template is not modified
    assert graph["1"]["class_type"] == "TinyLoader" and graph["10"]["inputs"]["clip_name"] == "mine"
    assert graph["18"]["inputs"]["model"] == ["1", 0] and graph["19"]["inputs"]["model"] == ["18", 0]
    assert graph["9"]["inputs"]["model"] == ["19", 0] and graph["8"]["inputs"]["clip"] == ["19", 1]
    apply_id = next(i for i, n in graph.items() if n["class_type"] == "ControlNetApplyAdvanced")
    assert graph[apply_id]["inputs"]["image"] == ["2", 0]  # no hint: the source image
    assert graph["13"]["inputs"]["target"] == [apply_id, 0] and graph["13"]["inputs"]["original"] == [
        apply_id,
        1,
    ]
    assert graph["15"]["inputs"]["filename_prefix"] == "p/x"


def test_every_shipped_template_loads() -> None:
    for name in sample_files.TEMPLATES:
        assert any(n["class_type"] == "OIRObjectReassembly" for n in load_template(name).values())
    with pytest.raises(SpecError, match="no shipped workflow 'nope'"):
        load_template("nope")


# --------------------------------------------------------------------------------------------------
# server-side checks with a fake server


def _combo(options: list[str], v3: bool = True) -> list[Any]:
    return ["COMBO", {"options": options}] if v3 else [options, {}]


OBJECT_INFO: dict[str, dict[str, Any]] = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": _combo(["sd15.safetensors"], v3=False)}}},
    "LoadImage": {"input": {"required": {"image": [[], {"image_upload": True}]}}},
    "LoadImageMask": {
        "input": {"required": {"image": [[], {}], "channel": _combo(["alpha", "red"], v3=False)}}
    },
    "VAEEncode": {"input": {"required": {}}},
    "VAEDecode": {"input": {"required": {}}},
    "SaveImage": {"input": {"required": {"filename_prefix": ["STRING", {}]}}},
    "PreviewImage": {"input": {"required": {}}},
    "OIREditPair": {"input": {"required": {"occurrence": ["INT", {"min": 0, "max": 64}]}}},
    "OIRGuidedPromptBuilder": {"input": {"required": {}}},
    "OIRDDIMInversion": {
        "input": {
            "required": {
                "steps": ["INT", {"min": 2, "max": 1000}],
                "scheduler": _combo(["normal", "ddim_uniform"]),
                "convention": _combo(["auto", "official", "official_x0", "euler"]),
            }
        }
    },
    "OIRLoadCLIPScorer": {"input": {"required": {"clip_name": _combo(["clip-b16", "clip-l14"])}}},
    "OIRParallelStepSearch": {"input": {"required": {"cfg": ["FLOAT", {"min": 0.0, "max": 100.0}]}}},
    "OIRMaskMetricScorer": {"input": {"required": {}}},
    "OIRObjectReassembly": {"input": {"required": {}}},
    "OIREditRegionScore": {"input": {"required": {}}},
    "LoraLoader": {"input": {"required": {"lora_name": _combo(["style.safetensors"], v3=False)}}},
}


class FakeClient(ComfyClient):
    """Canned /system_stats and /object_info answers."""

    def __init__(self, info: dict[str, Any] | None = None) -> None:
        super().__init__("http://fake:1")
        self.info = copy.deepcopy(OBJECT_INFO if info is None else info)

    def system_stats(self) -> dict[str, Any]:
        return {
            "system": {"comfyui_version": "0.3.64", "pytorch_version": "2.x"},
            "devices": [{"name": "cpu"}],
        }

    def object_info(self, class_type: str) -> dict[str, Any] | None:
        return self.info.get(class_type)


def _check(runner: EditRunner, spec: EditSpec) -> None:
    runner.facts()
    runner.check_workflow(spec, runner.build(spec))


def test_server_checks_accept_a_good_spec_and_default_the_scorer(files: dict[str, Path]) -> None:
    runner = EditRunner(FakeClient(), stream=None)
    spec = make_spec(files)
    _check(runner, spec)
    assert runner.build(spec)["10"]["inputs"]["clip_name"] == "clip-b16"  # the first listed
    assert runner.facts().versions()["comfyui"] == "0.3.64"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"checkpoint": "sdxl.safetensors"},
            "--checkpoint 'sdxl.safetensors' is not offered.*sd15.safetensors",
        ),
        ({"checkpoint": None}, "no checkpoint given.*offers: sd15.safetensors"),
        ({"scorer": "clip-h"}, "--scorer 'clip-h' is not offered.*clip-b16, clip-l14"),
        ({"scheduler": "fancy"}, "--scheduler 'fancy'"),
        ({"steps": 2000}, "--steps = 2000 is outside 2..1000"),
        ({"cfg": 500.0}, "--cfg = 500.0 is outside"),
        ({"loras": (LoraItem("nope.safetensors"),)}, "--lora 'nope.safetensors'"),
        ({"controlnets": (ControlNetItem("depth.pth"),)}, "no ControlNetLoader node"),
    ],
)
def test_server_checks_name_the_flag(files: dict[str, Path], change: dict[str, Any], message: str) -> None:
    runner = EditRunner(FakeClient(), stream=None)
    with pytest.raises(HeadlessError, match=message) as caught:
        _check(runner, make_spec(files, **change))
    assert "\n" not in str(caught.value)


def test_server_without_the_pack_or_loader_or_scorers(files: dict[str, Path]) -> None:
    info = {k: v for k, v in OBJECT_INFO.items() if k != "OIRMaskMetricScorer"}
    with pytest.raises(HeadlessError, match=r"has no OIR nodes \(OIRMaskMetricScorer missing\)"):
        EditRunner(FakeClient(info), stream=None).facts()
    with pytest.raises(HeadlessError, match=r"--model-loader Tiny: .* has no such node"):
        EditRunner(FakeClient(), model_loader="Tiny", stream=None).facts()
    info = copy.deepcopy(OBJECT_INFO)
    info["OIRLoadCLIPScorer"]["input"]["required"]["clip_name"] = _combo([])
    with pytest.raises(HeadlessError, match="no CLIP scorer in models/oir_clip"):
        _check(EditRunner(FakeClient(info), stream=None), make_spec(files))


def test_refusals_and_failures_become_one_line() -> None:
    workflow = {
        "9": {"class_type": "OIRDDIMInversion", "inputs": {}, "_meta": {"title": "OIR DDIM Inversion"}}
    }
    body = json.dumps(
        {
            "error": {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
            },
            "node_errors": {
                "9": {
                    "errors": [{"message": "Value smaller than min", "details": "steps: 1 < 2"}],
                    "class_type": "OIRDDIMInversion",
                }
            },
        }
    )
    assert (
        describe_refusal(answers.parse(answers.Refusal, body.encode()), workflow)
        == "node 9 (OIR DDIM Inversion): Value smaller than min: steps: 1 < 2"
    )
    no_prompt = json.dumps(
        {"error": {"type": "no_prompt", "message": "No prompt provided"}, "node_errors": []}
    )
    assert (
        describe_refusal(answers.parse(answers.Refusal, no_prompt.encode()), workflow) == "No prompt provided"
    )
    status = {
        "status_str": "error",
        "messages": [
            ["execution_start", {"prompt_id": "p"}],
            ["execution_error", {"node_id": "9", "node_type": "OIRDDIMInversion",
                                 "exception_message": "OIR: input 'steps' bad.\nmore", "traceback": ["t"]}],
        ],
    }  # fmt: skip
    failure = runner._execution_failure(status, workflow)
    assert isinstance(failure, ExecutionFailed)
    assert str(failure) == "ComfyUI failed in node 9 (OIR DDIM Inversion): OIR: input 'steps' bad."
    assert '"traceback"' in failure.details


# --------------------------------------------------------------------------------------------------
# websocket events and progress


class _WebsocketServer(LoopbackApp):
    """A real websocket server (aiohttp, on the loopback, in a thread) that sends ``messages`` in
    order after the handshake (``bytes`` as binary, anything else as text), then closes."""

    def __init__(self, messages: list[Any]) -> None:
        from aiohttp import web

        async def handler(request: web.Request) -> web.WebSocketResponse:
            socket_ = web.WebSocketResponse()
            await socket_.prepare(request)
            for message in messages:
                if isinstance(message, bytes):
                    await socket_.send_bytes(message)
                else:
                    await socket_.send_str(message if isinstance(message, str) else json.dumps(message))
            await socket_.close()
            return socket_

        app = web.Application()
        app.router.add_get("/ws", handler)
        super().__init__(app)


def test_event_stream_skips_binary_refuses_malformed_messages_and_reports_the_close() -> None:
    server = _WebsocketServer(
        [b"\x00\x01binary preview", {"type": "progress"}, {"type": "x", "data": "x" * 70000}, "not json"]
    )
    try:
        stream = ComfyClient(server.url).events("abc", timeout=5)
        assert stream is not None
        received = [stream.receive(5) for _ in range(3)]
        assert received[0] is None and received[1] == answers.Event(type="progress")
        assert received[2] == answers.Event(type="x", data="x" * 70000)  # 64-bit length
        with pytest.raises(BadAnswer, match=r"to /ws: a message is not JSON \(it starts 'not json'\)"):
            stream.receive(5)
        with pytest.raises(ConnectionError):
            stream.receive(5)
        stream.close()
    finally:
        server.stop()
    assert ComfyClient(_closed_url()).events("x", timeout=1) is None  # oir-edit then polls /history


class HistoryClient(FakeClient):
    """``/history`` answers only after ``ready_after`` calls; records interrupts."""

    def __init__(self, ready_after: int | None) -> None:
        super().__init__()
        self.ready_after = ready_after
        self.calls = 0
        self.interrupted: list[str] = []

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        self.calls += 1
        if self.ready_after is None or self.calls <= self.ready_after:
            return None
        return {"status": {"status_str": "success", "completed": True, "messages": []}, "outputs": {}}

    def interrupt(self, prompt_id: str) -> None:
        self.interrupted.append(prompt_id)


def test_wait_follows_this_prompts_events_then_reads_the_history() -> None:
    server = _WebsocketServer(
        [
            {"type": "status", "data": {"status": {}}},
            {"type": "executing", "data": {"node": "9", "prompt_id": "mine"}},
            {"type": "progress", "data": {"value": 1, "max": 5, "node": "3", "prompt_id": "someone else's"}},
            {"type": "progress", "data": {"value": 2, "max": 5, "node": "9", "prompt_id": "mine"}},
            {"type": "execution_success", "data": {"prompt_id": "mine"}},
        ]
    )
    client = HistoryClient(ready_after=1)
    events: list[tuple[str, Any]] = []
    try:
        stream = ComfyClient(server.url).events("c", timeout=5)
        entry = client.wait(
            "mine", stream, timeout=30, on_event=lambda kind, data: events.append((kind, data)), poll_every=30
        )
        assert stream is not None
        stream.close()
    finally:
        server.stop()
    assert entry["status"]["status_str"] == "success"
    assert [kind for kind, _ in events] == ["executing", "progress", "execution_success"]
    assert events[1][1]["value"] == 2 and client.calls == 2  # the success event triggered the second poll


def test_wait_gives_up_after_the_timeout_and_interrupts_the_prompt() -> None:
    client = HistoryClient(ready_after=None)
    with pytest.raises(ExecutionFailed, match=r"did not finish within 0.3 s \(raise --timeout\)"):
        client.wait("p1", None, timeout=0.3, poll_every=0.05)
    assert client.interrupted == ["p1"] and client.calls > 1


def test_progress_prints_nodes_and_records_timings() -> None:
    stream = io.StringIO()
    progress = Progress(
        {"1": "Load Checkpoint", "9": "OIR DDIM Inversion", "5": "VAE Encode"}, stream, "case"
    )
    progress("execution_cached", {"nodes": ["1"]})
    progress("executing", {"node": "9"})
    progress("progress", {"value": 3, "max": 5, "node": "9"})
    progress("executing", {"node": "5"})
    progress("execution_success", {})
    assert stream.getvalue().splitlines() == ["[case]  1/3 OIR DDIM Inversion", "[case]  2/3 VAE Encode"]
    assert progress.nodes["1"] == {"title": "Load Checkpoint", "cached": True, "seconds": 0.0}
    assert progress.nodes["9"]["seconds"] is not None and progress.nodes["5"]["seconds"] is not None


# --------------------------------------------------------------------------------------------------
# batches: skip finished, isolate failures


class FakeRunner:
    """Writes nothing itself (run_batch writes the report); fails the cases named in ``fail`` when
    they run and those in ``refuse`` at the server check."""

    def __init__(
        self, fail: set[str] | None = None, refuse: set[str] | None = None, unreachable: bool = False
    ) -> None:
        self.fail = fail or set()
        self.refuse = refuse or set()
        self.unreachable = unreachable
        self.checked: list[str] = []
        self.calls: list[str] = []

    def check(self, spec: EditSpec, local: Any) -> None:
        self.checked.append(spec.name)
        if self.unreachable:
            raise ServerUnreachable("cannot reach ComfyUI at http://x (refused)")
        if spec.name in self.refuse:
            raise HeadlessError(f"{spec.name}: --checkpoint 'x' is not offered by the server")

    def run(self, spec: EditSpec, check: Any, out_dir: Path) -> dict[str, Any]:
        assert spec.name in self.checked, "every case is checked before it runs"
        self.calls.append(spec.name)
        if spec.name in self.fail:
            raise ExecutionFailed(f"ComfyUI failed in node 9 for {spec.name}", details="traceback here")
        return {"status": "ok", "case": spec.name, "chosen_steps": [3, 4]}

    def probe(self) -> None:
        if self.unreachable:
            raise ServerUnreachable("cannot reach ComfyUI at http://x (refused)")


def _cases(files: dict[str, Path], names: list[str]) -> list[Case]:
    return [Case(name, Path(f"{name}.yaml"), spec=make_spec(files, name=name)) for name in names]


def test_batch_skips_finished_cases_and_goes_on_after_a_failure(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (out / "done").mkdir(parents=True)
    (out / "done" / "report.json").write_text("{}", encoding="utf-8")
    cases = _cases(files, ["done", "bad", "good", "typo"])
    cases.append(Case("invalid", Path("i.yaml"), spec=make_spec(files, name="invalid", steps=1)))
    cases.append(Case("unreadable", Path("u.yaml"), error="u.yaml: not valid YAML (oops)"))
    runner = FakeRunner(fail={"bad"}, refuse={"typo"})
    factories: list[int] = []

    def factory() -> FakeRunner:
        factories.append(1)
        return runner

    results = run_batch(cases, out, factory, stream=None)
    assert [(r.name, r.status) for r in results] == [
        ("done", "skipped"), ("bad", "failed"), ("good", "done"), ("typo", "failed"),
        ("invalid", "failed"), ("unreadable", "failed"),
    ]  # fmt: skip
    assert runner.checked == ["bad", "good", "typo"]  # all checked on the server before the first run
    assert runner.calls == ["bad", "good"] and factories == [1]  # invalid cases never reach the server
    assert "is not offered" in (out / "typo" / "error.txt").read_text()
    assert json.loads((out / "good" / "report.json").read_text())["chosen_steps"] == [3, 4]
    assert not (out / "bad" / "report.json").exists()
    assert "traceback here" in (out / "bad" / "error.txt").read_text()
    assert "at least 2 steps" in (out / "invalid" / "error.txt").read_text()
    summary = json.loads((out / "batch_report.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 1, "failed": 4}
    assert next(c for c in summary["cases"] if c["name"] == "good")["chosen_steps"] == [3, 4]

    rerun = FakeRunner()
    results = run_batch(cases, out, lambda: rerun, stream=None)
    assert rerun.calls == ["bad", "typo"]  # only the failed cases that can run are retried
    assert {r.name: r.status for r in results}["bad"] == "done"
    assert not (out / "bad" / "error.txt").exists()


def test_batch_starts_no_server_when_nothing_needs_one(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "report.json").write_text("{}", encoding="utf-8")

    def factory() -> FakeRunner:
        raise AssertionError("no server should be started")

    results = run_batch(_cases(files, ["a"]), out, factory, stream=None)
    assert [r.status for r in results] == ["skipped"]


def test_unreachable_server_stops_the_batch(files: dict[str, Path], tmp_path: Path) -> None:
    runner = FakeRunner(unreachable=True)
    with pytest.raises(ServerUnreachable):
        run_batch(_cases(files, ["a", "b"]), tmp_path / "out", lambda: runner, stream=None)
    assert runner.checked == ["a"] and runner.calls == []
    listed = json.loads((tmp_path / "out" / "batch_report.json").read_text())["cases"]
    assert [(c["name"], c["status"]) for c in listed] == [("a", "failed"), ("b", "failed")]
    assert "cannot reach ComfyUI" in (tmp_path / "out" / "a" / "error.txt").read_text()
    # lost after the first check: the case already checked is listed too
    runner = FakeRunner()
    checks = runner.check

    def lost_at_b(spec: EditSpec, local: Any) -> None:
        if spec.name == "b":
            raise ServerUnreachable("cannot reach ComfyUI at http://x (refused)")
        checks(spec, local)

    runner.check = lost_at_b  # type: ignore[method-assign]
    with pytest.raises(ServerUnreachable):
        run_batch(_cases(files, ["a", "b"]), tmp_path / "out2", lambda: runner, stream=None)
    listed = json.loads((tmp_path / "out2" / "batch_report.json").read_text())["cases"]
    assert [(c["name"], c["error"][:8]) for c in listed] == [("a", "not run:"), ("b", "not run:")]
    assert all(c["error"].startswith("not run: cannot reach ComfyUI") for c in listed)


class LostAnswerClient(FakeClient):
    """Queues (recording the prompt id it was given), then stops answering ``/history``."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[str] = []
        self.interrupted: list[str] = []

    def upload_image(self, source: Path | bytes, name: str, subfolder: str = "oir-edit") -> str:
        return f"{subfolder}/{name}"

    def events(self, client_id: str, timeout: float = 10.0) -> None:
        return None

    def queue(self, workflow: Any, client_id: str, prompt_id: str | None = None) -> str:
        assert prompt_id is not None, "the prompt is named before it is sent"
        self.queued.append(prompt_id)
        return prompt_id

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        raise ServerUnreachable(
            "cannot reach ComfyUI at http://x (no answer within the timeout: ReadTimeout)"
        )

    def interrupt(self, prompt_id: str) -> None:
        self.interrupted.append(prompt_id)


def test_giving_up_on_an_edit_cancels_its_own_prompt(files: dict[str, Path], tmp_path: Path) -> None:
    client = LostAnswerClient()
    runner = EditRunner(client, stream=None)
    spec = make_spec(files)
    with pytest.raises(ServerUnreachable):
        runner.run(spec, validate_local(spec), tmp_path / "out")
    assert len(client.queued) == 1 and client.interrupted == client.queued


class LosingRunner(FakeRunner):
    """The server stops answering during ``lost``'s run, then answers again."""

    def run(self, spec: EditSpec, check: Any, out_dir: Path) -> dict[str, Any]:
        if spec.name == "lost":
            self.calls.append(spec.name)
            raise ServerUnreachable(
                "cannot reach ComfyUI at http://x (no answer within the timeout: ReadTimeout)"
            )
        return super().run(spec, check, out_dir)


def test_a_case_the_client_gave_up_on_fails_and_the_batch_goes_on(
    files: dict[str, Path], tmp_path: Path
) -> None:
    runner = LosingRunner()
    results = run_batch(_cases(files, ["lost", "next"]), tmp_path / "out", lambda: runner, stream=None)
    assert [(r.name, r.status) for r in results] == [("lost", "failed"), ("next", "done")]
    assert "no answer within the timeout" in (results[0].error or "")
    listed = json.loads((tmp_path / "out" / "batch_report.json").read_text())["cases"]
    assert [c["name"] for c in listed] == ["lost", "next"]


def test_batch_command_exit_codes(
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("one", "two"):
        mapping = dict(_spec_mapping(files, tmp_path), image=str(files["image"]), controlnets=[])
        mapping["edits"] = [f"dog=cat:{files['dog']}"]
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(mapping), encoding="utf-8")
    runner = FakeRunner(fail={"two"})
    monkeypatch.setattr(cli, "connect", lambda args, stream: cli.Connection(FakeClient()))
    monkeypatch.setattr(cli, "_runner", lambda connection, args, stream: runner)
    args = ["batch", str(folder), "--out", str(tmp_path / "out"), "--server", "http://x", "--steps", "5",
            "--reassembly-step", "2", "--reinversion-steps", "2"]  # fmt: skip
    assert cli.main(args) == 1
    assert "1 done, 0 skipped, 1 failed" in capsys.readouterr().err
    runner.fail.clear()
    assert cli.main(args) == 0 and runner.calls == ["one", "two", "two"]
    assert cli.main(["batch", str(tmp_path / "masks"), "--out", str(tmp_path / "o2")]) == 2
    assert "no edit specs" in capsys.readouterr().err


def test_report_is_written_last_and_atomically(tmp_path: Path) -> None:
    results.write_error(tmp_path, "earlier failure")
    results.write_report(tmp_path, {"status": "ok"})
    assert results.is_finished(tmp_path) and not (tmp_path / "error.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no partial file left behind


# --------------------------------------------------------------------------------------------------
# the launcher, with fake ComfyUI checkouts


def _fake_comfyui(root: Path, main: str) -> Path:
    (root / "comfy").mkdir(parents=True)
    (root / "comfy" / "cli_args.py").write_text('parser.add_argument("--database-url")\n', encoding="utf-8")
    (root / "custom_nodes").mkdir()
    (root / "main.py").write_text(main, encoding="utf-8")
    return root


def test_launcher_links_the_pack_and_builds_the_command(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI", "")
    pack = tmp_path / "other_pack"
    pack.mkdir()
    (pack / "__init__.py").write_text("", encoding="utf-8")
    folder_of_packs = tmp_path / "more_nodes"
    folder_of_packs.mkdir()
    server = ComfyServer(
        comfy, cpu=True, port=8555, front_end_root=tmp_path / "fe",
        extra_custom_nodes=[pack, folder_of_packs], extra_model_paths=[tmp_path / "models.yaml"],
    )  # fmt: skip
    server.prepare()
    work = server.work_dir
    assert work is not None
    try:
        assert (work / "custom_nodes" / "oir-edit").resolve() == launcher.PACK_ROOT
        assert (work / "custom_nodes" / "other_pack").resolve() == pack.resolve()
        config = yaml.safe_load((work / "extra_model_paths.yaml").read_text())
        assert config["oir_edit_headless"]["base_path"] == str(work)
        assert config["oir_edit_headless"]["custom_nodes"].split() == [
            "custom_nodes",
            str(folder_of_packs.resolve()),
        ]
        command = server.command()
        assert command[1:6] == ["main.py", "--listen", "127.0.0.1", "--port", "8555"]
        for flag in ("--cpu", "--disable-api-nodes"):
            assert flag in command
        joined = " ".join(command)
        assert f"--front-end-root {(tmp_path / 'fe').resolve()}" in joined
        assert f"{work / 'extra_model_paths.yaml'} {(tmp_path / 'models.yaml').resolve()}" in joined
        assert (
            "--database-url sqlite:///:memory:" in joined and f"--input-directory {work / 'input'}" in joined
        )
    finally:
        server.stop()
    assert not work.exists()


def test_launcher_does_not_install_the_pack_twice(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI", "")
    (comfy / "custom_nodes" / "OIR").symlink_to(launcher.PACK_ROOT)
    server = ComfyServer(comfy, port=1)
    server.prepare()
    try:
        assert server.work_dir is not None and not (server.work_dir / "custom_nodes" / "oir-edit").exists()
        assert server.pack_location == comfy / "custom_nodes" / "OIR"
    finally:
        server.stop()
    with pytest.raises(HeadlessError, match="not a ComfyUI checkout"):
        ComfyServer(tmp_path).prepare()


def test_launcher_finds_the_pack_by_project_name_and_reads_import_failures(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI", "")
    installed = comfy / "custom_nodes" / "comfyui-oir"
    installed.mkdir()
    (installed / "pyproject.toml").write_text('[project]\nname = "oir-edit"\n', encoding="utf-8")
    assert launcher.pack_installed_in(comfy) == installed
    server = ComfyServer(comfy, port=1)
    server.prepare()
    try:
        assert server.work_dir is not None
        server.log_path.write_text(
            "IMPORT FAILED: nodes_audio.py\n"  # a ComfyUI extra without torchaudio: not the pack's problem
            f"   0.1 seconds (IMPORT FAILED): {installed}\n"
            f"Cannot import {installed} module for custom nodes: No module named 'open_clip'\n"
            "   0.0 seconds: /x/custom_nodes/websocket_image_save.py\n",
            encoding="utf-8",
        )
        problems = server.import_problems()
        assert problems == [
            f"0.1 seconds (IMPORT FAILED): {installed}",
            f"Cannot import {installed} module for custom nodes: No module named 'open_clip'",
        ]
    finally:
        server.stop()


def test_launcher_reports_a_crash_and_a_hang_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # work folders and kept logs go here
    crash = _fake_comfyui(tmp_path / "crash", "import sys\nprint('torch not found')\nsys.exit(3)\n")
    with pytest.raises(HeadlessError, match=r"exited during startup \(code 3\): torch not found") as caught:
        ComfyServer(crash, startup_timeout=30).start()
    assert "\n" not in str(caught.value)
    kept = Path(str(caught.value).rsplit("full log: ", 1)[1].rstrip(")"))
    assert kept.parent == tmp_path and "torch not found" in kept.read_text()  # the log outlives the server
    hang = _fake_comfyui(tmp_path / "hang", "import time\nprint('loading', flush=True)\ntime.sleep(60)\n")
    server = ComfyServer(hang, startup_timeout=1.5)
    with pytest.raises(HeadlessError, match=r"did not answer within 2 s: loading"):
        server.start()
    assert server.process is None and server.work_dir is None  # killed and cleaned up


# --------------------------------------------------------------------------------------------------
# guards


def test_the_client_imports_neither_comfy_nor_torch() -> None:
    code = (
        "import sys, oir_cli.cli; "
        "bad = [m for m in sys.modules if m in ('comfy', 'torch') "
        "or m.startswith(('comfy.', 'comfy_api', 'folder_paths', 'torch.'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    repo = Path(__file__).resolve().parents[2]  # importable from the checkout even when not installed
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=repo
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_and_file_refusals_import_no_torch(files: dict[str, Path], tmp_path: Path) -> None:
    """``oir-edit --help`` and the refusals of files, masks, phrases and step settings load no torch
    (the client uses only the engine's torch-free modules: options, prompts, steps, regions), so
    they answer at once, the masks' check at the latent grid included."""
    probe = (
        "import sys, contextlib, io\n"
        "from oir_cli import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        "code = cli.main(sys.argv[1:])\n"
        "print(code, 'torch' in sys.modules)\n"
    )
    args = ["--image", str(files["image"]), "--prompt", PROMPT, "--out", str(tmp_path / "o")]
    good = ["--edit", f"dog=cat:{files['dog']}"]
    cases = [
        ["--edit", f"dog=cat:{files['square']}"],  # a mask of another aspect ratio
        ["--edit", f"cow=cat:{files['dog']}"],  # a phrase not in the prompt
        ["--edit", f"dog=cat:{tmp_path / 'no.png'}"],  # a missing file
        [*good, "--steps", "1"],  # step settings (oir_core.steps)
        [*good, "--steps", "5", "--reassembly-step", "7"],
        ["--edit", f"dog=cat:{files['speck']}"],  # empty at the latent grid (oir_core.regions)
        [*good, "--edit", f"gift=cake:{files['dog']}"],  # covered by the later pair
    ]
    for case in cases:
        done = subprocess.run(
            [sys.executable, "-c", probe, *args, *case, "--server", _closed_url()],
            capture_output=True,
            text=True,
            check=False,
            cwd=str(Path(cli.__file__).resolve().parents[1]),
        )
        assert done.stdout.strip() == "2 False", (case, done.stdout, done.stderr[-2000:])
