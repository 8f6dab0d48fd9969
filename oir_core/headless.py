"""``oir-edit``: run OIR edits through a ComfyUI server, one spec or a batch folder.

An HTTP client (standard library only) plus a ComfyUI launcher; never imports ComfyUI. It fills
the shipped API workflow (:mod:`oir_core.specs`), uploads the image and masks
(``/upload/image``), queues the graph (``/prompt``), follows the progress on ComfyUI's websocket
(``/ws``; polling ``/history`` when the socket is unavailable) and writes into the output folder:

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

Bad input gives one line naming the problem before any heavy work: files and prompts are checked
locally, then names (checkpoint, scorer, LoRA, ControlNet) and ranges against the server's
``/object_info``. Exit codes: 0 success, 1 an edit failed (batch: any case failed), 2 bad input or
unreachable server, 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TextIO

from . import pictures
from .specs import (
    BASE_TEMPLATE,
    UPLOAD_SUBFOLDER,
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

__all__ = [
    "OIR_NODE_IDS",
    "ComfyClient",
    "ComfyServer",
    "EditRunner",
    "ExecutionFailed",
    "HeadlessError",
    "main",
    "run_batch",
]

OIR_NODE_IDS: tuple[str, ...] = (
    "OIRLoadCLIPScorer",
    "OIREditPair",
    "OIRGuidedPromptBuilder",
    "OIRDDIMInversion",
    "OIRParallelStepSearch",
    "OIRMaskMetricScorer",
    "OIRObjectReassembly",
)
"""Node ids of the pack (nodes/__init__.py NODES)."""

PACK_ROOT = Path(__file__).resolve().parents[1]
"""The pack's folder when running from a checkout (it holds ``__init__.py`` and ``nodes/``)."""

PACK_FOLDER = "oir-edit"
"""Folder name the pack gets in a launched server's custom_nodes (= the project name, so ComfyUI's
``/extensions/<name>/`` web path is the same as for a registry install)."""

"""Sub-folder of ComfyUI's input folder the headless uploads go to."""

REPORT_NAME = "report.json"
ERROR_NAME = "error.txt"
BATCH_REPORT_NAME = "batch_report.json"

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

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
    "occurrence": "--edit",
}
"""Which flag sets a workflow input, for error messages about server-side limits."""

_UPLOADED_INPUTS = {("LoadImage", "image"), ("LoadImageMask", "image")}
"""Inputs whose values are uploaded files: the server lists only its top-level input files."""


class HeadlessError(RuntimeError):
    """A one-line, user-facing failure of the headless run (server unreachable, names unknown, ...)."""


class ServerUnreachable(HeadlessError):
    """No ComfyUI answers at the URL."""


class ExecutionFailed(HeadlessError):
    """ComfyUI ran the workflow and reported an error; ``details`` holds the traceback."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class InputRefusedByNode(ExecutionFailed):
    """A node refused an input (``OIRInputError``) before its heavy work: bad input, exit 2."""


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


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
# HTTP client


class ComfyClient:
    """A ComfyUI server's HTTP API, with the standard library only.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8188``.
        timeout: seconds for one HTTP request (waiting for a whole edit is :meth:`wait`'s job).
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if "://" not in url:
            url = f"http://{url}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._object_info: dict[str, dict[str, Any] | None] = {}

    # plain requests ------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> bytes:
        """Raw request; raises :class:`ServerUnreachable` or :class:`HeadlessError` (HTTP status)."""
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            raise HTTPStatusError(error.code, path, body) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerUnreachable(
                f"cannot reach ComfyUI at {self.url} ({_one_line(str(reason))})"
            ) from None

    def get_json(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post_json(self, path: str, payload: Any) -> Any:
        body = self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        return json.loads(body) if body.strip() else None

    # ComfyUI routes ------------------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        """``/system_stats``: ComfyUI, Python and PyTorch versions, devices."""
        return self.get_json("/system_stats")

    def object_info(self, class_type: str) -> dict[str, Any] | None:
        """``/object_info/<class>`` (cached), or ``None`` when the server has no such node."""
        if class_type not in self._object_info:
            info = self.get_json(f"/object_info/{urllib.parse.quote(class_type)}")
            self._object_info[class_type] = info.get(class_type) if isinstance(info, dict) else None
        return self._object_info[class_type]

    def upload_image(self, source: Path | bytes, name: str, subfolder: str = UPLOAD_SUBFOLDER) -> str:
        """Upload a file (or its bytes) as ``<subfolder>/<name>`` into the input folder; returns the
        LoadImage value."""
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in (("type", "input"), ("subfolder", subfolder), ("overwrite", "true")):
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
            )
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode()
            + (source if isinstance(source, bytes) else Path(source).read_bytes())
            + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        answer = json.loads(
            self.request(
                "POST",
                "/upload/image",
                b"".join(parts),
                {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        )
        folder = answer.get("subfolder") or ""
        return f"{folder}/{answer['name']}" if folder else answer["name"]

    def queue(self, workflow: Mapping[str, Any], client_id: str) -> str:
        """``POST /prompt``; returns the prompt id or raises one line built from ``node_errors``.

        ComfyUI queues a prompt as long as *one* output node validates and drops the branches whose
        nodes were refused (listing them in ``node_errors``): an OIR edit without its reassembly is
        no edit, so such a partial prompt is taken off the queue again and refused as a whole.
        """
        try:
            answer = self.post_json("/prompt", {"prompt": workflow, "client_id": client_id})
        except HTTPStatusError as error:
            raise HeadlessError(
                f"ComfyUI refused the workflow: {describe_refusal(error.body, workflow)}"
            ) from None
        prompt_id = str(answer["prompt_id"])
        if answer.get("node_errors"):
            self.interrupt(prompt_id)
            body = json.dumps({"node_errors": answer["node_errors"]})
            raise HeadlessError(f"ComfyUI refused the workflow: {describe_refusal(body, workflow)}")
        return prompt_id

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The ``/history/<id>`` entry, or ``None`` while the prompt has not finished."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def view(self, ref: Mapping[str, str]) -> bytes:
        """An output/temp image (``{"filename", "subfolder", "type"}`` from the history)."""
        query = urllib.parse.urlencode(
            {
                "filename": ref["filename"],
                "subfolder": ref.get("subfolder", ""),
                "type": ref.get("type", "output"),
            }
        )
        return self.request("GET", f"/view?{query}")

    def interrupt(self, prompt_id: str) -> None:
        """Drop ``prompt_id`` from the queue and interrupt it if it runs (best effort)."""
        with contextlib.suppress(HeadlessError):
            self.post_json("/queue", {"delete": [prompt_id]})
        with contextlib.suppress(HeadlessError):
            self.post_json("/interrupt", {"prompt_id": prompt_id})

    def websocket(self, client_id: str, timeout: float = 10.0) -> WebSocket | None:
        """The ``/ws`` event stream for ``client_id``, or ``None`` if it cannot be opened."""
        scheme = "wss" if self.url.startswith("https") else "ws"
        url = f"{scheme}://{self.url.split('://', 1)[1]}/ws?clientId={client_id}"
        try:
            return WebSocket(url, timeout)
        except (OSError, HeadlessError):
            return None

    def wait(
        self,
        prompt_id: str,
        socket_: WebSocket | None,
        timeout: float,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        poll_every: float = 2.0,
    ) -> dict[str, Any]:
        """Block until ``prompt_id`` finished; returns its history entry.

        Events for this prompt go to ``on_event(type, data)`` as they arrive (with a socket);
        ``/history`` is polled every ``poll_every`` seconds either way, so a lost message or a
        closed socket only delays the answer. Raises :class:`HeadlessError` after ``timeout``
        seconds (the prompt is then removed from the queue and interrupted).
        """
        deadline = time.monotonic() + timeout
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if now >= next_poll:
                entry = self.history(prompt_id)
                if entry is not None:  # ComfyUI writes the history entry when the prompt is done
                    return entry
                next_poll = now + poll_every
            if now >= deadline:
                self.interrupt(prompt_id)
                raise ExecutionFailed(f"the edit did not finish within {timeout:.0f} s (raise --timeout)")
            if socket_ is None:
                time.sleep(min(0.25, max(0.0, deadline - now)))
                continue
            try:
                message = socket_.receive(min(0.5, max(0.01, next_poll - time.monotonic())))
            except OSError:
                socket_ = None  # the server closed the socket: keep polling
                continue
            if message is None:
                continue
            try:
                event = json.loads(message)
            except json.JSONDecodeError:
                continue
            data = event.get("data") or {}
            if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
                continue  # queue status and other clients' prompts
            kind = str(event.get("type"))
            if on_event is not None:
                on_event(kind, data)
            finished = kind in ("execution_success", "execution_error", "execution_interrupted")
            if finished or (kind == "executing" and data.get("node") is None):
                next_poll = 0.0  # fetch the history now


class HTTPStatusError(HeadlessError):
    """An HTTP error answer (status and body kept for callers that parse it)."""

    def __init__(self, status: int, path: str, body: str) -> None:
        super().__init__(f"ComfyUI answered {status} to {path}: {_one_line(body, 200)}")
        self.status = status
        self.body = body


def describe_refusal(body: str, workflow: Mapping[str, Any]) -> str:
    """One line from a ``/prompt`` 400 answer: the first node error, or the top-level error."""
    try:
        answer = json.loads(body)
    except json.JSONDecodeError:
        return _one_line(body)
    for node_id, entry in (answer.get("node_errors") or {}).items():
        for error in entry.get("errors", []):
            title = describe_nodes(workflow).get(str(node_id), entry.get("class_type", "?"))
            detail = error.get("details") or error.get("message") or ""
            return _one_line(f"node {node_id} ({title}): {error.get('message', '')}: {detail}")
    error = answer.get("error") or {}
    return _one_line(f"{error.get('message', '')} {error.get('details', '')}".strip() or body)


# --------------------------------------------------------------------------------------------------
# A minimal websocket client (RFC 6455, text messages; enough for ComfyUI's /ws progress events)


class WebSocket:
    """Client side of a websocket: handshake, unmasked server frames, masked client frames."""

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        secure = parts.scheme == "wss"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if secure else 80)
        sock = socket.create_connection((host, port), timeout=timeout)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise HeadlessError("websocket handshake: connection closed")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        accept = base64.b64encode(hashlib.sha1((key + self._GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if " 101 " not in f"{lines[0]} " or headers.get("sec-websocket-accept") != accept:
            sock.close()
            raise HeadlessError(f"websocket handshake refused: {lines[0]}")
        self._sock = sock
        self._buffer = rest
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """Parse one complete frame off the buffer, or ``None`` if it is incomplete."""
        data = self._buffer
        if len(data) < 2:
            return None
        fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
        masked, length = bool(data[1] & 0x80), data[1] & 0x7F
        offset = 2
        if length == 126:
            if len(data) < 4:
                return None
            length, offset = int.from_bytes(data[2:4], "big"), 4
        elif length == 127:
            if len(data) < 10:
                return None
            length, offset = int.from_bytes(data[2:10], "big"), 10
        mask = b""
        if masked:
            if len(data) < offset + 4:
                return None
            mask, offset = data[offset : offset + 4], offset + 4
        if len(data) < offset + length:
            return None
        payload = data[offset : offset + length]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._buffer = data[offset + length :]
        return fin, opcode, payload

    def _send(self, opcode: int, payload: bytes = b"") -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        else:
            header += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
        self._sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self, timeout: float) -> str | None:
        """The next text message, or ``None`` after ``timeout`` seconds; binary messages are skipped.

        Raises:
            ConnectionError: the server closed the connection.
        """
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._sock.settimeout(remaining)
                try:
                    chunk = self._sock.recv(65536)
                except TimeoutError:  # socket.timeout is TimeoutError since Python 3.10
                    return None
                if not chunk:
                    raise ConnectionError("websocket closed by the server")
                self._buffer += chunk
                continue
            fin, opcode, payload = frame
            if opcode == 0x8:
                with contextlib.suppress(OSError):
                    self._send(0x8)
                raise ConnectionError("websocket closed by the server")
            if opcode == 0x9:
                self._send(0xA, payload)
                continue
            if opcode in (0x1, 0x2):
                self._fragment_opcode, self._fragments = opcode, [payload]
            elif opcode == 0x0:
                self._fragments.append(payload)
            else:
                continue
            if fin:
                message, kind = b"".join(self._fragments), self._fragment_opcode
                self._fragments = []
                if kind == 0x1:
                    return message.decode("utf-8", "replace")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send(0x8)
        with contextlib.suppress(OSError):
            self._sock.close()


# --------------------------------------------------------------------------------------------------
# Launching a ComfyUI server with the pack installed


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def pack_installed_in(comfyui: Path) -> Path | None:
    """The entry of ``comfyui/custom_nodes`` that already is this pack (same folder or project), if any."""
    folder = Path(comfyui) / "custom_nodes"
    if not folder.is_dir():
        return None
    for entry in sorted(folder.iterdir()):
        with contextlib.suppress(OSError):
            if entry.resolve() == PACK_ROOT:
                return entry
            project = entry / "pyproject.toml"
            if project.is_file() and re.search(
                r'^name\s*=\s*"oir-edit"', project.read_text(encoding="utf-8"), re.MULTILINE
            ):
                return entry
    return None


def pack_is_checkout(root: Path = PACK_ROOT) -> bool:
    """Whether ``root`` holds the ComfyUI pack itself (not just the ``oir_core`` library)."""
    return (root / "__init__.py").is_file() and (root / "nodes" / "__init__.py").is_file()


class ComfyServer:
    """A ComfyUI server process started from a checkout, with the OIR pack installed.

    The pack is linked into a temporary ``custom_nodes`` folder that an extra-model-paths YAML
    registers (ComfyUI's own folders stay untouched); input, output and temp folders are
    temporary too, and the database is in memory. :meth:`stop` ends the process (terminate, then
    kill after a bounded wait) and removes the temporary folder.

    Args:
        comfyui: the ComfyUI checkout (holds ``main.py``).
        python: interpreter with ComfyUI's requirements.
        cpu: pass ``--cpu``.
        port: TCP port; a free one by default.
        front_end_root: a frontend build to serve; ``None`` = the installed comfyui-frontend-package.
        extra_custom_nodes: node packs (folders with ``__init__.py``) or folders of packs to load too.
        extra_model_paths: extra_model_paths YAML files (model folders, more custom nodes).
        install_pack: link this pack (skipped automatically when ComfyUI already has it).
        startup_timeout: seconds to wait for ``/system_stats``.
        extra_args: more ``main.py`` arguments.
    """

    def __init__(
        self,
        comfyui: Path,
        *,
        python: str | None = None,
        cpu: bool = False,
        port: int | None = None,
        front_end_root: Path | None = None,
        extra_custom_nodes: Sequence[Path] = (),
        extra_model_paths: Sequence[Path] = (),
        install_pack: bool = True,
        startup_timeout: float = 300.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.comfyui = Path(comfyui).expanduser().resolve()
        self.python = python or sys.executable
        self.cpu = cpu
        self.port = port
        self.front_end_root = front_end_root
        self.extra_custom_nodes = [Path(p).resolve() for p in extra_custom_nodes]
        self.extra_model_paths = [Path(p).resolve() for p in extra_model_paths]
        self.install_pack = install_pack
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.work_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self.pack_location: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.work_dir is not None
        return self.work_dir / "server.log"

    def log_text(self) -> str:
        """Everything the server printed so far."""
        if self.work_dir is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def command(self) -> list[str]:
        """The ``main.py`` command line (after :meth:`prepare`)."""
        assert self.work_dir is not None and self.port is not None
        work = self.work_dir
        args = [
            self.python,
            "main.py",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-api-nodes",
            "--extra-model-paths-config",
            str(work / "extra_model_paths.yaml"),
            *(str(p) for p in self.extra_model_paths),
            "--input-directory",
            str(work / "input"),
            "--output-directory",
            str(work / "output"),
            "--temp-directory",
            str(work),
            "--user-directory",
            str(work / "user"),
        ]
        if self.cpu:
            args.append("--cpu")
        if self.front_end_root is not None:
            args += ["--front-end-root", str(Path(self.front_end_root).resolve())]
        cli_args = self.comfyui / "comfy" / "cli_args.py"
        if cli_args.is_file() and "--database-url" in cli_args.read_text(encoding="utf-8", errors="replace"):
            args += ["--database-url", "sqlite:///:memory:"]  # never write a database into the checkout
        return args + self.extra_args

    def prepare(self) -> None:
        """Create the temporary folders, link the pack and extra node packs, write the YAML."""
        if not (self.comfyui / "main.py").is_file():
            raise HeadlessError(
                f"{self.comfyui} is not a ComfyUI checkout (no main.py): fix --comfyui / COMFYUI_PATH"
            )
        self.work_dir = Path(tempfile.mkdtemp(prefix="oir-edit-comfyui-"))
        nodes_dir = self.work_dir / "custom_nodes"
        for sub in ("custom_nodes", "input", "output", "user"):
            (self.work_dir / sub).mkdir()
        self.port = self.port or free_port()
        already = pack_installed_in(self.comfyui)
        if self.install_pack and already is None:
            if not pack_is_checkout():
                raise HeadlessError(
                    f"the OIR nodes are not installed in {self.comfyui}/custom_nodes and this oir-edit "
                    f"install ({PACK_ROOT}) is not a checkout of the pack: install the pack in ComfyUI first"
                )
            _link(PACK_ROOT, nodes_dir / PACK_FOLDER)
            self.pack_location = nodes_dir / PACK_FOLDER
        else:
            self.pack_location = already
        folders = ["custom_nodes"]
        for extra in self.extra_custom_nodes:
            if not extra.is_dir():
                raise HeadlessError(f"--extra-custom-nodes {extra} is not a folder")
            if (extra / "__init__.py").is_file():
                _link(extra, nodes_dir / extra.name)
            else:
                folders.append(str(extra))
        lines = ["oir_edit_headless:", f"  base_path: {json.dumps(str(self.work_dir))}", "  custom_nodes: |"]
        lines += [f"    {folder}" for folder in folders]
        (self.work_dir / "extra_model_paths.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start(self) -> ComfyServer:
        """Start ComfyUI and wait until ``/system_stats`` answers (bounded by ``startup_timeout``)."""
        started = time.monotonic()
        self.prepare()
        assert self.work_dir is not None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.comfyui,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl-C in the terminal reaches oir-edit, which stops the server
            )
        client = ComfyClient(self.url, timeout=5.0)
        deadline = started + self.startup_timeout
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise HeadlessError(
                        f"ComfyUI exited during startup (code {code}): {self.last_log_line()} "
                        f"(full log: {self._kept_log()})"
                    )
                with contextlib.suppress(HeadlessError):
                    client.system_stats()
                    break
                if time.monotonic() > deadline:
                    raise HeadlessError(
                        f"ComfyUI did not answer within {self.startup_timeout:.0f} s: {self.last_log_line()} "
                        f"(full log: {self._kept_log()})"
                    )
                time.sleep(0.25)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def last_log_line(self) -> str:
        lines = [line for line in self.log_text().splitlines() if line.strip()]
        return _one_line(lines[-1]) if lines else "(no output)"

    def _kept_log(self) -> str:
        """Copy the log out of the temporary folder (which :meth:`stop` removes)."""
        kept = Path(tempfile.gettempdir()) / f"oir-edit-comfyui-{self.port}.log"
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log_path, kept)
        return str(kept)

    def import_problems(self, names: Iterable[str] = ()) -> list[str]:
        """Log lines where ComfyUI failed to import the pack (or the packs named in ``names``)."""
        wanted = [PACK_FOLDER, *names]
        if self.pack_location is not None:
            wanted.append(str(self.pack_location))
        problems = []
        for line in self.log_text().splitlines():
            failed = (
                "IMPORT FAILED" in line
                or "Cannot import" in line
                or "Error while calling comfy_entrypoint" in line
            )
            if failed and any(name in line for name in wanted):
                problems.append(line.strip())
        return problems

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the server (kill after ``timeout`` s) and remove its temporary folder."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
            self.work_dir = None

    def __enter__(self) -> ComfyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _link(target: Path, link: Path) -> None:
    """Symlink ``link`` -> ``target`` (a directory junction-free copy is not attempted)."""
    try:
        link.symlink_to(target, target_is_directory=True)
    except OSError as error:
        raise HeadlessError(f"cannot link {target} into ComfyUI's custom nodes ({error})") from None


# --------------------------------------------------------------------------------------------------
# Running one edit


def format_eta(seconds: float | None) -> str:
    """``"ETA 1:05"`` (minutes:seconds, or hours:minutes:seconds), ``"ETA ?"`` when unknown."""
    if seconds is None:
        return "ETA ?"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"ETA {hours}:{minutes:02d}:{secs:02d}" if hours else f"ETA {minutes}:{secs:02d}"


def describe_stage(data: Mapping[str, Any]) -> str:
    """One ``oir_progress`` event (``nodes/progress.py``) as text: stage, level, rows, ETA."""
    rows = f"rows {data.get('rows_done')}/{data.get('rows_total')}" if data.get("rows_total") else ""
    level = f"level {data.get('level')}/{data.get('levels_total')}"
    return ", ".join(p for p in (str(data.get("stage", "")), level, rows, format_eta(data.get("eta_s"))) if p)


class Progress:
    """Prints one line per node and live stage progress; records node timings.

    On a terminal the current node's line is rewritten in place with ComfyUI's step counts and the
    OIR stages' ``oir_progress`` events (level, rows, ETA); elsewhere (a log file, CI) one stage
    line is printed at most every ``quiet_interval`` seconds, and when a stage finishes.
    """

    def __init__(
        self, titles: Mapping[str, str], stream: TextIO | None, label: str = "", quiet_interval: float = 10.0
    ) -> None:
        self.titles = dict(titles)
        self.quiet_interval = quiet_interval
        self._last_line = 0.0
        self.stream = stream
        self.label = f"[{label}] " if label else ""
        self.live = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        self.current: str | None = None
        self.started = 0.0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.count = 0

    def _print(self, text: str, end: str = "\n") -> None:
        if self.stream is not None:
            self.stream.write(text + end)
            self.stream.flush()

    def _finish_current(self) -> None:
        if self.current is not None:
            self.nodes[self.current]["seconds"] = round(time.monotonic() - self.started, 3)
            if self.live:
                self._print("")
            self.current = None

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "execution_cached":
            for node in data.get("nodes") or []:
                self.nodes[str(node)] = {
                    "title": self.titles.get(str(node), str(node)),
                    "cached": True,
                    "seconds": 0.0,
                }
        elif kind == "executing":
            self._finish_current()
            node = data.get("node")
            if node is None:
                return
            node = str(node)
            self.count += 1
            self.current, self.started = node, time.monotonic()
            title = self.titles.get(node, node)
            self.nodes[node] = {"title": title, "cached": False, "seconds": None}
            self._print(
                f"{self.label}{self.count:>2}/{len(self.titles)} {title}", end="" if self.live else "\n"
            )
        elif kind == "progress" and self.live and self.current is not None:
            title = self.titles.get(self.current, self.current)
            step = f"{data.get('value')}/{data.get('max')}"
            self._print(f"\r{self.label}{self.count:>2}/{len(self.titles)} {title}: {step}", "")
        elif kind == "oir_progress" and self.current is not None:
            title = self.titles.get(self.current, self.current)
            text = f"{self.label}{self.count:>2}/{len(self.titles)} {title}: {describe_stage(data)}"
            if self.live:
                self._print(f"\r{text}\x1b[K", "")
                return
            now = time.monotonic()
            finished = data.get("rows_total") and data.get("rows_done") == data.get("rows_total")
            if finished or now - self._last_line >= self.quiet_interval:
                self._last_line = now
                self._print(f"    {describe_stage(data)}")
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self._finish_current()


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
                    hint = f"; ComfyUI log: {_one_line(problems[-1])}" if problems else ""
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
                raise HeadlessError(f"{spec.name}: ComfyUI stored {path.name} as {stored!r}")
        timings["upload_s"] = round(time.monotonic() - clock, 3)

        clock = time.monotonic()
        client_id = uuid.uuid4().hex
        events = self.client.websocket(client_id)
        progress = Progress(describe_nodes(workflow), self.stream, spec.name)
        try:
            prompt_id = self.client.queue(workflow, client_id)
            try:
                entry = self.client.wait(prompt_id, events, self.timeout, progress)
            except KeyboardInterrupt:
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
        search_ui = entry.get("outputs", {}).get(search, {})
        report = {
            "oir_edit_report": 1,
            "case": spec.name,
            "status": "ok",
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "spec": spec.to_dict(),
            "prompts": check.plan.to_dict(),
            "image_size": list(check.image_size),
            "reassembly": {"reassembly_step": check.reassembly[0], "reinversion_steps": check.reassembly[1]},
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
        upload was padded to a multiple of 8, ``oir_core/pictures.py``).
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
                    f"node {node} ({title}) refused an input: {_one_line(first)}", details
                )
            return ExecutionFailed(f"ComfyUI failed in node {node} ({title}): {_one_line(first)}", details)
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
    after hours. A lost server (:class:`ServerUnreachable`) stops the batch. ``batch_report.json``
    in ``out_dir`` lists every case's outcome, also when the batch stops early.
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

    try:
        runner = runner_factory() if pending else None
        ready = []
        for case, check, case_dir in pending:  # every case's names and ranges before the first run
            assert case.spec is not None and runner is not None
            try:
                runner.check(case.spec, check)
            except ServerUnreachable:
                raise
            except (SpecError, HeadlessError) as error:
                fail(case, case_dir, error)
                continue
            ready.append((case, check, case_dir))
        for case, check, case_dir in ready:
            assert case.spec is not None and runner is not None
            started = time.monotonic()
            try:
                report = runner.run(case.spec, check, case_dir)
            except ServerUnreachable:
                raise
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


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("ComfyUI server")
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
        "--startup-timeout", type=float, default=300.0, help="seconds to wait for ComfyUI to start"
    )
    server.add_argument("--timeout", type=float, default=7200.0, help="seconds one edit may take")
    server.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def build_parser(mode: str) -> argparse.ArgumentParser:
    """The ``oir-edit`` (``mode='run'``) or ``oir-edit batch`` parser."""
    if mode == "batch":
        parser = argparse.ArgumentParser(
            prog="oir-edit batch",
            description="Run every edit spec under DIR (spec files, or an OIR-Bench config with "
            "image_path/origin_prompt/...). Cases with a report.json in OUT are skipped; a failing case is "
            "reported in OUT/<case>/error.txt and the batch goes on. Flags give defaults for every case; "
            "a case's own fields win.",
        )
        parser.add_argument("directory", type=Path, metavar="DIR", help="folder of spec files")
        parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per case)")
    else:
        parser = argparse.ArgumentParser(
            prog="oir-edit",
            description="Object-aware Inversion and Reassembly (OIR) edit through ComfyUI. "
            "'oir-edit batch DIR --out OUT' runs a folder of edit specs.",
        )
        parser.add_argument("--out", type=Path, required=True, help="output folder")
    _add_edit_options(parser, single=mode != "batch")
    _add_server_options(parser)
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
        client.system_stats()  # raises ServerUnreachable with one line
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
    """``oir-edit [run]``: validate, connect, edit, write the outputs."""
    started = time.monotonic()
    spec = spec_from_args(args)
    check = validate_local(spec)
    out_dir = writable_folder(Path(args.out))
    validated = time.monotonic() - started
    connection = connect(args, stream)
    try:
        runner = _runner(connection, args, stream)
        try:
            report = runner.run(spec, check, out_dir)
        except ExecutionFailed as error:
            write_error(out_dir, str(error), error.details)
            raise
    finally:
        connection.close()
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
    defaults = spec_fields_from_args(args)
    out_dir = writable_folder(Path(args.out)).resolve()
    cases = discover_cases(Path(args.directory), defaults, exclude=[out_dir])
    if not cases:
        raise SpecError(
            f"no edit specs (*.yaml, *.yml, *.json with image/prompt/edits or OIR-Bench fields) "
            f"in {args.directory}"
        )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``oir-edit``; returns the exit code (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    mode = "run"
    if argv and argv[0] in ("run", "batch"):
        mode, argv = argv[0], argv[1:]
    args = build_parser(mode).parse_args(argv)
    stream = None if args.quiet else sys.stderr
    try:
        return run_batch_command(args, stream) if mode == "batch" else run_single(args, stream)
    except (SpecError, ServerUnreachable) as error:
        print(f"oir-edit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputRefusedByNode as error:
        print(f"oir-edit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ExecutionFailed as error:
        print(f"oir-edit: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except HeadlessError as error:
        print(f"oir-edit: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("oir-edit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
