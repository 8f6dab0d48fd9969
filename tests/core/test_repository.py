"""The repository's own test layout: the README's test command works from any clone.

- ``COMFYUI_PATH=… python -m pytest`` collects core and integration tests in one session, which
  pytest's default import mode allows only when no two test modules share a basename;
- the README clones into ``custom_nodes/oir-edit``, a folder name that is not a Python identifier,
  so pytest imports the repository root's ``__init__.py`` as a plain module: it must not fail there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"


def test_no_two_test_modules_share_a_basename() -> None:
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def test_the_suite_runs_from_a_clone_named_oir_edit(tmp_path: Path) -> None:
    clone = tmp_path / "oir-edit"
    ignore = shutil.ignore_patterns(
        ".git", ".venv*", "__pycache__", "*.egg-info", "test-artifacts", "node_modules", ".frontend-*"
    )
    shutil.copytree(REPO, clone, ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_PATH"}
    env.update(PYTHONDONTWRITEBYTECODE="1", OIR_FAIL_ON_SKIP="0")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_masks.py"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
    assert done.returncode == 0 and " passed" in summary and "error" not in summary, done.stdout[-3000:]
