"""Progress bars, live stage progress and interruption for engine stages inside ComfyUI."""

from __future__ import annotations

import time
from typing import Any

import comfy.model_management
import comfy.utils

from ..oir_core.host import Stage
from ..oir_core.sampling import LevelCallback

PROGRESS_EVENT = "oir_progress"
"""The websocket event :class:`StageProgress` sends (ARCHITECTURE.md §5); ``oir-edit`` prints it."""

MIN_EVENT_INTERVAL_S = 0.25
"""Events of one stage are sent at most this often (the last one always)."""


def level_progress() -> LevelCallback:
    """An ``on_level(done, total)`` callback that drives ComfyUI's progress bar and honours Cancel.

    The bar is created at the first report, when the engine knows the stage's total.
    """
    state: dict[str, comfy.utils.ProgressBar] = {}

    def on_level(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar = state.get("bar")
        if bar is None or bar.total != total:
            bar = state["bar"] = comfy.utils.ProgressBar(total)
        bar.update_absolute(done, total)

    return on_level


def _send(data: dict[str, Any]) -> None:
    """Send ``data`` as a :data:`PROGRESS_EVENT` to the client that queued the prompt (no server: no-op)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is not None:
        instance.send_sync(PROGRESS_EVENT, data, getattr(instance, "client_id", None))


class StageProgress:
    """Live progress of one engine stage: the level being walked, rows done of the total, ETA.

    The host calls :meth:`after_call` after every model call with the call's rows and noise level;
    a new level starts whenever the level changes (a lockstep walk visits each level once, in one
    call or in chunks). The ETA assumes the remaining rows run at the stage's rate so far. Events
    carry the executing prompt and node (``comfy_execution``'s context), so a client can tell the
    stages of different nodes apart.
    """

    def __init__(self, stage: Stage, send: Any = _send) -> None:
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        self.prompt_id = None if context is None else context.prompt_id
        self.node = None if context is None else context.node_id
        self.label = stage.label or stage.role
        self.levels_total = max(0, int(stage.sigmas.numel()) - 1)
        self.rows_total = int(stage.total_rows)
        self.level = 0
        self.rows_done = 0
        self._level: float | None = None
        self._started = time.monotonic()
        self._last_sent = 0.0
        self._send = send

    def snapshot(self) -> dict[str, Any]:
        elapsed = time.monotonic() - self._started
        eta = None
        if self.rows_total and self.rows_done:
            eta = elapsed * max(0, self.rows_total - self.rows_done) / self.rows_done
        return {
            "prompt_id": self.prompt_id,
            "node": self.node,
            "stage": self.label,
            "level": self.level,
            "levels_total": self.levels_total,
            "rows_done": self.rows_done,
            "rows_total": self.rows_total,
            "elapsed_s": round(elapsed, 3),
            "eta_s": None if eta is None else round(eta, 1),
        }

    def after_call(self, rows: int, sigma: float) -> None:
        if self._level is None or sigma != self._level:
            self._level = sigma
            self.level = min(self.levels_total, self.level + 1)
        self.rows_done += rows
        now = time.monotonic()
        last = self.rows_total and self.rows_done >= self.rows_total
        if last or now - self._last_sent >= MIN_EVENT_INTERVAL_S:
            self._last_sent = now
            self._send(self.snapshot())
