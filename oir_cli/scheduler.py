"""``oir-edit batch`` over many ComfyUI servers: check them, hand out cases, survive a lost server.

ComfyUI scales by running many instances (one per GPU, on one machine or many), each taking
API-format prompts on ``/prompt``; this module only hands cases to them (ARCHITECTURE.md §8,
docs/scaling.md):

1. **Checks before the first edit** (:func:`check_servers`), every server in parallel: it answers
   ``/system_stats``; it has the pack's nodes and the ``--model-loader`` (``EditRunner.facts``); it
   runs the same pack as the first healthy server (``GET /oir/pack``: release and code hash); it
   offers every checkpoint / scorer / LoRA / ControlNet name and range the cases use
   (``EditRunner.check``), and the same default scorer when a case names none. A server that fails
   is left out with the reason; a case that no server accepts fails with its own reason; no server
   left is a refused input (exit 2).
2. **Scheduling** (:func:`run_on_servers`): one thread per server pulls the next case from one
   shared queue, so each server runs one case at a time and the next case goes to the next free
   server. Each case is run by ``EditRunner.run`` exactly as a one-server batch runs it, so its
   folder holds the same files.
3. **Faults**: a server that stops answering or fails (``ServerFailure``: unreachable after the
   client's retries, an error status, a bad answer) has the case put back on the queue for another
   server, at most ``retries`` times; a server that no longer answers ``/system_stats`` is left out
   for the rest of the batch. A case failing for a reason of its own (a refused input, a node
   error, ``--timeout``) is not retried. When every server is lost, the cases not run fail with
   the servers' reasons.
4. **Ctrl-C**: no more cases are handed out; on every server oir-edit's own prompt is taken off
   the queue (``POST /queue`` delete) and, only when ``/queue`` shows that server running it,
   interrupted (``POST /interrupt`` with its id): other clients' prompts are never touched. The
   cases not finished have no ``report.json``, so a re-run (with any set of servers) runs exactly
   them.

``batch_report.json`` lists every case once (done / failed / skipped) with the server that ran it,
the number of tries and each try, and every server with its status and reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from . import answers
from .batch import CaseResult
from .checks import LocalCheck, validate_local
from .client import (
    ComfyClient,
    HeadlessError,
    HTTPStatusError,
    ServerFailure,
    ServerUnreachable,
    one_line,
)
from .discovery import Case
from .results import BATCH_REPORT_NAME, REPORT_NAME, is_finished, safe_case_dir, write_error, write_report
from .specs import SpecError

__all__ = [
    "BatchStopped",
    "Server",
    "TrackingClient",
    "cancel_own_prompt",
    "check_servers",
    "read_servers_file",
    "run_batch_on_servers",
    "run_on_servers",
    "server_urls",
]

DEFAULT_RETRIES = 2
"""Times a case is put back on the queue after a server failed it (so at most 3 tries)."""

QUICK = {"timeout": 5.0, "retries": 1}
"""Client settings for the probes and cancels that must not wait through the full retry policy."""

JOIN_AFTER_STOP_S = 60.0
"""Seconds each server's thread gets to cancel its prompt after Ctrl-C (the polls stop within 2 s)."""


INTERRUPTED = "interrupted (Ctrl-C) before it finished: a re-run runs it"


class BatchStopped(Exception):
    """Raised inside a server's thread once the batch is stopped (Ctrl-C): its wait ends."""


# --------------------------------------------------------------------------------------------------
# Server lists


def _normalised(url: str) -> str:
    url = url.strip()
    if "://" not in url:
        url = f"http://{url}"
    return url.rstrip("/")


def _check_url(url: str, where: str) -> str:
    """``url`` normalised (``http://`` added, trailing ``/`` dropped), or a one-line refusal."""
    normal = _normalised(url)
    parts = urlsplit(normal)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SpecError(f"{where} {url!r} is not a server address: give e.g. http://127.0.0.1:8188")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise SpecError(f"{where} {url!r}: the port is not a number (e.g. http://10.0.0.5:8188)") from None
    return normal


def read_servers_file(path: Path) -> list[tuple[str, str]]:
    """``(url, where)`` per server of a ``--servers`` file: one URL a line; blank lines and ``#``
    comments (whole lines or after the URL) are ignored."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(
            f"--servers {path}: cannot read it ({error}): give a text file, one URL a line"
        ) from None
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            found.append((entry, f"--servers {path} line {number}:"))
    if not found:
        raise SpecError(
            f"--servers {path} lists no server: write one URL a line (e.g. http://127.0.0.1:8188)"
        )
    return found


def server_urls(args: argparse.Namespace) -> list[str]:
    """The servers of ``--server`` (repeatable) then ``--servers FILE``, checked, each once."""
    given = [(url, "--server") for url in (getattr(args, "server", None) or [])]
    if getattr(args, "servers", None) is not None:
        given += read_servers_file(args.servers)
    urls: dict[str, str] = {}
    for url, where in given:
        normal = _check_url(url, where)
        if normal in urls:
            raise SpecError(
                f"{where} {url} is listed twice (also {urls[normal]}): each server runs one case at a "
                "time, list it once"
            )
        urls[normal] = where
    return list(urls)


# --------------------------------------------------------------------------------------------------
# One server


def _queue_state(client: ComfyClient) -> answers.QueueState:
    return client.checked(answers.QueueState, client.request("GET", "/queue"), "GET /queue")


def cancel_own_prompt(client: ComfyClient, prompt_id: str) -> str:
    """Take ``prompt_id`` off the server: delete it from the pending queue, and interrupt only if
    ``/queue`` shows the server running it (older ComfyUI versions interrupt whatever runs when
    told ``/interrupt``, another client's prompt included). Returns what was done: ``"interrupted"``,
    ``"removed"`` (pending, or no longer there) or ``"unreachable"``."""
    with contextlib.suppress(HeadlessError):  # deleting an id the queue does not hold changes nothing
        client.request("POST", "/queue", json={"delete": [prompt_id]})
    try:
        state = _queue_state(client)
    except HeadlessError:
        return "unreachable"
    if prompt_id in state.prompt_ids("queue_running"):
        with contextlib.suppress(HeadlessError):
            client.request("POST", "/interrupt", json={"prompt_id": prompt_id})
            return "interrupted"
        return "unreachable"
    return "removed"


class TrackingClient(ComfyClient):
    """A :class:`ComfyClient` that knows the prompt it queued and can be stopped from outside.

    - :meth:`queue` records the prompt id (chosen before sending) in :attr:`active`;
    - :meth:`history` raises :class:`BatchStopped` once ``stop`` is set, which ends
      ``ComfyClient.wait`` within one poll and makes ``EditRunner.run`` cancel its prompt;
    - :meth:`interrupt` is :func:`cancel_own_prompt` with quick tries (a lost server is not waited
      through the whole retry policy again).
    """

    def __init__(self, url: str, stop: threading.Event, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.stop = stop
        self.active: str | None = None
        self.quick = ComfyClient(self.url, **QUICK)

    def queue(self, workflow: Mapping[str, Any], client_id: str, prompt_id: str | None = None) -> str:
        if self.stop.is_set():  # stopped while uploading: queue nothing
            raise BatchStopped("the batch was stopped")
        self.active = prompt_id
        self.active = super().queue(workflow, client_id, prompt_id)
        return self.active

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        if self.stop.is_set():
            raise BatchStopped("the batch was stopped")
        return super().history(prompt_id)

    def interrupt(self, prompt_id: str) -> None:
        cancel_own_prompt(self.quick, prompt_id)


@dataclass
class Server:
    """One server of the batch: its runner and what the checks and the run found.

    ``status``: ``"ready"`` (passed the checks), ``"left out"`` (failed one: ``reason``) or
    ``"lost"`` (stopped answering during the batch: ``reason``).
    """

    url: str
    runner: Any  # cli.EditRunner on a TrackingClient
    status: str = "ready"
    reason: str | None = None
    pack: dict[str, Any] | None = None
    versions: dict[str, Any] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    cases_done: int = 0
    current: Any = None  # the Job this server's thread runs

    @property
    def client(self) -> TrackingClient:
        return self.runner.client

    def leave_out(self, reason: str) -> None:
        self.status, self.reason = "left out", one_line(reason, 400)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "reason": self.reason,
            "pack": self.pack,
            "versions": self.versions,
            "devices": self.devices,
            "cases_done": self.cases_done,
        }


def _pack_of(client: ComfyClient) -> dict[str, Any]:
    """The server's ``/oir/pack``; a pack without the route is ``{"version": "unknown"}``."""
    try:
        body = client.request("GET", "/oir/pack")
    except HTTPStatusError as error:
        if error.status == 404:
            return {"name": "oir-edit", "version": "unknown (no /oir/pack: a pack older than this command)"}
        raise
    return client.checked(answers.PackInfo, body, "GET /oir/pack").model_dump()


def _describe_pack(pack: Mapping[str, Any] | None) -> str:
    pack = pack or {}
    code = f" (code {pack['code']})" if pack.get("code") else ""
    return f"{pack.get('version', 'unknown')}{code}"


def _first_contact(server: Server) -> None:
    """Reachable, the pack's nodes and the loader present, its pack version read (or left out)."""
    try:
        ComfyClient(server.url, **QUICK).system_stats()
    except HeadlessError as error:
        server.leave_out(f"{error}: is ComfyUI running there?")
        return
    try:
        facts = server.runner.facts()
        server.versions = {k: v for k, v in facts.versions().items() if k != "client_python"}
        server.devices = facts.devices()
        server.pack = _pack_of(server.client)
    except HeadlessError as error:
        server.leave_out(str(error))


def check_servers(
    servers: Sequence[Server],
    pending: Sequence[tuple[Case, LocalCheck, Path]],
    say: Callable[[str], None],
) -> dict[str, str]:
    """The checks before the first edit (module docstring, point 1); marks servers left out.

    Returns ``{case name: reason}`` for the cases no server accepts (their own fault: a name no
    server offers, a value out of every server's range). Raises :class:`HeadlessError` (exit 2)
    when no server passes, with every server's reason.
    """
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(servers)))) as pool:
        list(pool.map(_first_contact, servers))
    healthy = [s for s in servers if s.status == "ready"]
    if healthy:
        first = healthy[0]
        for server in healthy[1:]:
            if server.pack != first.pack:
                server.leave_out(
                    f"it runs the OIR pack {_describe_pack(server.pack)}, but {first.url} runs "
                    f"{_describe_pack(first.pack)}: install the same pack version on every server "
                    "(a case must give the same result wherever it runs)"
                )
            elif server.versions != first.versions or server.devices != first.devices:
                say(
                    f"note: {server.url} has {server.versions} on {server.devices}, {first.url} has "
                    f"{first.versions} on {first.devices}: results may differ in the last bits"
                )

    def refusals_of(server: Server) -> dict[str, str]:
        refused: dict[str, str] = {}
        for case, check, _ in pending:
            assert case.spec is not None
            try:
                server.runner.check(case.spec, check)
            except ServerUnreachable as error:
                server.leave_out(str(error))
                return {}
            except (SpecError, HeadlessError) as error:
                refused[case.name] = str(error)
        return refused

    candidates = [s for s in servers if s.status == "ready"]
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(candidates)))) as pool:
        refusals = dict(zip([s.url for s in candidates], pool.map(refusals_of, candidates)))
    candidates = [s for s in candidates if s.status == "ready"]
    case_failures: dict[str, str] = {}
    for case, _, _ in pending:
        if candidates and all(case.name in refusals[s.url] for s in candidates):
            case_failures[case.name] = refusals[candidates[0].url][case.name]
    for server in candidates:
        own = [(name, why) for name, why in refusals[server.url].items() if name not in case_failures]
        if own:
            name, why = own[0]
            others = f" ({len(own)} cases in all)" if len(own) > 1 else ""
            server.leave_out(f"cannot run case {name} that other servers can{others}: {why}")
    candidates = [s for s in candidates if s.status == "ready"]
    if candidates and any(c.spec is not None and not c.spec.scorer for c, _, _ in pending):
        scorers: dict[str, str] = {}
        for server in candidates:
            with contextlib.suppress(HeadlessError):
                scorers[server.url] = server.runner.default_scorer()
        first_scorer = scorers.get(candidates[0].url)
        for server in candidates[1:]:
            if server.url in scorers and scorers[server.url] != first_scorer:
                server.leave_out(
                    f"its first CLIP scorer in models/oir_clip is {scorers[server.url]!r}, "
                    f"{candidates[0].url}'s is {first_scorer!r}: cases without a scorer would be scored "
                    "differently (give --scorer, or the same oir_clip folder on every server)"
                )
    for server in servers:
        if server.status != "ready":
            say(f"server {server.url} left out: {server.reason}")
    if not any(s.status == "ready" for s in servers):
        reasons = "; ".join(f"{s.url}: {s.reason}" for s in servers)
        raise HeadlessError(f"no server passed the checks ({reasons})")
    return case_failures


# --------------------------------------------------------------------------------------------------
# The batch


@dataclass
class Attempt:
    """One try of a case on one server (seconds from the batch's start)."""

    server: str
    started_s: float
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "started_s": round(self.started_s, 3),
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass
class Job:
    """A case on its way through the queue."""

    case: Case
    check: LocalCheck
    out_dir: Path
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class BatchCaseResult(CaseResult):
    """What happened to one case: a one-server batch's :class:`CaseResult`, plus the server that
    ran it and every try."""

    server: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    interrupted: bool = False

    @property
    def tries(self) -> int:
        return len(self.attempts)

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "server": self.server,
            "tries": self.tries,
            "attempts": [a.to_dict() for a in self.attempts],
            "interrupted": self.interrupted,
        }


class _Batch:
    """The shared state of one batch: the queue, the results, the stop flag."""

    def __init__(self, stream: TextIO | None, retries: int) -> None:
        self.stream = stream
        self.retries = retries
        self.work: queue.Queue[Job] = queue.Queue()
        self.lock = threading.Lock()
        self.results: dict[str, BatchCaseResult] = {}
        self.queued: set[str] = set()
        self.outstanding = 0
        self.stop = threading.Event()
        self.started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        if self.stream is not None:
            with self.lock:
                self.stream.write(text + "\n")
                self.stream.flush()

    def enqueue(self, job: Job) -> None:
        with self.lock:
            self.queued.add(job.case.name)
            self.outstanding += 1
        self.work.put(job)

    def finish(self, result: BatchCaseResult, details: str = "") -> None:
        """Record a case's final result (once: a later result for the same case is ignored)."""

        with self.lock:
            if result.name in self.results:
                return
            self.results[result.name] = result
            if result.name in self.queued:
                self.outstanding -= 1
        if result.status == "failed":
            write_error(result.out_dir, result.error or "failed", details)

    def fail(self, job: Job, error: str, *, interrupted: bool = False, details: str = "") -> None:
        self.finish(
            BatchCaseResult(
                job.case.name,
                "failed",
                job.out_dir,
                error,
                sum(a.seconds for a in job.attempts),
                server=job.attempts[-1].server if job.attempts else None,
                attempts=list(job.attempts),
                interrupted=interrupted,
            ),
            details,
        )
        if not interrupted:
            self.say(f"[{job.case.name}] failed: {error}")

    def worker(self, server: Server, finished: threading.Event) -> None:
        """:meth:`work_on`, then ``finished`` is set (the main thread waits on these events, not on
        ``Thread.join``, which a Ctrl-C arriving inside it can leave reporting a live thread as ended)."""
        try:
            self.work_on(server)
        finally:
            finished.set()

    def work_on(self, server: Server) -> None:
        """One server's loop: take the next case, run it, record it; end when nothing is left, the
        batch is stopped or the server is lost."""

        while not self.stop.is_set():
            try:
                job = self.work.get(timeout=0.2)
            except queue.Empty:
                with self.lock:
                    if self.outstanding <= 0:
                        return
                continue
            if self.stop.is_set():
                self.work.put(job)  # listed as not run by the main thread
                return
            attempt = Attempt(server.url, self.now())
            job.attempts.append(attempt)
            server.current, server.client.active = job, None
            assert job.case.spec is not None
            try:
                report = server.runner.run(job.case.spec, job.check, job.out_dir)
            except BatchStopped:
                attempt.seconds, attempt.error = self.now() - attempt.started_s, "interrupted"
                self.fail(job, INTERRUPTED, interrupted=True)
                return
            except ServerFailure as error:
                attempt.seconds, attempt.error = self.now() - attempt.started_s, str(error)
                if self.stop.is_set():
                    self.fail(job, INTERRUPTED, interrupted=True)
                    return
                lost = not _answers(server.url)
                if len(job.attempts) <= self.retries:
                    self.work.put(job)  # first, so a free server takes it at once
                    self.say(f"[{job.case.name}] {server.url} failed it ({error}); queued again")
                else:
                    self.fail(job, f"gave up after {len(job.attempts)} tries: {error}")
                if lost:
                    server.status, server.reason = "lost", one_line(str(error), 400)
                    self.say(f"server {server.url} lost: {server.reason}")
                    return
                continue
            except (SpecError, HeadlessError) as error:  # the case's own: refused input, node error, timeout
                attempt.seconds, attempt.error = self.now() - attempt.started_s, str(error)
                if self.stop.is_set():
                    self.fail(job, INTERRUPTED, interrupted=True)
                    return
                self.fail(job, str(error), details=getattr(error, "details", ""))
                continue
            except Exception as error:  # a bug must fail one case, not end a thread silently
                attempt.seconds, attempt.error = self.now() - attempt.started_s, repr(error)
                self.fail(job, f"oir-edit failed unexpectedly: {type(error).__name__}: {error}")
                continue
            finally:
                server.current, server.client.active = None, None
            attempt.seconds = self.now() - attempt.started_s
            write_report(job.out_dir, report)
            steps = [int(s) for s in report.get("chosen_steps", [])]
            server.cases_done += 1
            self.finish(
                BatchCaseResult(
                    job.case.name,
                    "done",
                    job.out_dir,
                    None,
                    attempt.seconds,
                    steps,
                    server=server.url,
                    attempts=list(job.attempts),
                )
            )
            tries = f", try {len(job.attempts)}" if len(job.attempts) > 1 else ""
            self.say(
                f"[{job.case.name}] done in {attempt.seconds:.1f} s on {server.url}{tries}: chosen steps "
                f"{steps} -> {job.out_dir}"
            )


def _answers(url: str) -> bool:
    """Whether ``/system_stats`` answers now (quick tries)."""
    try:
        ComfyClient(url, **QUICK).system_stats()
    except HeadlessError:
        return False
    return True


def run_on_servers(
    cases: Sequence[Case],
    out_dir: Path,
    servers: Sequence[Server],
    *,
    retries: int = DEFAULT_RETRIES,
    stream: TextIO | None = sys.stderr,
    stop: threading.Event | None = None,
) -> tuple[list[BatchCaseResult], bool]:
    """Run every unfinished case on the servers (module docstring); returns the results in the
    cases' order and whether the batch was interrupted (Ctrl-C). ``batch_report.json`` is written
    in ``out_dir`` however the batch ends. ``stop``: the event the servers' clients watch."""

    out_dir.mkdir(parents=True, exist_ok=True)
    batch = _Batch(stream, retries)
    if stop is not None:
        batch.stop = stop
    pending: list[tuple[Case, LocalCheck, Path]] = []
    for case in cases:
        case_dir = out_dir / safe_case_dir(case.name)
        if is_finished(case_dir):
            batch.finish(BatchCaseResult(case.name, "skipped", case_dir))
            batch.say(f"[{case.name}] skipped: finished earlier ({case_dir / REPORT_NAME})")
            continue
        try:
            if case.spec is None:
                raise SpecError(case.error or f"{case.name}: unreadable")
            pending.append((case, validate_local(case.spec), case_dir))
        except SpecError as error:
            batch.fail(Job(case, None, case_dir), str(error))  # type: ignore[arg-type]
    interrupted = False
    threads: list[threading.Thread] = []
    ended: list[threading.Event] = []
    not_run_reason = "not run"
    try:
        if pending:
            refused = check_servers(servers, pending, batch.say)
            for case, check, case_dir in pending:
                job = Job(case, check, case_dir)
                if case.name in refused:
                    batch.fail(job, refused[case.name])
                else:
                    batch.enqueue(job)
            ready = [s for s in servers if s.status == "ready"]
            if len(ready) > 1:
                batch.say(f"batch: {batch.outstanding} cases on {len(ready)} servers")
            ended = [threading.Event() for _ in ready]
            threads = [
                threading.Thread(target=batch.worker, args=(s, e), daemon=True) for s, e in zip(ready, ended)
            ]
            for thread in threads:
                thread.start()
            while not all(e.is_set() for e in ended):
                time.sleep(0.1)  # Ctrl-C arrives here as KeyboardInterrupt
            lost = [f"{s.url}: {s.reason}" for s in servers if s.status == "lost"]
            not_run_reason = f"not run: every server was lost ({'; '.join(lost)})"
    except KeyboardInterrupt:
        interrupted = True
        not_run_reason = "not run: the batch was interrupted (Ctrl-C); a re-run runs it"
        batch.stop.set()
        batch.say("interrupted: no more cases are handed out; cancelling oir-edit's prompts on the servers")
        for server in servers:
            prompt = server.client.active if server.status == "ready" else None
            if prompt is not None:
                outcome = cancel_own_prompt(ComfyClient(server.url, **QUICK), prompt)
                name = server.current.case.name if server.current is not None else "?"
                batch.say(f"server {server.url}: prompt {prompt} of case {name} {outcome}")
        deadline = time.monotonic() + JOIN_AFTER_STOP_S
        while not all(e.is_set() for e in ended) and time.monotonic() < deadline:
            time.sleep(0.1)
    except HeadlessError as error:  # no server passed the checks
        not_run_reason = f"not run: {error}"
        raise
    finally:
        batch.stop.set()
        for server in servers:
            job = server.current
            if job is not None:  # a thread still busy after the wait: not finished
                batch.fail(job, INTERRUPTED, interrupted=True)
        while True:
            try:
                job = batch.work.get_nowait()
            except queue.Empty:
                break
            batch.fail(job, not_run_reason, interrupted=interrupted)
        for case, check, case_dir in pending:  # not queued at all (the checks did not finish)
            if case.name not in batch.results:
                batch.fail(Job(case, check, case_dir), not_run_reason, interrupted=interrupted)
        order = {case.name: index for index, case in enumerate(cases)}
        results = sorted(batch.results.values(), key=lambda r: order.get(r.name, len(order)))
        summary = {
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "counts": {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")},
            "interrupted": interrupted,
            "retries": retries,
            "wall_s": round(batch.now(), 3),
            "servers": [s.to_dict() for s in servers],
            "cases": [r.to_dict() for r in results],
        }
        (out_dir / BATCH_REPORT_NAME).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return results, interrupted


def run_batch_on_servers(
    args: argparse.Namespace, cases: Sequence[Case], out_dir: Path, stream: TextIO | None
) -> int:
    """``oir-edit batch`` with ``--server`` / ``--servers``: the exit code (1 if a case failed);
    Ctrl-C re-raises ``KeyboardInterrupt`` after the batch report is written (exit 130)."""
    from .cli import EXIT_FAILED, EXIT_OK
    from .runner import EditRunner

    retries = getattr(args, "retries", DEFAULT_RETRIES)
    if retries is None or retries < 0:
        raise SpecError(f"--retries {retries}: must be 0 or more (default {DEFAULT_RETRIES})")
    urls = server_urls(args)
    stop = threading.Event()
    servers = [
        Server(
            url,
            EditRunner(
                TrackingClient(url, stop),
                model_loader=args.model_loader,
                timeout=args.timeout,
                # several cases at once: one line per case, not interleaved node lines and bars
                stream=stream if len(urls) == 1 else None,
            ),
        )
        for url in urls
    ]
    results, interrupted = run_on_servers(cases, out_dir, servers, retries=retries, stream=stream, stop=stop)
    if stream is not None:
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        stream.write(
            f"batch: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed on "
            f"{sum(s.status != 'left out' for s in servers)} of {len(servers)} servers; summary: "
            f"{out_dir / BATCH_REPORT_NAME}\n"
        )
    if interrupted:
        raise KeyboardInterrupt
    return EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK
