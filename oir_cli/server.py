"""Launching a ComfyUI server with the OIR pack installed, for ``oir-edit --comfyui``.

The pack is linked into a temporary ``custom_nodes`` folder that an extra-model-paths YAML
registers, so ComfyUI's own folders stay untouched; see :class:`ComfyServer`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from .client import ComfyClient, HeadlessError, ServerFailure, one_line

__all__ = ["PACK_FOLDER", "PACK_ROOT", "ComfyServer", "free_port", "pack_installed_in", "pack_is_checkout"]

PACK_ROOT = Path(__file__).resolve().parents[1]
"""The pack's folder when running from a checkout (it holds ``__init__.py`` and ``nodes/``)."""

PACK_FOLDER = "oir-edit"
"""Folder name the pack gets in a launched server's custom_nodes (= the project name, so ComfyUI's
``/extensions/<name>/`` web path is the same as for a registry install)."""


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
        env: environment variables set for this server only (e.g. ``CUDA_VISIBLE_DEVICES``).
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
        env: Mapping[str, str] | None = None,
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
        self.env = dict(env or {})
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
        paths = {"oir_edit_headless": {"base_path": str(self.work_dir), "custom_nodes": "\n".join(folders)}}
        (self.work_dir / "extra_model_paths.yaml").write_text(yaml.safe_dump(paths), encoding="utf-8")

    def start(self) -> ComfyServer:
        """Start ComfyUI and wait until ``/system_stats`` answers (bounded by ``startup_timeout``)."""
        started = time.monotonic()
        self.prepare()
        assert self.work_dir is not None
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
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
        client = ComfyClient(self.url, timeout=5.0, retries=0)  # this loop is the retry
        deadline = started + self.startup_timeout
        try:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise ServerFailure(
                        f"ComfyUI exited during startup (code {code}): {self.last_log_line()} "
                        f"(full log: {self._kept_log()})"
                    )
                with contextlib.suppress(HeadlessError):
                    client.system_stats()
                    break
                if time.monotonic() > deadline:
                    raise ServerFailure(
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
        return one_line(lines[-1]) if lines else "(no output)"

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
