"""Runs one edit spec on one ComfyUI server: checks it against the server's lists and limits, uploads
its files, queues the filled workflow, follows it and downloads the outputs into a report.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from . import pictures
from .checks import LocalCheck, validate_local
from .client import (
    OIR_NODE_IDS,
    BadAnswer,
    ComfyClient,
    ExecutionFailed,
    HeadlessError,
    InputRefusedByNode,
    one_line,
)
from .filling import BASE_TEMPLATE, REGION_SCORE, describe_nodes, fill_workflow, load_template, nodes_of
from .progress import Progress
from .server import PACK_ROOT, ComfyServer
from .specs import EditSpec

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
        region = nodes_of(workflow, REGION_SCORE)[0]
        final_scores = entry.get("outputs", {}).get(region, {}).get("oir_region_scores", [])
        if len(final_scores) != len(spec.edits):  # each row's fields: answers.RegionScore
            raise BadAnswer(
                self.client.url,
                f"GET /history/{prompt_id}",
                f"OIR Edit Region Score (node {region}) reported {len(final_scores)} scores for "
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
                # the server's R and r (counted on the levels its scheduler made); the local
                # check's values stand in for a server that does not report them
                "reassembly_step": reused.get("reassembly_step", check.reassembly[0]),
                "reinversion_steps": (
                    check.reassembly[1]
                    if reused.get("reinversion_steps") is None
                    else reused["reinversion_steps"]
                ),
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
                    # the search's S_e of the final image inside this pair's mask (OIR Edit Region Score)
                    "final_clip_score": float(final["clip_score"]),
                }
                for s, final in zip(scores, final_scores)
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
