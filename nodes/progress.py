"""Progress bars and interruption for engine stages inside ComfyUI."""

from __future__ import annotations

import comfy.model_management
import comfy.utils

from ..oir_core.sampling import LevelCallback


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
