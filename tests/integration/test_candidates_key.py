"""The key that lets the search's strip find the scores of its own candidates (nodes/payloads.py):
both nodes send the same one, and it names the candidates' pictures and layout."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from oir_graph import run_graph


def test_the_scorer_sends_the_key_of_the_candidates_the_search_sent(
    nodes: dict[str, Any], tiny_unet: Any, tiny_clip: Any, tiny_vae: Any, scorer_folder: str
) -> None:
    out = run_graph(nodes, tiny_unet, tiny_clip, tiny_vae, scorer_folder, override="2")
    [key] = out["search_ui"]["oir_candidates"]
    assert isinstance(key, str) and len(key) == 24
    assert out["candidates"].key == key
    charts = out["score_ui"]["oir_scores"]
    assert len(charts) == 2 and [chart["candidates"] for chart in charts] == [key, key]
    assert charts[0]["override"] == 2  # an override changes the scores, not the candidates' key


def test_the_key_follows_the_pictures_and_the_layout(pack: ModuleType) -> None:
    import comfy_env

    payloads = comfy_env.import_pack_module("nodes.payloads")
    images = torch.randint(
        0, 256, (6, 8, 8, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    layouts = [{"pair": 0, "steps": [1, 2, 3]}, {"pair": 1, "steps": [1, 2, 3]}]
    key = payloads.candidates_key(images, layouts)
    assert payloads.candidates_key(images.clone(), [dict(layout) for layout in layouts]) == key
    one_pixel = images.clone()
    one_pixel[4, 7, 7, 2] ^= 1
    assert payloads.candidates_key(one_pixel, layouts) != key
    assert payloads.candidates_key(images, [layouts[0], {"pair": 1, "steps": [1, 2, 4]}]) != key
    assert payloads.candidates_key(images.reshape(6, 4, 16, 3), layouts) != key
