"""``oir-edit``: run OIR edits through a ComfyUI server, one spec or a batch folder.

A client of ComfyUI's API (:mod:`oir_cli.client`) plus a ComfyUI launcher (:mod:`oir_cli.server`);
never imports ComfyUI or torch. It fills the shipped API workflow (:mod:`oir_cli.specs`), uploads
the image and masks (``/upload/image``), queues the graph (``/prompt``), follows the progress on
ComfyUI's websocket (``/ws``; polling ``/history`` when the socket is unavailable;
:mod:`oir_cli.progress`) and writes into the output folder:

- ``edited.png``: the edited image;
- ``candidates_<k>_<source>-<target>.png``: pair k's candidate grid (chosen step framed);
- ``scores_<k>_<source>-<target>.png``: pair k's score curves;
- ``report.json``: chosen step per pair, the full score tables, timings, versions and the exact
  workflow that was queued.

Quick start (ComfyUI at ``$COMFYUI_PATH``, started and stopped by the command)::

    oir-edit --comfyui ~/ComfyUI --image dog_gift.png --prompt "a dog sitting next to a gift" \\
        --edit dog=cat:dog_mask.png --edit gift=cake:gift_mask.png \\
        --checkpoint v1-5-pruned-emaonly-fp16.safetensors --out out/dog_gift

    oir-edit batch specs/ --out results/ --server http://127.0.0.1:8188 --checkpoint sd15.safetensors
    oir-edit report results/         # results/report.html and metrics.csv (oir_cli/report_html.py)
    oir-edit export edit.yaml --out job.json --checkpoint sd15.safetensors --scorer clip-vit-base-patch16
                                     # a job for hosted ComfyUI workers (oir_cli/export.py)

Bad input gives one line naming the problem before any heavy work: files and prompts are checked
locally, then names (checkpoint, scorer, LoRA, ControlNet) and ranges against the server's
``/object_info``. Every answer of the server is checked before use (:mod:`oir_cli.answers`).
Exit codes (:func:`exit_code`, the README's table): 0 done; 1 the edit failed (inside ComfyUI, the
server lost, an error status or an answer that is not ComfyUI's, ``--timeout``; batch: any case
failed), with ``error.txt`` in the output folder; 2 the input was refused before anything ran
(locally, by the server's lists and limits, by ComfyUI's validation of the prompt, or by an OIR node
before its heavy work), ``--server`` where nothing answers included; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TextIO

from . import pictures
from .client import (
    OIR_NODE_IDS,
    BadAnswer,
    ComfyClient,
    ExecutionFailed,
    HeadlessError,
    InputRefusedByNode,
    ServerFailure,
    ServerUnreachable,
    one_line,
)
from .progress import Progress
from .server import PACK_ROOT, ComfyServer
from .specs import (
    BASE_TEMPLATE,
    Case,
    EditSpec,
    LocalCheck,
    SpecError,
    describe_nodes,
    discover_cases,
    fill_workflow,
    load_template,
    nodes_of,
    parse_controlnet_arg,
    parse_edit_arg,
    parse_lora_arg,
    safe_case_dir,
    single_spec,
    spec_from_mapping,
    validate_local,
)

__all__ = ["EditRunner", "exit_code", "main", "run_batch"]

REPORT_NAME = "report.json"
ERROR_NAME = "error.txt"
BATCH_REPORT_NAME = "batch_report.json"

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

_DEFAULTS = {"timeout": 7200.0, "startup_timeout": 300.0}
"""Defaults of the flags that are a number of seconds to wait (finite and above 0, or refused)."""

_FLAG_OF_INPUT = {
    "ckpt_name": "--checkpoint",
    "clip_name": "--scorer",
    "backend": "--scorer-backend",
    "device": "--scorer-device",
    "precision": "--scorer-precision",
    "lora_name": "--lora",
    "strength_model": "--lora",
    "strength_clip": "--lora",
    "control_net_name": "--controlnet",
    "strength": "--controlnet",
    "start_percent": "--controlnet",
    "end_percent": "--controlnet",
    "steps": "--steps",
    "scheduler": "--scheduler",
    "convention": "--convention",
    "cfg": "--cfg",
    "search_mode": "--search-mode",
    "custom_steps": "--custom-steps",
    "coarse_stride": "--coarse-stride",
    "refine_radius": "--refine-radius",
    "max_batch": "--max-batch",
    "editing_weight": "--editing-weight",
    "attention_mode": "--attention-mode",
    "fidelity_space": "--fidelity-space",
    "step_override": "--step-override",
    "reassembly_step": "--reassembly-step",
    "reinversion_steps": "--reinversion-steps",
    "overlap": "--overlap",
    "mask_geometry": "--mask-geometry",
    "background": "--background",
    "feather": "--feather",
    "occurrence": "--edit",
}
"""Which flag sets a workflow input, for error messages about server-side limits."""

_UPLOADED_INPUTS = {("LoadImage", "image"), ("LoadImageMask", "image")}
"""Inputs whose values are uploaded files: the server lists only its top-level input files."""


def pack_version() -> str:
    """The installed ``oir-edit`` distribution's version (``unknown`` when not installed)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("oir-edit")
    except PackageNotFoundError:
        text = (
            (PACK_ROOT / "pyproject.toml").read_text(encoding="utf-8")
            if (PACK_ROOT / "pyproject.toml").is_file()
            else ""
        )
        match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
        return match.group(1) if match else "unknown"


# --------------------------------------------------------------------------------------------------
# Running one edit


@dataclass
class ServerFacts:
    """What the server told us once: versions and devices."""

    stats: dict[str, Any]

    @property
    def comfyui_version(self) -> str:
        return str(self.stats.get("system", {}).get("comfyui_version", "unknown"))

    def versions(self) -> dict[str, Any]:
        system = self.stats.get("system", {})
        return {
            "oir_edit": pack_version(),
            "comfyui": self.comfyui_version,
            "server_python": system.get("python_version"),
            "pytorch": system.get("pytorch_version"),
            "client_python": platform.python_version(),
        }

    def devices(self) -> list[str]:
        return [str(d.get("name", d.get("type", "?"))) for d in self.stats.get("devices", [])]


def _combo_options(spec: Any) -> list[Any] | None:
    """Options of a combo input in ``/object_info`` (V1 ``[[...], {...}]`` or V3 ``["COMBO", {options}]``)."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return list(spec[1].get("options", []))
    return None


def _input_specs(info: Mapping[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for section in ("required", "optional"):
        found.update(info.get("input", {}).get(section, {}) or {})
    return found


class CaseRunner(Protocol):
    """What :func:`run_batch` needs from a server: cheap checks first, then the runs."""

    def check(self, spec: EditSpec, local: LocalCheck) -> None:
        """Raise a one-line error if the server cannot run ``spec`` (names, ranges); no heavy work."""

    def run(self, spec: EditSpec, check: LocalCheck, out_dir: Path) -> dict[str, Any]:
        """Run one validated spec into ``out_dir`` and return its report."""

    def probe(self) -> None:
        """Raise :class:`ServerUnreachable` if the server does not answer (after its retries)."""


class EditRunner:
    """Runs edit specs on one ComfyUI server.

    Args:
        client: the server's client.
        model_loader: node class that replaces CheckpointLoaderSimple (``ckpt_name`` -> MODEL, CLIP, VAE).
        timeout: seconds one edit may take.
        stream: where progress goes (``None`` = silent).
        launched: the server this runner started (recorded in reports), if any.
    """

    def __init__(
        self,
        client: ComfyClient,
        *,
        model_loader: str = "CheckpointLoaderSimple",
        timeout: float = 7200.0,
        stream: TextIO | None = sys.stderr,
        launched: ComfyServer | None = None,
    ) -> None:
        self.client = client
        self.model_loader = model_loader
        self.timeout = timeout
        self.stream = stream
        self.launched = launched
        self._facts: ServerFacts | None = None

    def facts(self) -> ServerFacts:
        """``/system_stats`` and the OIR nodes' presence, checked once."""
        if self._facts is None:
            stats = self.client.system_stats()
            missing = [node for node in OIR_NODE_IDS if self.client.object_info(node) is None]
            if missing:
                hint = ""
                if self.launched is not None:
                    problems = self.launched.import_problems()
                    hint = f"; ComfyUI log: {one_line(problems[-1])}" if problems else ""
                raise HeadlessError(
                    f"ComfyUI at {self.client.url} has no OIR nodes ({', '.join(missing)} missing): install "
                    f"the pack in its custom_nodes, or let oir-edit start ComfyUI with --comfyui{hint}"
                )
            if self.client.object_info(self.model_loader) is None:
                raise HeadlessError(
                    f"--model-loader {self.model_loader}: ComfyUI at {self.client.url} has no such node"
                )
            self._facts = ServerFacts(stats)
        return self._facts

    def default_scorer(self) -> str:
        """The first CLIP the server lists in models/oir_clip."""
        info = self.client.object_info("OIRLoadCLIPScorer") or {}
        options = _combo_options(_input_specs(info).get("clip_name")) or []
        if not options:
            raise HeadlessError(
                "the server has no CLIP scorer in models/oir_clip: put a transformers CLIP folder there "
                "(e.g. openai/clip-vit-base-patch16, as in the paper)"
            )
        return str(options[0])

    def build(self, spec: EditSpec, local: LocalCheck | None = None) -> dict[str, Any]:
        """The filled workflow for ``spec`` (upload names are content hashes, known before uploading).

        ``local``: the spec's :func:`validate_local` result (computed here when not given).
        """
        if not spec.checkpoint:
            info = self.client.object_info(self.model_loader) or {}
            offered = _combo_options(_input_specs(info).get("ckpt_name")) or []
            raise HeadlessError(
                f"{spec.name}: no checkpoint given (--checkpoint or spec field 'checkpoint'); the server "
                f"offers: {_short_list(offered)}"
            )
        local = local or validate_local(spec)
        uploads = {path: local.upload_value(path) for path in spec.files()}
        scorer = spec.scorer or self.default_scorer()
        return fill_workflow(
            load_template(BASE_TEMPLATE), spec, uploads, model_loader=self.model_loader, scorer=scorer
        )

    def check_workflow(self, spec: EditSpec, workflow: Mapping[str, Any]) -> None:
        """Every node exists on the server, every combo value is offered, every number in range."""
        for node_id, node in workflow.items():
            class_type = node["class_type"]
            info = self.client.object_info(class_type)
            if info is None:
                raise HeadlessError(f"{spec.name}: ComfyUI at {self.client.url} has no {class_type} node")
            specs = _input_specs(info)
            for name, value in node["inputs"].items():
                if isinstance(value, list) or name not in specs or (class_type, name) in _UPLOADED_INPUTS:
                    continue
                flag = _FLAG_OF_INPUT.get(name, name)
                options = _combo_options(specs[name])
                if options is not None and value not in options:
                    raise HeadlessError(
                        f"{spec.name}: {flag} {value!r} is not offered by the server's {class_type} "
                        f"(node {node_id}); it offers: {_short_list(options)}"
                    )
                limits = specs[name][1] if len(specs[name]) > 1 and isinstance(specs[name][1], dict) else {}
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    low, high = limits.get("min"), limits.get("max")
                    if (low is not None and value < low) or (high is not None and value > high):
                        raise HeadlessError(
                            f"{spec.name}: {flag} = {value} is outside {low}..{high} "
                            f"({class_type} input '{name}')"
                        )

    def check(self, spec: EditSpec, local: LocalCheck | None = None) -> None:
        """The server has the pack, the loader and every name and range ``spec`` uses."""
        self.facts()
        self.check_workflow(spec, self.build(spec, local))

    def probe(self) -> None:
        """``/system_stats`` answers (retried as every request): the server is still there."""
        self.client.system_stats()

    def run(self, spec: EditSpec, check: LocalCheck, out_dir: Path) -> dict[str, Any]:
        """Check on the server, upload, queue, follow, download; return the report (outputs written)."""
        timings: dict[str, Any] = {}
        clock = time.monotonic()
        facts = self.facts()
        workflow = self.build(spec, check)
        self.check_workflow(spec, workflow)
        timings["server_check_s"] = round(time.monotonic() - clock, 3)

        clock = time.monotonic()
        for path in spec.files():
            name, data = check.uploads[path]
            stored = self.client.upload_image(data, name)
            if stored != check.upload_value(path):  # the server renamed it
                raise BadAnswer(
                    self.client.url,
                    "POST /upload/image",
                    f"{spec.name}: {path.name} was stored as {stored!r}, not {check.upload_value(path)!r}",
                )
        timings["upload_s"] = round(time.monotonic() - clock, 3)

        clock = time.monotonic()
        client_id = uuid.uuid4().hex
        events = self.client.events(client_id)
        progress = Progress(describe_nodes(workflow), self.stream, spec.name)
        prompt_id = str(uuid.uuid4())  # named before it is sent: it can be cancelled whatever happens
        try:
            prompt_id = self.client.queue(workflow, client_id, prompt_id)
            entry = self.client.wait(prompt_id, events, self.timeout, progress)
        except BaseException:
            # Giving up for any reason (--timeout, Ctrl-C, the server stopped answering): never leave
            # this edit's prompt queued or running on the server; other prompts are not touched.
            self.client.interrupt(prompt_id)
            raise
        finally:
            if events is not None:
                events.close()
        timings["execute_s"] = round(time.monotonic() - clock, 3)
        timings["nodes"] = progress.nodes
        status = entry.get("status") or {}
        if status.get("status_str") != "success":
            raise _execution_failure(status, workflow)

        clock = time.monotonic()
        out_dir.mkdir(parents=True, exist_ok=True)
        outputs = self.download(spec, workflow, entry.get("outputs", {}), out_dir, check.image_size)
        timings["download_s"] = round(time.monotonic() - clock, 3)

        metric = nodes_of(workflow, "OIRMaskMetricScorer")[0]
        search = nodes_of(workflow, "OIRParallelStepSearch")[0]
        scores = entry.get("outputs", {}).get(metric, {}).get("oir_scores", [])
        if len(scores) != len(spec.edits):
            raise BadAnswer(
                self.client.url,
                f"GET /history/{prompt_id}",
                f"OIR Mask Metric Scorer (node {metric}) reported {len(scores)} score tables for "
                f"{len(spec.edits)} edit pairs",
            )
        search_ui = entry.get("outputs", {}).get(search, {})
        reassembly = nodes_of(workflow, "OIRObjectReassembly")[0]
        reused = (entry.get("outputs", {}).get(reassembly, {}).get("oir_reassembly") or [{}])[0]
        report = {
            "oir_edit_report": 1,
            "case": spec.name,
            "status": "ok",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.to_dict(),
            "prompts": check.plan.to_dict(),
            "image_size": list(check.image_size),
            "reassembly": {
                "reassembly_step": check.reassembly[0],
                "reinversion_steps": check.reassembly[1],
                # per pair: "search" (the search's latent at R reused), "denoised" (and why), "inverted"
                "pairs": reused.get("pairs", []),
                "background": spec.background,
                "feather": spec.feather,
                # dB outside the masks beyond the feather band, against the source's VAE round trip
                "background_psnr": reused.get("background_psnr"),
            },
            "worked_at_size": list(check.padded_size),
            "mask_rules": list(check.mask_rules),
            "chosen_steps": [int(s["chosen"]) for s in scores],
            "pairs": [
                {
                    "pair": int(s["pair"]) + 1,
                    "source": s["source"],
                    "target": s["target"],
                    "chosen_step": s["chosen"],
                    "searched_step": s["searched"],
                    "override": s["override"],
                }
                for s in scores
            ],
            "scores": scores,
            "search": {"stats": search_ui.get("oir_stats", []), "grid_layout": search_ui.get("oir_grid", [])},
            # per stage: rows per model call, what set them, and any memory fallback (ARCHITECTURE.md §5)
            "split": [
                stage
                for class_type in ("OIRDDIMInversion", "OIRParallelStepSearch", "OIRObjectReassembly")
                for node in nodes_of(workflow, class_type)
                for stage in entry.get("outputs", {}).get(node, {}).get("oir_split", [])
            ],
            "outputs": outputs,
            "timings": timings,
            "versions": facts.versions(),
            "server": {
                "url": self.client.url,
                "launched": self.launched is not None,
                "start_s": round(self.launched.start_seconds, 3) if self.launched is not None else None,
                "devices": facts.devices(),
            },
            "prompt_id": prompt_id,
            "workflow": workflow,
        }
        return report

    def download(
        self,
        spec: EditSpec,
        workflow: Mapping[str, Any],
        outputs: Mapping[str, Any],
        out_dir: Path,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, list[str]]:
        """Save the edited image, candidate grids and score plots; returns their file names by role.

        ``image_size``: the input's ``(width, height)``; the edited image is cropped back to it (the
        upload was padded to a multiple of 8, ``oir_cli/pictures.py``).
        """
        metric = nodes_of(workflow, "OIRMaskMetricScorer")[0]
        roles: dict[str, str] = {}
        for node_id in nodes_of(workflow, "SaveImage"):
            roles[node_id] = "edited"
        for node_id in nodes_of(workflow, "PreviewImage"):
            source = workflow[node_id]["inputs"].get("images")
            if isinstance(source, list) and str(source[0]) == metric:
                roles[node_id] = {1: "score_plots", 2: "candidate_grids"}.get(int(source[1]), "previews")
        labels = [f"{k}_{_slug(e.source)}-{_slug(e.target)}" for k, e in enumerate(spec.edits, 1)]
        saved: dict[str, list[str]] = {"edited": [], "candidate_grids": [], "score_plots": []}
        for node_id, role in roles.items():
            images = outputs.get(node_id, {}).get("images", [])
            for index, ref in enumerate(images):
                if role == "edited":
                    name = "edited.png" if len(images) == 1 else f"edited_{index + 1}.png"
                elif role in ("candidate_grids", "score_plots"):
                    stem = "candidates" if role == "candidate_grids" else "scores"
                    name = f"{stem}_{labels[index] if index < len(labels) else index + 1}.png"
                else:
                    name = f"preview_{node_id}_{index + 1}.png"
                data = self.client.view(ref)
                if role == "edited" and image_size is not None:
                    data = pictures.crop_png(data, image_size)
                (out_dir / name).write_bytes(data)
                saved.setdefault(role, []).append(name)
        if not saved["edited"]:
            raise ExecutionFailed(f"{spec.name}: ComfyUI finished but returned no edited image")
        return saved


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "x"


def _short_list(options: Sequence[Any], limit: int = 8) -> str:
    if not options:
        return "(nothing)"
    shown = ", ".join(str(o) for o in options[:limit])
    return shown + (f", ... ({len(options)} in all)" if len(options) > limit else "")


def _execution_failure(status: Mapping[str, Any], workflow: Mapping[str, Any]) -> ExecutionFailed:
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            node = str(data.get("node_id"))
            title = describe_nodes(workflow).get(node, data.get("node_type", "?"))
            message = str(data.get("exception_message", "")).strip()
            first = message.splitlines()[0] if message else data.get("exception_type", "error")
            details = json.dumps(data, indent=2, default=str)
            if str(data.get("exception_type", "")).endswith("OIRInputError"):
                return InputRefusedByNode(
                    f"node {node} ({title}) refused an input: {one_line(first)}", details
                )
            return ExecutionFailed(f"ComfyUI failed in node {node} ({title}): {one_line(first)}", details)
        if kind == "execution_interrupted":
            return ExecutionFailed("the edit was interrupted on the server")
    return ExecutionFailed(
        f"ComfyUI reported {status.get('status_str', 'no status')} without an error message"
    )


def write_report(out_dir: Path, report: Mapping[str, Any]) -> Path:
    """Write ``report.json`` last and atomically: its presence means the case finished."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / REPORT_NAME
    partial = out_dir / f".{REPORT_NAME}.partial"
    partial.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    partial.replace(target)
    with contextlib.suppress(OSError):
        (out_dir / ERROR_NAME).unlink()
    return target


def write_error(out_dir: Path, message: str, details: str = "") -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / ERROR_NAME).write_text(
        message + ("\n\n" + details if details else "") + "\n", encoding="utf-8"
    )


# --------------------------------------------------------------------------------------------------
# Batches


@dataclass
class CaseResult:
    """What happened to one case of a batch."""

    name: str
    status: str  # "done", "skipped" (finished earlier) or "failed"
    out_dir: Path
    error: str | None = None
    seconds: float = 0.0
    chosen_steps: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "out_dir": str(self.out_dir),
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "chosen_steps": self.chosen_steps,
        }


def is_finished(case_dir: Path) -> bool:
    """A case is finished when its ``report.json`` exists (written last, atomically)."""
    return (case_dir / REPORT_NAME).is_file()


def run_batch(
    cases: Sequence[Case],
    out_dir: Path,
    runner_factory: Callable[[], CaseRunner],
    stream: TextIO | None = sys.stderr,
) -> list[CaseResult]:
    """Run every unfinished case; one failure is recorded and the batch goes on.

    Finished cases (``report.json`` present) are skipped; unreadable or locally invalid cases fail
    without touching the server. ``runner_factory`` is called once, only if some case needs a
    server (so an all-skipped or all-invalid batch starts none); then every pending case is checked
    against the server (names, ranges) before the first edit runs, so a typo fails in seconds, not
    after hours. When the client gives up on a case (the server stopped answering within its
    retries, :mod:`oir_cli.client`), that case fails with the reason (its prompt was cancelled by
    the runner) and the batch goes on if the server answers again; if it does not, the cases not
    run yet fail as "not run" and :class:`ServerUnreachable` is raised. ``batch_report.json`` in
    ``out_dir`` lists every case, also when the batch stops early.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[CaseResult] = []
    pending: list[tuple[Case, LocalCheck, Path]] = []

    def say(text: str) -> None:
        if stream is not None:
            stream.write(text + "\n")
            stream.flush()

    def fail(case: Case, case_dir: Path, error: Exception, seconds: float = 0.0) -> None:
        results.append(CaseResult(case.name, "failed", case_dir, str(error), seconds))
        write_error(case_dir, str(error), getattr(error, "details", ""))
        say(f"[{case.name}] failed: {error}")

    for case in cases:
        case_dir = out_dir / safe_case_dir(case.name)
        if is_finished(case_dir):
            results.append(CaseResult(case.name, "skipped", case_dir))
            say(f"[{case.name}] skipped: finished earlier ({case_dir / REPORT_NAME})")
            continue
        try:
            if case.spec is None:
                raise SpecError(case.error or f"{case.name}: unreadable")
            pending.append((case, validate_local(case.spec), case_dir))
        except SpecError as error:
            fail(case, case_dir, error)

    def not_run(rest: Sequence[tuple[Case, LocalCheck, Path]], error: ServerUnreachable) -> None:
        for case, _, case_dir in rest:
            fail(case, case_dir, HeadlessError(f"not run: {error}"))

    try:
        runner = runner_factory() if pending else None
        ready = []
        for index, (case, check, case_dir) in enumerate(pending):  # names and ranges before any run
            assert case.spec is not None and runner is not None
            try:
                runner.check(case.spec, check)
            except ServerUnreachable as error:
                not_run([*ready, *pending[index:]], error)
                raise
            except (SpecError, HeadlessError) as error:
                fail(case, case_dir, error)
                continue
            ready.append((case, check, case_dir))
        for index, (case, check, case_dir) in enumerate(ready):
            assert case.spec is not None and runner is not None
            started = time.monotonic()
            try:
                report = runner.run(case.spec, check, case_dir)
            except ServerUnreachable as error:  # the runner cancelled this case's prompt
                fail(case, case_dir, error, time.monotonic() - started)
                try:
                    runner.probe()
                except ServerUnreachable as lost:
                    not_run(ready[index + 1 :], lost)
                    raise
                continue
            except (SpecError, HeadlessError) as error:
                fail(case, case_dir, error, time.monotonic() - started)
                continue
            write_report(case_dir, report)
            steps = [int(s) for s in report.get("chosen_steps", [])]
            results.append(CaseResult(case.name, "done", case_dir, None, time.monotonic() - started, steps))
            seconds = time.monotonic() - started
            say(f"[{case.name}] done in {seconds:.1f} s: chosen steps {steps} -> {case_dir}")
    finally:
        order = {case.name: index for index, case in enumerate(cases)}
        results.sort(key=lambda r: order.get(r.name, len(order)))
        summary = {
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counts": {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")},
            "cases": [r.to_dict() for r in results],
        }
        (out_dir / BATCH_REPORT_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return results


# --------------------------------------------------------------------------------------------------
# Command line


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


@dataclass
class Connection:
    """A client, and the server this run started (stopped by :meth:`close`)."""

    client: ComfyClient
    server: ComfyServer | None = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def connect(args: argparse.Namespace, stream: TextIO | None) -> Connection:
    """Use ``--server`` or start ComfyUI from ``--comfyui``; the server must answer ``/system_stats``."""
    if args.server:
        client = ComfyClient(args.server)
        try:
            # a wrong URL fails at once, with no retries (they are for a server lost later)
            ComfyClient(args.server, retries=0).system_stats()
        except ServerUnreachable as error:  # before anything was queued: the --server input is wrong
            raise HeadlessError(f"{error}: check --server (is ComfyUI running there?)") from None
        return Connection(client)
    if args.comfyui is None:
        raise HeadlessError(
            "no ComfyUI: give --server URL, or --comfyui PATH (or set COMFYUI_PATH) to start one"
        )
    server = ComfyServer(
        args.comfyui,
        python=args.python,
        cpu=args.cpu,
        port=args.port,
        front_end_root=args.front_end_root,
        extra_custom_nodes=args.extra_custom_nodes,
        extra_model_paths=args.extra_model_paths_config,
        startup_timeout=args.startup_timeout,
    )
    if stream is not None:
        stream.write(f"starting ComfyUI from {server.comfyui} ...\n")
        stream.flush()
    server.start()
    if stream is not None:
        stream.write(f"ComfyUI ready at {server.url} after {server.start_seconds:.1f} s\n")
        stream.flush()
    return Connection(ComfyClient(server.url), server)


def _runner(connection: Connection, args: argparse.Namespace, stream: TextIO | None) -> EditRunner:
    return EditRunner(
        connection.client,
        model_loader=args.model_loader,
        timeout=args.timeout,
        stream=stream,
        launched=connection.server,
    )


def writable_folder(path: Path, flag: str = "--out") -> Path:
    """``path`` as a folder the outputs can be written to (created if missing), or one-line refusal.

    Checked before anything is sent to ComfyUI, so a typo never costs a run.
    """
    if path.exists() and not path.is_dir():
        raise SpecError(f"{flag} {path} is a file: give a folder (it will hold edited.png and report.json)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".oir-edit-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SpecError(
            f"{flag} {path}: cannot write there ({reason}): choose a folder you can write to"
        ) from None
    return path


def run_single(args: argparse.Namespace, stream: TextIO | None) -> int:
    """``oir-edit [run]``: validate, connect, edit, write the outputs.

    A failure once the server is involved (exit 1, or a node refusing an input) leaves its reason,
    with ComfyUI's details, in ``error.txt`` in ``--out``.
    """
    started = time.monotonic()
    check_number_flags(args)
    spec = spec_from_args(args)
    check = validate_local(spec)
    out_dir = writable_folder(Path(args.out))
    validated = time.monotonic() - started
    try:
        connection = connect(args, stream)
        try:
            report = _runner(connection, args, stream).run(spec, check, out_dir)
        finally:
            connection.close()
    except HeadlessError as error:
        if exit_code(error) == EXIT_FAILED or isinstance(error, InputRefusedByNode):
            write_error(out_dir, str(error), getattr(error, "details", ""))
        raise
    report["timings"]["validate_s"] = round(validated, 3)
    report["timings"]["total_s"] = round(time.monotonic() - started, 3)
    write_report(out_dir, report)
    if stream is not None:
        steps = ", ".join(f"{p['source']} -> {p['target']}: t={p['chosen_step']}" for p in report["pairs"])
        edited = out_dir / report["outputs"]["edited"][0]
        stream.write(f"edited image: {edited} ({steps}); report: {out_dir / REPORT_NAME}\n")
    return EXIT_OK


def run_batch_command(args: argparse.Namespace, stream: TextIO | None) -> int:
    """``oir-edit batch DIR --out OUT``."""
    check_number_flags(args)
    defaults = spec_fields_from_args(args)
    out_dir = writable_folder(Path(args.out)).resolve()
    cases = discover_cases(Path(args.directory), defaults, exclude=[out_dir])
    if not cases:
        raise SpecError(
            f"no edit specs (*.yaml, *.yml, *.json with image/prompt/edits or OIR-Bench fields) "
            f"in {args.directory}"
        )
    if len(args.server or []) > 1 or args.servers is not None:  # many servers: oir_cli/scheduler.py
        from .scheduler import run_batch_on_servers

        return run_batch_on_servers(args, cases, out_dir, stream)
    args.server = args.server[0] if args.server else None  # one server: run_batch below
    connection: Connection | None = None

    def factory() -> EditRunner:
        nonlocal connection
        connection = connect(args, stream)
        return _runner(connection, args, stream)

    try:
        results = run_batch(cases, out_dir, factory, stream)
    finally:
        if connection is not None:
            connection.close()
    failed = [r for r in results if r.status == "failed"]
    if stream is not None:
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        stream.write(
            f"batch: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed; "
            f"summary: {out_dir / BATCH_REPORT_NAME}\n"
        )
    return EXIT_FAILED if failed else EXIT_OK


def exit_code(error: Exception) -> int:
    """The exit code of a one-line error (README, "Exit codes"): 1 when the edit failed although the
    input was fine (the server failed, ComfyUI failed in a node, the time ran out), 2 when the
    input was refused (locally, by the server's lists and limits or ComfyUI's validation, by an OIR
    node before its heavy work)."""
    if isinstance(error, InputRefusedByNode):
        return EXIT_BAD_INPUT
    if isinstance(error, (ServerFailure, ExecutionFailed)):
        return EXIT_FAILED
    return EXIT_BAD_INPUT


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


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``oir-edit``; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "run"
    if argv and argv[0] in ("run", "batch", "export", "report"):
        mode, argv = argv[0], argv[1:]
    args = build_parser(mode).parse_args(argv)
    stream = None if args.quiet else sys.stderr
    try:
        if mode == "export":  # export and report live in their own modules (which import this one)
            from .export import run_export_command

            return run_export_command(args, stream)
        if mode == "report":
            from .report_html import run_report_command

            return run_report_command(args, stream)
        return run_batch_command(args, stream) if mode == "batch" else run_single(args, stream)
    except (SpecError, HeadlessError) as error:
        print(f"oir-edit: error: {error}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt:
        print("oir-edit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
