"""The command line's flags: the parsers of ``oir-edit`` and its subcommands, the spec fields the
flags set, and the refusal of number flags that cannot mean anything.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any

from .discovery import single_spec
from .specs import (
    EditSpec,
    SpecError,
    parse_controlnet_arg,
    parse_edit_arg,
    parse_lora_arg,
    spec_from_mapping,
)

_DEFAULTS = {"timeout": 7200.0, "startup_timeout": 300.0}
"""Defaults of the flags that are a number of seconds to wait (finite and above 0, or refused)."""


def _add_edit_options(parser: argparse.ArgumentParser, single: bool) -> None:
    """Flags that set spec fields; all default to ``None`` so that only given flags override."""
    edit = parser.add_argument_group("edit (spec fields; a spec file uses the same names with underscores)")
    if single:
        edit.add_argument(
            "--spec", type=Path, help="edit spec file (YAML or JSON); flags override its fields"
        )
        edit.add_argument("--image", type=Path, help="source image")
        edit.add_argument("--prompt", help="original prompt describing the image (P_o)")
        edit.add_argument(
            "--edit",
            action="append",
            metavar="SOURCE=TARGET:MASK",
            help="one edit pair, repeated per object: e.g. dog=cat:dog_mask.png (mask white = object); "
            "SOURCE#2=... picks the 2nd occurrence",
        )
        edit.add_argument("--target-prompt", help="explicit target prompt (default: every pair replaced)")
    edit.add_argument("--checkpoint", help="checkpoint name in ComfyUI's models/checkpoints")
    edit.add_argument("--steps", type=int, help="inversion steps T (default 50)")
    edit.add_argument("--cfg", type=float, help="CFG scale (default 7.5)")
    edit.add_argument(
        "--reassembly-step",
        type=int,
        help="R, where the objects merge: 0 <= R < steps; default -1 = auto, a fifth of the steps "
        "(paper: 10 of 50)",
    )
    edit.add_argument(
        "--reinversion-steps",
        type=int,
        help="r, re-inversion steps after merging: R + r <= steps; default -1 = auto, a fifth of the steps",
    )
    edit.add_argument(
        "--seed", type=int, help="recorded in report.json (OIR is deterministic: DDIM with eta 0)"
    )
    edit.add_argument("--scheduler", help="schedule (default ddim_uniform, the paper's DDIM timesteps)")
    edit.add_argument("--convention", help="inversion convention: auto, official, official_x0, euler")
    edit.add_argument("--scorer", help="CLIP in models/oir_clip (default: the first listed)")
    edit.add_argument("--scorer-backend", help="auto, transformers, open_clip")
    edit.add_argument("--scorer-device", help="auto, cpu, gpu")
    edit.add_argument("--scorer-precision", help="fp32, fp16")
    edit.add_argument("--search-mode", help="exhaustive (paper), coarse_to_fine, custom")
    edit.add_argument("--custom-steps", help="steps for --search-mode custom, e.g. '5, 10, 20-40:2'")
    edit.add_argument("--coarse-stride", type=int, help="coarse_to_fine step spacing (default 5)")
    edit.add_argument("--refine-radius", type=int, help="coarse_to_fine refinement half-width (default 2)")
    edit.add_argument("--editing-weight", type=float, help="weight of the CLIP editing score (default 0.5)")
    edit.add_argument("--attention-mode", help="official (paper's soft mask) or hard")
    edit.add_argument("--fidelity-space", help="official (224px CLIP space) or pixels")
    edit.add_argument("--step-override", help="per pair 'auto' or a step, e.g. 'auto, 23'")
    edit.add_argument("--overlap", help="overlapping masks: later_wins or error")
    edit.add_argument(
        "--mask-geometry", help="official (the paper's mask resizing, default) or centered (see README)"
    )
    edit.add_argument(
        "--background",
        help="official (the paper: the last steps repaint everything) or preserve (the source kept "
        "outside the masks)",
    )
    edit.add_argument(
        "--feather", type=int, help="preserve's soft edge in latent cells (8 px each), 0 = hard"
    )
    edit.add_argument("--max-batch", type=int, help="rows per model call, 0 = fit memory")
    edit.add_argument(
        "--lora", action="append", metavar="NAME:STRENGTH", help="LoRA on model and CLIP (repeatable)"
    )
    edit.add_argument(
        "--controlnet",
        action="append",
        metavar="NAME:STRENGTH[:HINT]",
        help="ControlNet on the prompts (repeatable); hint image default: the source image",
    )


def _add_server_options(parser: argparse.ArgumentParser, many: bool = False) -> None:
    server = parser.add_argument_group("ComfyUI server")
    if many:  # oir-edit batch: any number of servers (oir_cli/scheduler.py)
        server.add_argument(
            "--server",
            metavar="URL",
            action="append",
            help="a running ComfyUI (repeatable: the cases run on every server at once)",
        )
        server.add_argument(
            "--servers", type=Path, metavar="FILE", help="more servers: one URL a line, # comments"
        )
        server.add_argument(
            "--retries",
            type=int,
            default=2,
            help="times a case is queued again after its server failed or was lost (default 2)",
        )
    else:
        server.add_argument("--server", metavar="URL", help="use a running ComfyUI (e.g. http://127.0.0.1:8188)")
    server.add_argument(
        "--comfyui",
        type=Path,
        default=os.environ.get("COMFYUI_PATH") or None,
        help="start ComfyUI from this checkout for the run, and stop it afterwards (default: $COMFYUI_PATH)",
    )
    server.add_argument("--cpu", action="store_true", help="start ComfyUI with --cpu")
    server.add_argument("--python", help="interpreter for ComfyUI (default: this one)")
    server.add_argument("--port", type=int, help="port for the started ComfyUI (default: a free one)")
    server.add_argument("--front-end-root", type=Path, help="frontend build for the started ComfyUI")
    server.add_argument(
        "--extra-custom-nodes",
        type=Path,
        action="append",
        default=[],
        help="more node packs (or folders of packs) for the started ComfyUI (repeatable)",
    )
    server.add_argument(
        "--extra-model-paths-config",
        type=Path,
        action="append",
        default=[],
        help="extra_model_paths.yaml for the started ComfyUI (repeatable)",
    )
    server.add_argument(
        "--model-loader",
        default="CheckpointLoaderSimple",
        help="node that loads --checkpoint (input ckpt_name; outputs MODEL, CLIP, VAE)",
    )
    server.add_argument(
        "--startup-timeout",
        type=float,
        default=_DEFAULTS["startup_timeout"],
        help="seconds to wait for ComfyUI to start",
    )
    server.add_argument(
        "--timeout", type=float, default=_DEFAULTS["timeout"], help="seconds one edit may take"
    )
    server.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The ``oir-edit`` (``mode='run'``), ``oir-edit batch``, ``export`` or ``report`` parser."""
    if mode == "report":
        parser = argparse.ArgumentParser(
            prog="oir-edit report",
            description="Write OUT/report.html (one offline page: contact sheet, score curves, chosen-step "
            "histograms, background fidelity) and OUT/metrics.csv for a finished 'oir-edit batch' folder. "
            "Needs scikit-image: pip install 'oir-edit[report]'.",
        )
        parser.add_argument("directory", type=Path, metavar="OUT", help="the batch's --out folder")
        parser.add_argument(
            "--thumbnail", type=int, default=128, help="longest side of the embedded pictures (px)"
        )
        parser.add_argument("-q", "--quiet", action="store_true", help="no summary line")
        return parser
    if mode == "export":
        parser = argparse.ArgumentParser(
            prog="oir-edit export",
            description="Write one edit as a self-contained job for hosted ComfyUI workers "
            '({"input": {"workflow": ..., "images": [{"name", "image"}]}}, pictures base64): the workflow '
            "oir-edit would queue. Flags override the spec's fields.",
        )
        parser.add_argument("spec", type=Path, metavar="SPEC", help="edit spec file (YAML or JSON)")
        parser.add_argument("--out", type=Path, required=True, help="job file to write (JSON)")
        _add_edit_options(parser, single=False)
        server = parser.add_argument_group("ComfyUI server (optional: check names there, take its scorer)")
        server.add_argument("--server", metavar="URL", help="a running ComfyUI like the worker's")
        server.add_argument(
            "--model-loader", default="CheckpointLoaderSimple", help="node that loads --checkpoint"
        )
        server.add_argument("-q", "--quiet", action="store_true", help="no summary line")
        return parser
    if mode == "batch":
        parser = argparse.ArgumentParser(
            prog="oir-edit batch",
            description="Run every edit spec under DIR (spec files, or an OIR-Bench config with "
            "image_path/origin_prompt/...). Cases with a report.json in OUT are skipped; a failing case is "
            "reported in OUT/<case>/error.txt and the batch goes on. Flags give defaults for every case; "
            "a case's own fields win. With several --server (or --servers FILE) every server runs one case "
            "at a time; a server that fails the checks is left out, a case whose server is lost runs on "
            "another (--retries); Ctrl-C cancels oir-edit's prompts and a re-run resumes.",
        )
        parser.add_argument("directory", type=Path, metavar="DIR", help="folder of spec files")
        parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per case)")
    else:
        parser = argparse.ArgumentParser(
            prog="oir-edit",
            description="Object-aware Inversion and Reassembly (OIR) edit through ComfyUI. "
            "'oir-edit batch DIR --out OUT' runs a folder of edit specs; 'oir-edit report OUT' writes its "
            "HTML report; 'oir-edit export SPEC --out job.json' writes a job for hosted ComfyUI workers.",
        )
        parser.add_argument("--out", type=Path, required=True, help="output folder")
    _add_edit_options(parser, single=mode != "batch")
    _add_server_options(parser, many=mode == "batch")
    return parser


_SPEC_FLAGS = (
    "checkpoint",
    "steps",
    "cfg",
    "reassembly_step",
    "reinversion_steps",
    "seed",
    "scheduler",
    "convention",
    "scorer",
    "scorer_backend",
    "scorer_device",
    "scorer_precision",
    "search_mode",
    "custom_steps",
    "coarse_stride",
    "refine_radius",
    "editing_weight",
    "attention_mode",
    "fidelity_space",
    "step_override",
    "overlap",
    "mask_geometry",
    "background",
    "feather",
    "max_batch",
    "target_prompt",
    "prompt",
)


def spec_fields_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields the command line sets explicitly (paths made absolute)."""
    cwd = Path.cwd()
    given: dict[str, Any] = {k: getattr(args, k) for k in _SPEC_FLAGS if getattr(args, k, None) is not None}
    if getattr(args, "image", None) is not None:
        given["image"] = str((cwd / args.image.expanduser()).resolve())
    if getattr(args, "edit", None):
        given["edits"] = [parse_edit_arg(text, cwd) for text in args.edit]
    if args.lora:
        given["loras"] = [parse_lora_arg(text) for text in args.lora]
    if args.controlnet:
        given["controlnets"] = [parse_controlnet_arg(text, cwd) for text in args.controlnet]
    return given


def spec_from_args(args: argparse.Namespace) -> EditSpec:
    """The single run's spec: the ``--spec`` file (if any) with the flags on top."""
    given = spec_fields_from_args(args)
    if args.spec is not None:
        return single_spec(Path(args.spec), given)
    name = Path(given["image"]).stem if given.get("image") else "edit"
    return spec_from_mapping(given, Path.cwd(), name)


def check_number_flags(args: argparse.Namespace) -> None:
    """Refuse numbers that cannot mean anything (NaN, infinities; waits of 0 s or less) before
    anything is sent to a server. The float spec fields (``--cfg``, ``--editing-weight``, LoRA and
    ControlNet strengths) are refused as finite numbers by :mod:`oir_cli.specs`."""
    for name in _DEFAULTS:
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + name.replace("_", "-")
            raise SpecError(
                f"{flag} {value}: must be a number of seconds above 0 (default {_DEFAULTS[name]:g})"
            )
