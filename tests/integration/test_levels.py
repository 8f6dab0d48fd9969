"""Steps and levels: when ComfyUI's schedule gives another number of levels than the typed ``steps``,
OIR DDIM Inversion says so once and every later message counts levels (ARCHITECTURE.md §4.1)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from oir_graph import image_pixels, run_node


def _inputs(model: Any, prompts: dict[str, list], vae: Any, steps: int) -> dict[str, Any]:
    latent = {"samples": vae.encode(image_pixels())}
    return {
        "model": model,
        "latent": latent,
        "original": prompts["original"],
        "steps": steps,
        "scheduler": "ddim_uniform",
        "convention": "auto",
    }


def _comfy_levels(model: Any, scheduler: str, steps: int) -> int:
    """The number of levels ComfyUI's own scheduler function makes (sigmas minus the final one)."""
    import comfy.samplers

    return (
        len(comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)) - 1
    )


def test_steps_6_with_ddim_uniform_is_said_once_as_7_levels(
    nodes: dict[str, Any],
    tiny_unet: Any,
    prompts: dict[str, list],
    tiny_vae: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    count = len(tiny_unet.get_model_object("model_sampling").sigmas)
    levels = _comfy_levels(tiny_unet, "ddim_uniform", 6)
    assert (count, levels) == (1000, 7)  # 1000 // 6 = 166: levels 1, 167, ..., 997, and 0
    with caplog.at_level(logging.INFO):
        (trajectory, _), ui = run_node(nodes["OIRDDIMInversion"], **_inputs(tiny_unet, prompts, tiny_vae, 6))
    assert trajectory.steps == levels and trajectory.latents.shape[0] == levels + 1
    [summary] = ui["oir_levels"]
    assert (summary["steps"], summary["levels"], summary["scheduler"]) == (6, 7, "ddim_uniform")
    note = summary["note"]
    assert note.startswith("steps = 6 gave 7 denoising levels with the ddim_uniform schedule (ComfyUI's ")
    assert "strides of 1000 // 6 = 166, which lands on 7 of them" in note
    assert "such as 5 or 8," in note and "numbered 1-7" in note
    said = [r.getMessage() for r in caplog.records if "denoising levels" in r.getMessage()]
    assert said == [f"OIR DDIM Inversion: {note}"]


def test_steps_that_ddim_uniform_keeps_say_nothing(
    nodes: dict[str, Any], tiny_unet: Any, prompts: dict[str, list], tiny_vae: Any
) -> None:
    assert _comfy_levels(tiny_unet, "ddim_uniform", 5) == 5
    (trajectory, _), ui = run_node(nodes["OIRDDIMInversion"], **_inputs(tiny_unet, prompts, tiny_vae, 5))
    assert trajectory.steps == 5 and ui["oir_levels"] == [
        {"steps": 5, "levels": 5, "scheduler": "ddim_uniform", "note": None}
    ]


def test_later_messages_count_levels_not_the_typed_steps(
    nodes: dict[str, Any], tiny_unet: Any, prompts: dict[str, list], tiny_vae: Any
) -> None:
    """A reassembly step of 7 on the 7-level inversion (steps = 6) is refused in levels, saying where 7
    comes from; an override of 8 on its candidates too."""
    from comfy_api.latest import io

    from oir_core.errors import OIRInputError
    from oir_core.steps import parse_step_overrides

    # the pack runs under its own package name here, so its error class is not oir_core's
    node = nodes["OIRDDIMInversion"]
    prompt = {
        "7": {"class_type": "OIRDDIMInversion", "inputs": {}},
        "12": {
            "class_type": "OIRObjectReassembly",
            "inputs": {"trajectory": ["7", 0], "reassembly_step": 7, "reinversion_steps": 0},
        },
    }
    saved = node.__dict__.get("hidden", None)
    node.hidden = io.HiddenHolder.from_dict({io.Hidden.prompt: prompt, io.Hidden.unique_id: "7"})
    try:
        with pytest.raises(Exception, match="reassembly_step") as refused:
            run_node(node, **_inputs(tiny_unet, prompts, tiny_vae, 6))
    finally:
        node.hidden = saved
    message = str(refused.value)
    assert "must lie in 0..6 for the inversion's 7 levels" in message
    assert "(steps = 6 gave 7 levels with the ddim_uniform schedule)" in message
    assert "-step" not in message
    with pytest.raises(OIRInputError, match=r"a step in 1\.\.7 \(the inversion's 7 levels\)"):
        parse_step_overrides("8", 1, 7)


def test_the_level_bound_of_checks_without_the_model_matches_every_comfy_scheduler(tiny_unet: Any) -> None:
    """``oir-edit`` checks a spec before any server answers with :func:`most_levels`: it must be
    ComfyUI's own count for ``ddim_uniform`` and never below it for any scheduler, or the command
    would refuse a level the server accepts."""
    import comfy.samplers

    from oir_core.steps import most_levels

    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        for steps in range(2, 61):
            levels = _comfy_levels(tiny_unet, scheduler, steps)
            assert levels <= most_levels(steps, scheduler), (scheduler, steps, levels)
            if scheduler == "ddim_uniform":
                assert levels == most_levels(steps, scheduler), (steps, levels)
