"""Runs a batch of cases on one server: local checks first, every case checked on the server before the
first edit, one failure recorded while the batch goes on, ``batch_report.json`` always written.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TextIO

from .checks import LocalCheck, validate_local
from .client import (
    HeadlessError,
    ServerUnreachable,
)
from .discovery import Case
from .results import BATCH_REPORT_NAME, REPORT_NAME, is_finished, safe_case_dir, write_error, write_report
from .specs import EditSpec, SpecError


class CaseRunner(Protocol):
    """What :func:`run_batch` needs from a server: cheap checks first, then the runs."""

    def check(self, spec: EditSpec, local: LocalCheck) -> None:
        """Raise a one-line error if the server cannot run ``spec`` (names, ranges); no heavy work."""

    def run(self, spec: EditSpec, check: LocalCheck, out_dir: Path) -> dict[str, Any]:
        """Run one validated spec into ``out_dir`` and return its report."""

    def probe(self) -> None:
        """Raise :class:`ServerUnreachable` if the server does not answer (after its retries)."""


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
