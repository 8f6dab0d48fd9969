"""What a run leaves in its output folder: ``report.json`` (written last, so its presence means the
case finished), ``error.txt``, the batch's ``batch_report.json`` and each case's sub-folder name.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPORT_NAME = "report.json"
ERROR_NAME = "error.txt"
BATCH_REPORT_NAME = "batch_report.json"


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


def is_finished(case_dir: Path) -> bool:
    """A case is finished when its ``report.json`` exists (written last, atomically)."""
    return (case_dir / REPORT_NAME).is_file()


def safe_case_dir(name: str) -> Path:
    """Relative output folder of a case: its name with ``/`` kept as sub-folders, odd characters ``_``."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "case" for part in name.split("/")]
    return Path(*parts)
