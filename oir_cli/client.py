"""A ComfyUI server's HTTP and websocket API, as ``oir-edit`` uses it.

HTTP through ``requests`` (one session, JSON and multipart uploads), ComfyUI's ``/ws`` event stream
through ``websocket-client``. Every answer is checked against :mod:`oir_cli.answers` before it is
used. Errors are one line for the user, and their type says what happened (``cli.exit_code``):
:class:`HeadlessError` refuses the user's input (a refused workflow names its first node error);
:class:`ServerFailure` is the server failing the edit: :class:`ServerUnreachable` (no answer),
:class:`HTTPStatusError` (an error status), :class:`BadAnswer` (an answer that is not ComfyUI's);
:class:`ExecutionFailed` is ComfyUI reporting a failure while it ran the workflow.

A slow answer, a dropped connection or a 502/503/504 is retried with exponential backoff by
urllib3's ``Retry`` (:func:`retry_policy`), so a busy server does not end a batch; only when every
try failed is the server unreachable. Queuing is the one request never re-sent blindly: the client
names the prompt itself (``prompt_id``), asks the server whether it has it after a lost answer,
and can always cancel it by that name.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
import websocket
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import answers
from .answers import AnswerInvalid
from .checks import UPLOAD_SUBFOLDER
from .filling import describe_nodes

__all__ = [
    "OIR_NODE_IDS",
    "BadAnswer",
    "ComfyClient",
    "EventStream",
    "ExecutionFailed",
    "HTTPStatusError",
    "HeadlessError",
    "InputRefusedByNode",
    "ServerFailure",
    "ServerUnreachable",
    "describe_refusal",
    "one_line",
]

OIR_NODE_IDS: tuple[str, ...] = (
    "OIRLoadCLIPScorer",
    "OIREditPair",
    "OIRGuidedPromptBuilder",
    "OIRDDIMInversion",
    "OIRParallelStepSearch",
    "OIRMaskMetricScorer",
    "OIRObjectReassembly",
    "OIREditRegionScore",
)
"""Node ids of the pack (``nodes/__init__.py``'s ``NODES``) a server must know to run an edit (all but
OIR Phrase Mask, which oir-edit's edits do not use: it takes painted masks)."""


class HeadlessError(RuntimeError):
    """A one-line, user-facing failure of the headless run; this base class itself is a refusal of
    the user's input (names the server does not offer, no OIR nodes, a refused workflow: exit 2)."""


class ServerFailure(HeadlessError):
    """The server failed the edit although the input was fine (exit 1)."""


class ServerUnreachable(ServerFailure):
    """No ComfyUI answers at the URL (refused, reset, timed out)."""


class BadAnswer(ServerFailure):
    """The server answered something ComfyUI does not send (not JSON, a wrong shape, not an image)."""

    def __init__(self, server: str, endpoint: str, problem: str) -> None:
        super().__init__(
            f"ComfyUI at {server} gave an unexpected answer to {endpoint}: {one_line(problem, 240)}"
        )
        self.endpoint = endpoint


class ExecutionFailed(HeadlessError):
    """ComfyUI ran the workflow and reported an error; ``details`` holds the traceback."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class InputRefusedByNode(ExecutionFailed):
    """A node refused an input (``OIRInputError``) before its heavy work: bad input, exit 2."""


class HTTPStatusError(ServerFailure):
    """An HTTP error answer (status and body kept for callers that parse it)."""

    def __init__(self, status: int, path: str, body: str, server: str = "") -> None:
        where = f"ComfyUI at {server}" if server else "ComfyUI"
        super().__init__(f"{where} answered {status} to {path}: {one_line(body, 200)}")
        self.status = status
        self.body = body


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe_refusal(refusal: answers.Refusal | answers.Queued, workflow: Mapping[str, Any]) -> str:
    """One line from a checked ``/prompt`` answer: the first node error, or the top-level error."""
    for node_id, entry in refusal.node_errors.items():
        for error in entry.errors:
            title = describe_nodes(workflow).get(str(node_id), entry.class_type)
            return one_line(f"node {node_id} ({title}): {error.message}: {error.details or error.message}")
    error = getattr(refusal, "error", None)
    if isinstance(error, answers.PromptError):
        return one_line(f"{error.message} {error.details}".strip() or error.type or "no reason given")
    return one_line(str(error or "no reason given"))


RETRIES = 5
"""Retries of one request after its first try (slow answer, dropped connection, 502/503/504)."""

BACKOFF_S = 0.5
"""First wait between tries; it doubles after every try, up to :data:`BACKOFF_MAX_S`."""

BACKOFF_MAX_S = 8.0


def retry_policy(retries: int = RETRIES, *, resend: bool = True) -> Retry:
    """urllib3's ``Retry`` for ComfyUI's API: connection errors, read errors (a timeout, a dropped
    connection) and 502/503/504 answers are tried again after ``BACKOFF_S * 2**n`` seconds (at most
    :data:`BACKOFF_MAX_S`), ``retries`` times. The time one request can take is thereby bounded:
    ``(retries + 1) * timeout`` plus at most 16 s of waits for the defaults.

    ``resend=False``: only failures to connect are retried (the request never reached the server),
    for requests that must not arrive twice (``POST /prompt``).
    """
    return Retry(
        total=retries,
        connect=retries,
        read=retries if resend else 0,
        status=retries if resend else 0,
        other=retries if resend else 0,
        allowed_methods=None,  # every request oir-edit re-sends is idempotent (see ComfyClient)
        status_forcelist=(502, 503, 504),
        backoff_factor=BACKOFF_S,
        backoff_max=BACKOFF_MAX_S,
        raise_on_status=False,  # the last answer's status becomes HTTPStatusError
    )


def _session(retry: Retry) -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _reason(error: requests.RequestException) -> str:
    """The cause of a failed request in a few words (``requests`` nests it inside pool messages)."""
    if isinstance(error, requests.Timeout) or "timed out" in str(error):
        return f"no answer within the timeout: {type(error).__name__}"
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", str(error))
    return errno.group(0).strip() if errno else one_line(str(error), 200)


class EventStream:
    """ComfyUI's ``/ws`` event stream for one client id (text messages checked as events).

    Args:
        url: the ``ws://.../ws?clientId=...`` address.
        timeout: seconds to open the connection.
        server: the server's HTTP address, named in :class:`BadAnswer` messages.
    """

    def __init__(self, url: str, timeout: float = 10.0, server: str = "") -> None:
        self.server = server or url
        self._socket = websocket.create_connection(url, timeout=timeout)

    def receive(self, timeout: float) -> answers.Event | None:
        """The next event, or ``None`` after ``timeout`` seconds or for a binary message (previews).

        Raises:
            ConnectionError: the server closed the connection.
            BadAnswer: a text message that is not a ComfyUI event (``{"type", "data"}`` in JSON).
        """
        self._socket.settimeout(max(timeout, 0.001))
        try:
            opcode, payload = self._socket.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, OSError) as error:
            raise ConnectionError(f"websocket closed by the server ({error})") from None
        except websocket.WebSocketException as error:  # a broken frame: the protocol itself is wrong
            raise BadAnswer(self.server, "/ws", f"a broken websocket frame ({error})") from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise ConnectionError("websocket closed by the server")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            return None
        try:
            return answers.event(payload)
        except AnswerInvalid as error:
            raise BadAnswer(self.server, "/ws", str(error)) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._socket.close()


class ComfyClient:
    """A ComfyUI server's HTTP API.

    Every request but ``POST /prompt`` is idempotent (uploads are named by their content, a cancel
    names its prompt) and is retried by :func:`retry_policy`; see :meth:`queue` for the exception.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8188``.
        timeout: seconds for one try of one HTTP request (waiting for a whole edit is :meth:`wait`'s job).
        retries: tries after the first one (:func:`retry_policy`).
    """

    def __init__(self, url: str, timeout: float = 30.0, retries: int = RETRIES) -> None:
        if "://" not in url:
            url = f"http://{url}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = _session(retry_policy(retries))
        self._send_once = _session(retry_policy(retries, resend=False))
        self._object_info: dict[str, dict[str, Any] | None] = {}

    # plain requests ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, resend: bool = True, **kwargs: Any) -> bytes:
        """One request (``kwargs`` as ``requests`` takes them), retried; the answer's body.

        ``resend=False``: retried only while it cannot be delivered (:func:`retry_policy`).

        Raises:
            ServerUnreachable: no answer after every try.
            HTTPStatusError: the server answered with an error status.
        """
        session = self.session if resend else self._send_once
        try:
            response = session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise ServerUnreachable(f"cannot reach ComfyUI at {self.url} ({_reason(error)})") from None
        if response.status_code >= 400:
            raise HTTPStatusError(response.status_code, path, response.text, self.url)
        return response.content

    def checked(self, model: Any, body: bytes, endpoint: str) -> Any:
        """``body`` as ``model`` (:func:`oir_cli.answers.parse`); :class:`BadAnswer` names ``endpoint``."""
        try:
            return answers.parse(model, body)
        except AnswerInvalid as error:
            raise BadAnswer(self.url, endpoint, str(error)) from None

    def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """Any JSON answer, unchecked (tests and tools; the edit's own reads are checked)."""
        body = self.request("GET", path, params=params)
        try:
            return json.loads(body)
        except ValueError:
            raise BadAnswer(self.url, f"GET {path}", "the body is not JSON") from None

    def post_json(self, path: str, payload: Any, *, resend: bool = True) -> Any:
        """``POST`` ``payload`` as JSON; the answer as JSON (``None`` when empty), unchecked."""
        body = self.request("POST", path, json=payload, resend=resend)
        try:
            return json.loads(body) if body.strip() else None
        except ValueError:
            raise BadAnswer(self.url, f"POST {path}", "the body is not JSON") from None

    # ComfyUI routes ------------------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        """``/system_stats``: ComfyUI, Python and PyTorch versions, devices (checked)."""
        stats = self.checked(answers.SystemStats, self.request("GET", "/system_stats"), "GET /system_stats")
        return stats.model_dump()

    def object_info(self, class_type: str) -> dict[str, Any] | None:
        """``/object_info/<class>`` (checked, cached), or ``None`` when the server has no such node."""
        if class_type not in self._object_info:
            path = f"/object_info/{requests.utils.quote(class_type, safe='')}"
            info = self.checked(answers.ObjectInfo, self.request("GET", path), f"GET {path}")
            node = info.get(class_type)
            self._object_info[class_type] = None if node is None else node.model_dump()
        return self._object_info[class_type]

    def upload_image(self, source: Path | bytes, name: str, subfolder: str = UPLOAD_SUBFOLDER) -> str:
        """Upload a file (or its bytes) as ``<subfolder>/<name>`` into the input folder; returns the
        LoadImage value."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        body = self.request(
            "POST",
            "/upload/image",
            data={"type": "input", "subfolder": subfolder, "overwrite": "true"},
            files={"image": (name, data, "application/octet-stream")},
        )
        answer = self.checked(answers.Upload, body, "POST /upload/image")
        return f"{answer.subfolder}/{answer.name}" if answer.subfolder else answer.name

    def queue(self, workflow: Mapping[str, Any], client_id: str, prompt_id: str | None = None) -> str:
        """``POST /prompt``; returns the prompt id or raises one line built from ``node_errors``.

        ComfyUI queues a prompt as long as *one* output node validates and drops the branches whose
        nodes were refused (listing them in ``node_errors``): an OIR edit without its reassembly is
        no edit, so such a partial prompt is taken off the queue again and refused as a whole. A 400
        answer is ComfyUI's validation refusing the input (:class:`HeadlessError`, exit 2); any
        other error status is the server failing (:class:`HTTPStatusError`, exit 1).


        ``prompt_id`` (a UUID; a new one by default) names the prompt before it is sent, so the
        caller can cancel it whatever happens. The request is not re-sent after it may have arrived
        (that would queue the edit twice): when its answer is lost, the server's queue and history
        say whether it has the prompt.
        """
        proposed = prompt_id or str(uuid.uuid4())
        payload = {"prompt": workflow, "client_id": client_id, "prompt_id": proposed}
        try:
            body = self.request("POST", "/prompt", json=payload, resend=False)
        except HTTPStatusError as error:
            if error.status != 400:
                raise
            refusal = self.checked(answers.Refusal, error.body.encode("utf-8"), "POST /prompt (400)")
            raise HeadlessError(
                f"ComfyUI refused the workflow: {describe_refusal(refusal, workflow)}"
            ) from None
        except ServerUnreachable:
            if self.has_prompt(proposed):
                return proposed
            raise
        answer = self.checked(answers.Queued, body, "POST /prompt")
        if answer.node_errors:
            self.interrupt(answer.prompt_id)
            raise HeadlessError(f"ComfyUI refused the workflow: {describe_refusal(answer, workflow)}")
        return answer.prompt_id

    def has_prompt(self, prompt_id: str) -> bool:
        """Whether the server has ``prompt_id`` queued, running or finished (``/queue``, ``/history``)."""
        queue = self.get_json("/queue")
        if not isinstance(queue, dict):
            raise BadAnswer(self.url, "GET /queue", "the answer is not a JSON object")
        for item in (queue.get("queue_running") or []) + (queue.get("queue_pending") or []):
            if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
                return True
        return self.history(prompt_id) is not None

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The checked ``/history/<id>`` entry, or ``None`` while the prompt has not finished."""
        path = f"/history/{prompt_id}"
        entry = self.checked(answers.History, self.request("GET", path), f"GET {path}").get(prompt_id)
        return None if entry is None else entry.model_dump()

    def view(self, ref: Mapping[str, str]) -> bytes:
        """An output/temp image (``{"filename", "subfolder", "type"}`` from the history), checked to
        be an image."""
        params = {
            "filename": ref["filename"],
            "subfolder": ref.get("subfolder", ""),
            "type": ref.get("type", "output"),
        }
        body = self.request("GET", "/view", params=params)
        try:
            return answers.picture(body)
        except AnswerInvalid as error:
            raise BadAnswer(self.url, f"GET /view ({ref['filename']})", str(error)) from None

    def interrupt(self, prompt_id: str) -> None:
        """Drop ``prompt_id`` from the queue and interrupt it if it runs (best effort: answers unread)."""
        with contextlib.suppress(HeadlessError):
            self.request("POST", "/queue", json={"delete": [prompt_id]})
        with contextlib.suppress(HeadlessError):
            self.request("POST", "/interrupt", json={"prompt_id": prompt_id})

    def events(self, client_id: str, timeout: float = 10.0) -> EventStream | None:
        """The ``/ws`` event stream for ``client_id``, or ``None`` if it cannot be opened."""
        scheme = "wss" if self.url.startswith("https") else "ws"
        url = f"{scheme}://{self.url.split('://', 1)[1]}/ws?clientId={client_id}"
        try:
            return EventStream(url, timeout, server=self.url)
        except (OSError, websocket.WebSocketException):
            return None

    def wait(
        self,
        prompt_id: str,
        stream: EventStream | None,
        timeout: float,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        poll_every: float = 2.0,
    ) -> dict[str, Any]:
        """Block until ``prompt_id`` finished; returns its history entry.

        Events for this prompt go to ``on_event(type, data)`` as they arrive (with a stream), their
        ``data`` checked (:data:`oir_cli.answers.EVENT_DATA`); ``/history`` is polled every
        ``poll_every`` seconds either way, so a lost message or a closed socket only delays the
        answer. Raises :class:`ExecutionFailed` after ``timeout`` seconds (the prompt is then removed
        from the queue and interrupted), :class:`BadAnswer` for an event that is not ComfyUI's.
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
                raise ExecutionFailed(f"the edit did not finish within {timeout:g} s (raise --timeout)")
            if stream is None:
                time.sleep(min(0.25, max(0.0, deadline - now)))
                continue
            try:
                event = stream.receive(min(0.5, max(0.01, next_poll - time.monotonic())))
            except ConnectionError:
                stream = None  # the server closed the socket: keep polling
                continue
            if event is None:
                continue
            try:
                data = answers.event_data(event)
            except AnswerInvalid as error:
                raise BadAnswer(self.url, "/ws", str(error)) from None
            if data is None or data.get("prompt_id") != prompt_id:
                continue  # queue status, other packs' events and other clients' prompts
            if on_event is not None:
                on_event(event.type, data)
            finished = event.type in ("execution_success", "execution_error", "execution_interrupted")
            if finished or (event.type == "executing" and data.get("node") is None):
                next_poll = 0.0  # fetch the history now
