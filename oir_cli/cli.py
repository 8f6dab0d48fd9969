"""The ``oir-edit`` command: picks the subcommand, connects to (or starts) ComfyUI, runs, exits with a code.

``oir-edit`` runs OIR edits through a ComfyUI server, one spec or a batch folder. A client of
ComfyUI's API (:mod:`oir_cli.client`) plus a ComfyUI launcher (:mod:`oir_cli.server`); never imports
ComfyUI or torch. Its flags are :mod:`oir_cli.arguments`; one edit (:mod:`oir_cli.runner`) fills the
shipped API workflow (:mod:`oir_cli.filling`), uploads the image and masks (``/upload/image``), queues
the graph (``/prompt``), follows the progress on ComfyUI's websocket (``/ws``; polling ``/history``
when the socket is unavailable; :mod:`oir_cli.progress`) and writes into the output folder
(:mod:`oir_cli.results`; a batch: :mod:`oir_cli.batch`):

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
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .arguments import build_parser, check_number_flags, spec_fields_from_args, spec_from_args
from .batch import run_batch
from .checks import validate_local
from .client import (
    ComfyClient,
    ExecutionFailed,
    HeadlessError,
    InputRefusedByNode,
    ServerFailure,
    ServerUnreachable,
)
from .discovery import discover_cases
from .results import BATCH_REPORT_NAME, REPORT_NAME, write_error, write_report
from .runner import EditRunner
from .server import ComfyServer
from .specs import SpecError

__all__ = ["EditRunner", "exit_code", "main", "run_batch"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


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
