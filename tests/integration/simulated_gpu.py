"""A GPU of a chosen size, simulated inside ComfyUI's own model management (no GPU needed).

Used by ``test_gpu_memory_path.py`` and ``benchmarks/bench_memory.py``: a ``ComfyHost`` stage runs
through ``CFGGuider.sample`` → ``prepare_sampling`` → ``load_models_gpu`` →
``ModelPatcher.partially_load``, the path a user's graph takes, with the CPU standing in for the
card: ``is_device_cpu`` answers False (so ComfyUI takes its GPU branch, in ``NORMAL_VRAM`` mode) and
``get_free_memory`` reports the card's capacity minus the weights ComfyUI has loaded on it
(``get_total_memory``: the capacity). Build
the model with ``tiny_models.build_full_size_unet(..., seed=None)``: its weights are never written,
so a full-size SDXL costs no RAM.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import comfy.model_management as mm
import torch


class SimulatedCard:
    """``get_free_memory`` of a card with ``capacity`` bytes holding what ComfyUI loaded on ``device``."""

    def __init__(self, capacity: float, device: torch.device) -> None:
        self.capacity = capacity
        self.device = device

    def used(self) -> int:
        return sum(
            loaded.model.loaded_size()
            for loaded in mm.current_loaded_models
            if loaded.model is not None and loaded.device == self.device
        )

    def __call__(self, dev: Any = None, torch_free_too: bool = False) -> Any:
        free = self.capacity - self.used()
        return (free, free) if torch_free_too else free


@contextlib.contextmanager
def cpu_as_card(capacity: float) -> Iterator[SimulatedCard]:
    """While active, ComfyUI treats the CPU as a ``capacity``-byte GPU (restored on exit)."""
    card = SimulatedCard(capacity, torch.device("cpu"))
    saved = (mm.is_device_cpu, mm.vram_state, mm.get_free_memory, mm.get_total_memory)
    mm.is_device_cpu = lambda device: False
    mm.vram_state = mm.VRAMState.NORMAL_VRAM
    mm.get_free_memory = card
    mm.get_total_memory = lambda dev=None, torch_total_too=False: (
        (capacity, capacity) if torch_total_too else capacity
    )
    try:
        yield card
    finally:
        mm.is_device_cpu, mm.vram_state, mm.get_free_memory, mm.get_total_memory = saved


@dataclass
class StageOnCard:
    """What one stage saw: ComfyUI's reservation, the loaded fraction and the chunk."""

    asked: list[tuple[float, float | None]]
    """``(memory_required, minimum_memory_required)`` of each ``load_models_gpu`` call."""
    loaded_fraction: float
    """Loaded weight bytes / model bytes while the engine's body ran."""
    chunk: int
    """Rows per model call the host chose."""
    free_after_load: float
    """Free bytes on the card while the body ran (what the chunk was sized from)."""


def run_stage_on_card(host: Any, stage: Any, patcher: Any, capacity: float) -> StageOnCard:
    """Run ``stage`` through ``host`` (a ``ComfyHost`` on ``patcher``) on a simulated card.

    The body makes no model call (the weights hold no values); it records the state every model
    call of the stage would see. The model is unloaded afterwards.
    """
    asked: list[tuple[float, float | None]] = []
    real_load = mm.load_models_gpu

    def load_spy(models: list, memory_required: float = 0, **kwargs: Any) -> Any:
        asked.append((memory_required, kwargs.get("minimum_memory_required")))
        return real_load(models, memory_required=memory_required, **kwargs)

    seen: dict[str, Any] = {}
    with cpu_as_card(capacity) as card:
        mm.load_models_gpu = load_spy
        try:

            def body(denoise: Any, chunk: int | None) -> None:
                seen.update(chunk=chunk, loaded=patcher.loaded_size() / patcher.model_size(), free=card())

            host.run(stage, body)
        finally:
            mm.load_models_gpu = real_load
            patcher.detach()
            mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.model is not patcher]
    return StageOnCard(asked, seen["loaded"], seen["chunk"], seen["free"])
