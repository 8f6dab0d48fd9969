"""What ``oir-edit`` shows while ComfyUI runs an edit: one line per node, live stage progress.

On a terminal the running node gets a ``tqdm`` bar fed by ComfyUI's ``progress`` events (step
counts) and the OIR stages' ``oir_progress`` events (``nodes/progress.py``: rows done of the
stage's total, level, the server's ETA). Elsewhere (a log file, CI) a stage line is printed at
most every ``quiet_interval`` seconds and when the stage finishes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["Progress", "describe_stage", "format_eta"]


def format_eta(seconds: float | None) -> str:
    """``"ETA 01:05"`` (``tqdm``'s interval format), ``"ETA ?"`` when unknown."""
    return "ETA ?" if seconds is None else f"ETA {tqdm.format_interval(seconds)}"


def describe_stage(data: Mapping[str, Any]) -> str:
    """One ``oir_progress`` event as text: stage, level, rows, ETA."""
    rows = f"rows {data.get('rows_done')}/{data.get('rows_total')}" if data.get("rows_total") else ""
    level = f"level {data.get('level')}/{data.get('levels_total')}"
    return ", ".join(p for p in (str(data.get("stage", "")), level, rows, format_eta(data.get("eta_s"))) if p)


class Progress:
    """Prints one line per node and live stage progress; records node timings.

    Called as ``progress(event_type, data)`` with this prompt's websocket events.

    Args:
        titles: ``{node id: title}`` of the queued workflow.
        stream: where to write (``None``: nothing is written, timings are still recorded).
        label: the case name, prefixed to every line of a batch.
        quiet_interval: seconds between stage lines when ``stream`` is not a terminal.
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
        self.bar: tqdm | None = None

    def _print(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _heading(self, node: str) -> str:
        return f"{self.label}{self.count:>2}/{len(self.titles)} {self.titles.get(node, node)}"

    def _bar(self, total: int, unit: str) -> tqdm:
        """The running node's bar (opened on its first progress event)."""
        if self.bar is None:
            assert self.current is not None
            self.bar = tqdm(
                total=total,
                desc=f"    {self.titles.get(self.current, self.current)}",
                unit=unit,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
            )
        return self.bar

    def _finish_current(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.current is not None:
            self.nodes[self.current]["seconds"] = round(time.monotonic() - self.started, 3)
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
            self.nodes[node] = {"title": self.titles.get(node, node), "cached": False, "seconds": None}
            self._print(self._heading(node))
        elif kind == "progress" and self.live and self.current is not None:
            bar = self._bar(int(data.get("max") or 0), "step")
            bar.total = int(data.get("max") or 0)
            bar.update(int(data.get("value") or 0) - bar.n)
        elif kind == "oir_progress" and self.current is not None:
            if self.live:
                bar = self._bar(int(data.get("rows_total") or 0), "row")
                bar.total = int(data.get("rows_total") or 0)
                bar.set_postfix_str(
                    f"{data.get('stage', '')} level {data.get('level')}/{data.get('levels_total')}",
                    refresh=False,
                )
                bar.update(int(data.get("rows_done") or 0) - bar.n)
                return
            now = time.monotonic()
            finished = data.get("rows_total") and data.get("rows_done") == data.get("rows_total")
            if finished or now - self._last_line >= self.quiet_interval:
                self._last_line = now
                self._print(f"    {describe_stage(data)}")
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self._finish_current()
