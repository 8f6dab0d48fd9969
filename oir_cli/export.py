"""``oir-edit export``: one edit as a self-contained job for hosted ComfyUI workers (prompt and pictures).

The job is the request body the common serverless ComfyUI workers take (RunPod's ``worker-comfyui``
and the workers modelled on it)::

    {"input": {"workflow": {<API-format prompt>}, "images": [{"name": "<file>", "image": "<base64 PNG>"}]}}

The worker uploads every picture into ComfyUI's input folder under its ``name`` (``/upload/image``,
no subfolder) and queues the workflow on ``/prompt``. The workflow is the one ``oir-edit`` would
queue (``filling.fill_workflow`` on the shipped template), with the LoadImage/LoadImageMask values
naming those top-level files instead of ``oir-edit``'s upload subfolder; the pictures are the
8-bit PNGs ``oir-edit`` would upload (``oir_cli/pictures.py``: read as a person sees them, padded
to a multiple of 8), named by their content hash. The worker returns the padded picture when the
source's sides are not multiples of 8; the command says how to crop it back.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from .arguments import spec_fields_from_args
from .checks import LocalCheck, validate_local
from .cli import EXIT_OK
from .client import ComfyClient, HeadlessError
from .discovery import single_spec
from .filling import BASE_TEMPLATE, fill_workflow, load_template
from .runner import EditRunner
from .specs import EditSpec, SpecError

__all__ = ["build_job", "run_export_command", "write_job"]


def build_job(
    spec: EditSpec,
    check: LocalCheck,
    *,
    model_loader: str = "CheckpointLoaderSimple",
    scorer: str | None = None,
) -> dict[str, Any]:
    """The worker request for ``spec``: ``{"input": {"workflow": ..., "images": [...]}}``.

    Args:
        check: ``validate_local(spec)``: the prepared pictures and their content-hash names.
        model_loader: node class that loads ``spec.checkpoint`` (as ``oir-edit --model-loader``).
        scorer: CLIP scorer name when ``spec.scorer`` is ``None``.

    Raises:
        SpecError: no checkpoint or no scorer named (a worker cannot be asked for its defaults).
    """
    if not spec.checkpoint:
        raise SpecError(
            f"{spec.name}: no checkpoint given: name the worker's checkpoint with --checkpoint (or the "
            "spec field 'checkpoint')"
        )
    if not (spec.scorer or scorer):
        raise SpecError(
            f"{spec.name}: no CLIP scorer given: name the worker's models/oir_clip entry with --scorer (or "
            "give --server URL to take the first one that server lists)"
        )
    names = {path: check.uploads[path][0] for path in spec.files()}
    workflow = fill_workflow(
        load_template(BASE_TEMPLATE), spec, names, model_loader=model_loader, scorer=scorer
    )
    images: dict[str, str] = {}
    for path in spec.files():
        name, data = check.uploads[path]
        images.setdefault(name, base64.b64encode(data).decode("ascii"))  # one entry per distinct picture
    return {
        "input": {
            "workflow": workflow,
            "images": [{"name": name, "image": image} for name, image in images.items()],
        }
    }


def write_job(job: Mapping[str, Any], path: Path) -> Path:
    """Write ``job`` as JSON to ``path`` (atomically: a partial file never carries the name)."""
    if path.is_dir():
        raise SpecError(f"--out {path} is a folder: give a file name, e.g. {path / 'job.json'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        partial.write_text(json.dumps(job, indent=1) + "\n", encoding="utf-8")
        partial.replace(path)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SpecError(f"--out {path}: cannot write there ({reason}): choose a file you can write") from None
    return path


def run_export_command(args: argparse.Namespace, stream: TextIO | None) -> int:
    """``oir-edit export SPEC --out job.json``: validate, optionally check names on ``--server``, write.

    With ``--server`` the scorer defaults to the first one that server lists (as a run would) and
    every name and range is checked there (``EditRunner.check_workflow``); without it nothing
    leaves the machine and the checkpoint and scorer must be named.
    """
    spec = single_spec(Path(args.spec), spec_fields_from_args(args))
    check = validate_local(spec)
    scorer = spec.scorer
    runner: EditRunner | None = None
    if args.server:
        runner = EditRunner(ComfyClient(args.server), model_loader=args.model_loader, stream=None)
        runner.facts()  # reachable, with the pack's nodes and the model loader
        scorer = scorer or runner.default_scorer()
    job = build_job(spec, check, model_loader=args.model_loader, scorer=scorer)
    if runner is not None:
        try:
            runner.check_workflow(spec, job["input"]["workflow"])
        except HeadlessError as error:
            raise SpecError(str(error)) from None
    write_job(job, Path(args.out))
    if stream is not None:
        size = os.path.getsize(args.out)
        width, height = check.image_size
        note = (
            f"; the worker returns {check.padded_size[0]}x{check.padded_size[1]}: crop its top-left "
            f"{width}x{height} (the source was padded to a multiple of 8)"
            if check.padded_size != check.image_size
            else ""
        )
        stream.write(
            f"job for {spec.name}: {len(job['input']['images'])} pictures, {size / 1024:.0f} KiB -> "
            f"{args.out}{note}\n"
        )
    return EXIT_OK
