"""Same workflow, same numbers: the split of rows into model calls ignores load and free memory.

ARCHITECTURE.md §5: a ``ComfyHost`` stage plans its rows per call from the model, the latent size,
the device's total memory and ``max_batch`` only. The same lockstep search stage (40 rows, every
pair's cond and uncond) is run (a) on a quiet machine, (b) while busy processes started here load
every core, and (c) on a simulated card (``simulated_gpu``: ComfyUI's own model management) where
another, full-size model was loaded first and holds most of the free memory: the candidates must be
bit-identical, and the split reported as planned. Before the static plan, (b) changed the split
through the wall-time call sizer and (c) through the free memory left after loading.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import comfy.model_management as mm
import pytest
import simulated_gpu
import tiny_models
import torch
from torch import Tensor

LATENT = (4, 16, 16)
ROWS = 40  # two pairs at T = 20: the first lockstep level


def search_stage(comfy_host: Any, oir_host: Any, model: Any, prompts: dict) -> tuple[Tensor, dict]:
    """One lockstep level of a two-pair search through ``ComfyHost``: ``([ROWS, *LATENT], split)``."""
    host = comfy_host.ComfyHost(
        model, prompts["original"], prompts["negative"], [prompts["guided_0"], prompts["guided_1"]],
        prompts["target"], 7.5,
    )
    sigmas = comfy_host.get_sigmas(model, "ddim_uniform", 20)
    x = torch.randn((ROWS, *LATENT), generator=torch.Generator().manual_seed(5)) * float(sigmas[0])
    ids = torch.arange(ROWS) % 2
    stage = oir_host.Stage("guided", sigmas, ROWS, LATENT, "search")

    def body(denoise: Any, max_batch: int | None) -> Tensor:
        step = max_batch or ROWS
        starts = range(0, ROWS, step)
        return torch.cat([denoise(x[i : i + step], sigmas[0], ids[i : i + step]) for i in starts])

    out = host.run(stage, body)
    return out, host.split_report()[-1]


@pytest.fixture
def forget_loaded_models() -> Iterator[None]:
    before = list(mm.current_loaded_models)
    yield
    for loaded in [m for m in mm.current_loaded_models if m not in before]:
        loaded.model.detach()
    mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m in before]


@pytest.fixture
def busy_cores() -> Iterator[int]:
    """One spinning process per core (and one more), for the duration of a test."""
    count = (os.cpu_count() or 1) + 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield count
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait(timeout=30)


def test_busy_cores_do_not_change_the_candidates(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, request: pytest.FixtureRequest
) -> None:
    quiet, quiet_split = search_stage(comfy_host, oir_host, tiny_unet, prompts)
    request.getfixturevalue("busy_cores")
    busy, busy_split = search_stage(comfy_host, oir_host, tiny_unet, prompts)
    assert torch.equal(busy, quiet)
    assert busy_split == quiet_split and quiet_split["as_planned"]


def test_another_model_holding_the_free_memory_does_not_change_the_candidates(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, forget_loaded_models: None
) -> None:
    model = tiny_unet.clone()
    other = tiny_models.build_full_size_unet("sd15", torch.float16, torch.device("cpu"))
    need_all = model.model.memory_required([2 * ROWS, *LATENT]) * 1.5
    # Room for the other model's weights, ours, ComfyUI's own reserve and a fraction of the level.
    capacity = other.model_size() + model.model_size() + mm.minimum_inference_memory() + need_all / 4
    with simulated_gpu.cpu_as_card(capacity) as card:
        quiet, quiet_split = search_stage(comfy_host, oir_host, model, prompts)
        model.detach()
        mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m.model is not model]
        mm.load_models_gpu([other])
        assert card() < need_all  # the other model holds most of the free memory
        crowded, crowded_split = search_stage(comfy_host, oir_host, model, prompts)
        other_left = other.loaded_size()
    assert torch.equal(crowded, quiet)
    assert crowded_split == quiet_split and quiet_split["as_planned"]
    # ComfyUI made the room by unloading (part of) the other model, never ours
    assert other_left < other.model_size()
