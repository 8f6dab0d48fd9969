"""Node-level entries of the bad-input catalogue, through the real nodes in a real ComfyUI."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import pytest
import torch

IMAGE = 64


@pytest.fixture(scope="module")
def errors(pack: ModuleType) -> type[Exception]:
    return sys.modules[f"{pack.__name__}.oir_core.errors"].OIRInputError


@pytest.fixture(scope="module")
def edit(nodes: dict[str, Any], tiny_clip: Any) -> tuple:
    mask = torch.zeros(1, IMAGE, IMAGE)
    mask[:, 8:40, 8:40] = 1.0
    (pairs,) = nodes["OIREditPair"].execute(mask=mask, source="dog", target="cat", occurrence=0).args
    original, target, oir_edit, _ = (
        nodes["OIRGuidedPromptBuilder"]
        .execute(clip=tiny_clip, original_prompt="a dog sitting next to a gift", edit_pairs=pairs)
        .args
    )
    return original, target, oir_edit


def _invert(nodes: dict[str, Any], model: Any, vae: Any, original: list, steps: int = 5) -> Any:
    latent = {
        "samples": vae.encode(torch.rand(1, IMAGE, IMAGE, 3, generator=torch.Generator().manual_seed(2)))
    }
    return (
        nodes["OIRDDIMInversion"]
        .execute(
            model=model,
            latent=latent,
            original=original,
            steps=steps,
            scheduler="ddim_uniform",
            convention="auto",
        )
        .args[0]
    )


def _search(
    nodes: dict[str, Any], model: Any, trajectory: Any, oir_edit: Any, original: list, vae: Any, **extra: Any
):  # type: ignore[no-untyped-def]
    inputs = {
        "model": model,
        "trajectory": trajectory,
        "oir_edit": oir_edit,
        "original": original,
        "vae": vae,
        "cfg": 5.0,
        "search_mode": "exhaustive",
        "custom_steps": "1-5",
        "coarse_stride": 2,
        "refine_radius": 1,
        "max_batch": 0,
    }
    return nodes["OIRParallelStepSearch"].execute(**{**inputs, **extra})


def test_image_batch_larger_than_one_is_refused(nodes, errors, edit, tiny_unet, tiny_vae) -> None:
    latent = {"samples": tiny_vae.encode(torch.rand(2, IMAGE, IMAGE, 3))}
    with pytest.raises(errors, match="one image at a time"):
        nodes["OIRDDIMInversion"].execute(
            model=tiny_unet,
            latent=latent,
            original=edit[0],
            steps=5,
            scheduler="ddim_uniform",
            convention="auto",
        )


def test_official_convention_on_a_flow_model_is_refused(
    nodes, errors, edit, tiny_unet_flow, tiny_vae
) -> None:
    latent = {"samples": tiny_vae.encode(torch.rand(1, IMAGE, IMAGE, 3))}
    with pytest.raises(errors, match="euler"):
        nodes["OIRDDIMInversion"].execute(
            model=tiny_unet_flow,
            latent=latent,
            original=edit[0],
            steps=5,
            scheduler="simple",
            convention="official",
        )


def test_trajectory_from_another_model_is_refused(
    nodes, errors, edit, tiny_unet, tiny_unet_flow, tiny_vae
) -> None:
    trajectory = _invert(nodes, tiny_unet_flow, tiny_vae, edit[0])
    with pytest.raises(errors, match="model_sampling"):
        _search(nodes, tiny_unet, trajectory, edit[2], edit[0], tiny_vae)


def test_latent_channel_mismatch_is_refused(nodes, errors, edit, tiny_unet, tiny_vae) -> None:
    trajectory = _invert(nodes, tiny_unet, tiny_vae, edit[0])
    other = tiny_unet.clone()
    latent_format = other.get_model_object("latent_format")
    wider = type(latent_format)()
    wider.latent_channels = 16
    other.add_object_patch("latent_format", wider)
    with pytest.raises(errors, match="latent_channels"):
        _search(nodes, other, trajectory, edit[2], edit[0], tiny_vae)


def test_masks_of_another_image_are_refused(nodes, errors, edit, tiny_clip, tiny_unet, tiny_vae) -> None:
    wide = torch.zeros(1, IMAGE, 2 * IMAGE)
    wide[:, :, :10] = 1.0
    (pairs,) = nodes["OIREditPair"].execute(mask=wide, source="dog", target="cat", occurrence=0).args
    original, _, oir_edit, _ = (
        nodes["OIRGuidedPromptBuilder"]
        .execute(clip=tiny_clip, original_prompt="a dog", edit_pairs=pairs)
        .args
    )
    trajectory = _invert(nodes, tiny_unet, tiny_vae, original)
    with pytest.raises(errors, match="aspect ratio"):
        _search(nodes, tiny_unet, trajectory, oir_edit, original, tiny_vae)


@pytest.mark.parametrize("cfg", [0.0, -1.0])
def test_non_positive_cfg_is_refused_before_sampling(nodes, errors, edit, tiny_unet, tiny_vae, cfg) -> None:
    trajectory = _invert(nodes, tiny_unet, tiny_vae, edit[0])
    with pytest.raises(errors, match="cfg"):
        _search(nodes, tiny_unet, trajectory, edit[2], edit[0], tiny_vae, cfg=cfg)


def test_coarse_to_fine_without_scorer_is_refused(nodes, errors, edit, tiny_unet, tiny_vae) -> None:
    trajectory = _invert(nodes, tiny_unet, tiny_vae, edit[0])
    with pytest.raises(errors, match="scorer"):
        _search(nodes, tiny_unet, trajectory, edit[2], edit[0], tiny_vae, search_mode="coarse_to_fine")


def test_chosen_steps_of_another_edit_are_refused(nodes, errors, edit, tiny_unet, tiny_vae, pack) -> None:
    payloads = sys.modules[f"{pack.__name__}.nodes.payloads"]
    trajectory = _invert(nodes, tiny_unet, tiny_vae, edit[0])
    two_steps = payloads.ChosenSteps(steps=(3, 4), searched=(3, 4), tables=(), overridden=(False, False))
    with pytest.raises(errors, match="chosen_steps"):
        nodes["OIRObjectReassembly"].execute(
            model=tiny_unet,
            trajectory=trajectory,
            oir_edit=edit[2],
            chosen_steps=two_steps,
            original=edit[0],
            target=edit[1],
            cfg=5.0,
            reassembly_step=1,
            reinversion_steps=1,
            overlap="later_wins",
            max_batch=0,
        )


def test_reassembly_steps_beyond_the_trajectory_are_refused(
    nodes, errors, edit, tiny_unet, tiny_vae, pack
) -> None:
    payloads = sys.modules[f"{pack.__name__}.nodes.payloads"]
    trajectory = _invert(nodes, tiny_unet, tiny_vae, edit[0])
    chosen = payloads.ChosenSteps(steps=(3,), searched=(3,), tables=(), overridden=(False,))
    with pytest.raises(errors, match="reinversion_steps"):
        nodes["OIRObjectReassembly"].execute(
            model=tiny_unet,
            trajectory=trajectory,
            oir_edit=edit[2],
            chosen_steps=chosen,
            original=edit[0],
            target=edit[1],
            cfg=5.0,
            reassembly_step=3,
            reinversion_steps=3,
            overlap="later_wins",
            max_batch=0,
        )


def test_not_a_conditioning_is_refused(nodes, errors, tiny_unet, tiny_vae) -> None:
    latent = {"samples": tiny_vae.encode(torch.rand(1, IMAGE, IMAGE, 3))}
    with pytest.raises(errors, match="CONDITIONING"):
        nodes["OIRDDIMInversion"].execute(
            model=tiny_unet,
            latent=latent,
            original="a dog",
            steps=5,
            scheduler="ddim_uniform",
            convention="auto",
        )


def test_combo_values_outside_their_options_are_refused(nodes, errors, edit, tiny_unet, tiny_vae) -> None:
    latent = {"samples": tiny_vae.encode(torch.rand(1, IMAGE, IMAGE, 3))}
    with pytest.raises(errors, match="scheduler"):
        nodes["OIRDDIMInversion"].execute(
            model=tiny_unet, latent=latent, original=edit[0], steps=5, scheduler="nope", convention="auto"
        )
    with pytest.raises(errors, match="convention"):
        nodes["OIRDDIMInversion"].execute(
            model=tiny_unet, latent=latent, original=edit[0], steps=5, scheduler="normal", convention="nope"
        )


def test_a_latent_below_four_cells_is_refused_before_any_model_call(
    nodes, errors, edit, tiny_unet, tiny_vae
) -> None:
    calls: list[int] = []
    spy = tiny_unet.clone()
    spy.set_model_unet_function_wrapper(
        lambda apply, args: (calls.append(1), apply(args["input"], args["timestep"], **args["c"]))[1]
    )
    latent = {"samples": tiny_vae.encode(torch.rand(1, 24, 64, 3))}  # 3 x 8 latent cells
    with pytest.raises(errors, match=r"latent.*8x3 latent cells.*smaller than 4x4 cells.*at least 32 px"):
        nodes["OIRDDIMInversion"].execute(
            model=spy, latent=latent, original=edit[0], steps=5, scheduler="normal", convention="auto"
        )
    assert calls == []


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("dog", "dog", "same as its source 'dog'"),
        ("dog", "Dog ", "same as its source 'dog'"),
        ("dog", "", "empty: nothing says what 'dog' should become"),
    ],
)
def test_edit_pairs_that_change_nothing_are_refused(
    nodes, errors, tiny_clip, source: str, target: str, message: str
) -> None:
    mask = torch.zeros(1, IMAGE, IMAGE)
    mask[:, 8:40, 8:40] = 1.0
    with pytest.raises(errors, match=message):
        (pairs,) = nodes["OIREditPair"].execute(mask=mask, source=source, target=target, occurrence=0).args
        nodes["OIRGuidedPromptBuilder"].execute(
            clip=tiny_clip, original_prompt="a dog sitting next to a gift", edit_pairs=pairs
        )


def test_scorer_device_gpu_is_refused_when_queued_on_a_cpu_host(nodes) -> None:
    refusal = nodes["OIRLoadCLIPScorer"].validate_inputs(device="gpu")
    assert isinstance(refusal, str) and "device" in refusal and "choose 'auto' or 'cpu'" in refusal
    assert nodes["OIRLoadCLIPScorer"].validate_inputs(device="auto") is True


class _NeverScores:
    """A scorer that fails the test if OIR Edit Region Score calls it before checking its inputs."""

    def score(self, *args: Any) -> Any:
        raise AssertionError("the scorer ran before the inputs were checked")


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("oir_edit is the edit pairs", r"'oir_edit' = 'tuple': is not an OIR edit"),
        ("scorer is not a metric", r"'scorer' = 'str': is not an OIR search metric"),
        ("two images", r"'image' = 'batch of 2 images'"),
        ("image of another aspect", r"'mask of edit pair 1' = '64x64 mask': its aspect ratio differs"),
    ],
)
def test_edit_region_score_refuses_before_scoring(nodes, errors, edit, pack, case: str, match: str) -> None:
    metric = sys.modules[f"{pack.__name__}.oir_core.metric"].SearchMetric(_NeverScores())
    inputs: dict[str, Any] = {"image": torch.rand(1, IMAGE, IMAGE, 3), "scorer": metric, "oir_edit": edit[2]}
    if case == "oir_edit is the edit pairs":
        inputs["oir_edit"] = edit[2].pairs
    elif case == "scorer is not a metric":
        inputs["scorer"] = "tiny-clip"
    elif case == "two images":
        inputs["image"] = torch.rand(2, IMAGE, IMAGE, 3)
    else:
        inputs["image"] = torch.rand(1, IMAGE, 2 * IMAGE, 3)
    with pytest.raises(errors, match=match) as caught:
        nodes["OIREditRegionScore"].execute(**inputs)
    assert "Fix:" in str(caught.value)
