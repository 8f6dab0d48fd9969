"""The real-GPU memory path, run through ComfyUI's own model management with simulated free memory.

No GPU is needed: the full-size models are built without touching their weights, and the free
memory a GPU would report is simulated from what ComfyUI itself has loaded.

- :func:`test_model_fully_loaded_whenever_weights_plus_one_chunk_fit` runs ``ComfyHost.run`` on a
  full-size SD1.5 (512²) and SDXL (1024²) ``BaseModel`` on a simulated card
  (``simulated_gpu.run_stage_on_card``: ``CFGGuider.sample`` → ``prepare_sampling`` →
  ``load_models_gpu`` → ``ModelPatcher.partially_load``, the path a user's graph takes).
- :func:`test_scorer_is_offloaded_when_the_diffusion_model_needs_room` puts the scorer CLIP and a
  full-size SDXL on the ``meta`` device, where ComfyUI's ``free_memory`` eviction runs as on a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comfy.model_management as mm
import comfy_env
import comfy_server
import pytest
import simulated_gpu
import tiny_models
import torch

GIB = 1024**3

FAMILIES: dict[str, dict[str, Any]] = {
    "sd15-512": {"family": "sd15", "latent": 64, "card_gib": 8},
    "sdxl-1024": {"family": "sdxl", "latent": 128, "card_gib": 12},
}
"""Each family at its native resolution, with a consumer card it is commonly run on."""

STAGE_ROWS = 100
"""Two pairs at T = 50: the first lockstep level holds every candidate."""


def unwritten_model(family: str, device: torch.device) -> Any:
    """A full-size fp16 UNet whose weights are never written (no RAM on CPU, no storage on meta)."""
    return tiny_models.build_full_size_unet(family, torch.float16, device)


@pytest.fixture
def forget_loaded_models() -> Iterator[None]:
    """Drop what a test loads from ComfyUI's loaded-model list, leaving earlier entries alone."""
    before = list(mm.current_loaded_models)
    yield
    mm.current_loaded_models[:] = [m for m in mm.current_loaded_models if m in before]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_fully_loaded_whenever_weights_plus_one_chunk_fit(
    comfy_host: Any, oir_host: Any, forget_loaded_models: None, family: str
) -> None:
    patcher = unwritten_model(FAMILIES[family]["family"], torch.device("cpu"))
    weights = patcher.model_size()
    latent = FAMILIES[family]["latent"]
    shape = (4, latent, latent)
    memory_required = patcher.model.memory_required

    def need(rows: int) -> float:
        """What StageSampler requires free for a chunk of ``rows`` candidates with CFG."""
        return memory_required([2 * rows, *shape]) * comfy_host.MEMORY_SAFETY_FACTOR

    one_chunk = need(1) + mm.extra_reserved_memory()
    cond = tiny_models.full_size_conditioning(FAMILIES[family]["family"])
    stage = oir_host.Stage("guided", torch.linspace(14.6, 0.03, 51), STAGE_ROWS, shape)

    host_plan: list[dict] = []

    def run(capacity: float, max_batch: int | None) -> Any:
        host = comfy_host.ComfyHost(patcher, cond, None, [cond, cond], cond, cfg=7.5, max_batch=max_batch)
        seen = simulated_gpu.run_stage_on_card(host, stage, patcher, capacity)
        host_plan.extend(host.split_report())
        return seen

    card_bytes = FAMILIES[family]["card_gib"] * GIB
    capacities = [weights + one_chunk * f for f in (1.0, 1.25, 2.0, 4.0)] + [card_bytes]
    for capacity in capacities:
        seen = run(capacity, None)
        # ComfyUI was asked to reserve one row (cond + uncond), not the stage's 100 rows.
        assert seen.asked == [(memory_required([2, *shape]), memory_required([1, *shape]))]
        assert seen.loaded_fraction == 1.0, f"{family}: {capacity / GIB:.2f} GiB: {seen.loaded_fraction:.2f}"
        chunk = seen.chunk
        assert 1 <= chunk <= STAGE_ROWS
        # The chunk is planned from the card's total memory less the weights and ComfyUI's fixed
        # reserve (never the free memory), capped by the work bound that keeps a call short.
        budget = capacity - weights - mm.extra_reserved_memory()
        memory_rows = max([k for k in range(1, STAGE_ROWS + 1) if need(k) < budget] or [1])
        plan = host_plan[-1]
        assert plan["memory_rows"] == memory_rows and plan["as_planned"]
        assert chunk == min(memory_rows, plan["latency_rows"])
        assert need(chunk) < seen.free_after_load or chunk == 1
    # The check has teeth: asking ComfyUI to reserve for the whole stage (a user max_batch of 100)
    # leaves too little for the weights on the smallest card that fits weights plus one chunk.
    assert run(capacities[0], STAGE_ROWS).loaded_fraction < 1.0


def test_scorer_is_offloaded_when_the_diffusion_model_needs_room(
    monkeypatch: pytest.MonkeyPatch,
    pack: Any,
    forget_loaded_models: None,
    tmp_path: Path,
) -> None:
    scoring = comfy_env.import_pack_module("nodes.scoring_nodes")
    tiny_clip = comfy_server._tiny_clip()
    meta = torch.device("meta")
    monkeypatch.setattr(mm, "text_encoder_offload_device", lambda: meta)
    scorer_files = tiny_clip.make_transformers_clip(tmp_path / "clip", image_size=32, patch_size=16, seed=1)
    clip = scoring.managed_clip(str(scorer_files), "transformers", meta, torch.float32)
    sdxl = unwritten_model("sdxl", meta)
    scorer_bytes = sum(p.numel() * p.element_size() for p in clip.model.parameters())

    def loaded_models() -> list[Any]:
        return [m.model for m in mm.current_loaded_models if m.model is not None and m.device == meta]

    def scorer_loaded_bytes() -> int:
        return sum(m.loaded_size() for m in loaded_models() if isinstance(m.model, scoring.ScorerWeights))

    # What load_models_gpu frees room for: the weights (x 1.1) and the inference reservation.
    sdxl_need = sdxl.model_size() * 1.1 + max(
        mm.minimum_inference_memory(), 2 * GIB + mm.extra_reserved_memory()
    )
    for capacity, offloaded in (
        (sdxl_need + scorer_bytes + GIB, False),
        (sdxl_need + scorer_bytes / 2, True),
    ):
        monkeypatch.setattr(mm, "get_free_memory", simulated_gpu.SimulatedCard(capacity, meta))
        assert clip.ready() == meta and scorer_loaded_bytes() == scorer_bytes
        mm.load_models_gpu([sdxl], memory_required=2 * GIB, minimum_memory_required=1 * GIB)
        assert sdxl.loaded_size() == sdxl.model_size()
        if offloaded:  # ComfyUI moved (at least) the missing half of the scorer off the card
            assert scorer_loaded_bytes() <= scorer_bytes / 2, f"capacity {capacity / GIB:.1f} GiB"
        else:
            assert scorer_loaded_bytes() == scorer_bytes, f"capacity {capacity / GIB:.1f} GiB"
        # The next use loads it back fully (a plain torch module cannot run partially loaded).
        assert clip.ready() == meta and scorer_loaded_bytes() == scorer_bytes
        for loaded in list(mm.current_loaded_models):
            if loaded.device == meta:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
