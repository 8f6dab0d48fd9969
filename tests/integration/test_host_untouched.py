"""The suite never writes into the ComfyUI checkout it tests against.

Runs after every other test (``runs_last``): stops the shared server, then compares every file of
the checkout with the fingerprint taken before ComfyUI was first imported. A preview image in
``temp/``, a ``__pycache__``, a user settings file or a database would all show up here.
"""

from __future__ import annotations

from typing import Any

import comfy_env
import comfy_server
import pytest


@pytest.mark.runs_last
def test_host_checkout_is_byte_for_byte_unchanged(host_before: tuple[Any, dict[str, str]]) -> None:
    path, before = host_before
    comfy_server.stop_shared_server()
    after = comfy_env.host_fingerprint(path)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(name for name in set(before) & set(after) if before[name] != after[name])
    assert before, "no fingerprint was taken before the suite"
    assert not (added or removed or changed), (
        f"the suite wrote into {path}: added {added[:10]}, removed {removed[:10]}, changed {changed[:10]}"
    )
