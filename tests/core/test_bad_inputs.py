"""The catalogue of bad inputs (`docs/limits.md`): each one's exact behaviour.

Every entry either raises :class:`OIRInputError` naming the input, the value and the fix (checked
here: the message contains the input name, a fragment of the problem, and "Fix:"), or takes a
documented fallback whose result is asserted. Node-level entries (image batches, trajectories from
another model, latent channel mismatches) are exercised through the same core functions the nodes
call; tests/integration/test_bad_inputs.py repeats them through the real nodes.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from engine_fixtures import SD_CLEAN_SIGMA, clean_latent, prompt_means

from oir_core import FunctionHost, OIRInputError, generate_candidates, invert, reassemble
from oir_core.analytic import GaussianModel, ddim_uniform_schedule
from oir_core.clip_backends import load_state_dict_file
from oir_core.edit import check_cfg, check_choice, check_masks_match, fit_image, make_edit_pair
from oir_core.inversion import check_trajectory_source
from oir_core.metric import score_table
from oir_core.prompts import EditPairText, build_prompts
from oir_core.search import edited_region_scores

STEPS = 10


def _host_and_trajectory():  # type: ignore[no-untyped-def]
    model = GaussianModel(prompt_means(4))
    host = FunctionHost(
        original=model.denoiser(0),
        guided=model.cfg_denoiser(negative=0, cfg=3.0, id_offset=1),
        target=model.cfg_denoiser(negative=0, cfg=3.0, positive=3),
    )
    trajectory = invert(
        host,
        clean_latent(model),
        ddim_uniform_schedule(STEPS),
        "official",
        clean_sigma=SD_CLEAN_SIGMA,
        source={"latent_channels": 4, "model_sampling": "EPS", "sigma_max": 14.6},
    )
    return host, trajectory


def _box(top: int, left: int, size: int = 32, image: int = 64) -> torch.Tensor:
    mask = torch.zeros(image, image)
    mask[top : top + size, left : left + size] = 1.0
    return mask


def _pickle_with_code(path: Path) -> Path:
    with path.open("wb") as handle:
        pickle.dump({"weight": torch.zeros(2), "hook": print}, handle, protocol=2)
    return path


class _NeverScores:
    """A scorer that fails the test if it is ever called: the refusals below come before the scorer."""

    def score(self, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        raise AssertionError("the scorer ran before the inputs were checked")


def _region(image: torch.Tensor, masks: list[torch.Tensor], texts: list[str]) -> object:
    return edited_region_scores(_NeverScores(), image, masks, texts)


ERRORS: list[tuple[str, Callable[[], object], str, str]] = [
    # (case, action, input named in the message, problem fragment)
    (
        "empty mask",
        lambda: make_edit_pair(torch.zeros(1, 64, 64), "dog", "cat"),
        "mask of edit pair 1",
        "empty",
    ),
    (
        "LoadImage's 64x64 placeholder mask",
        lambda: make_edit_pair(torch.zeros(64, 64), "dog", "cat", index=2),
        "mask of edit pair 2",
        "empty",
    ),
    (
        "mask of another aspect ratio",
        lambda: check_masks_match([make_edit_pair(_box(0, 0, 16, 64), "dog", "cat")], (8, 12)),
        "mask of edit pair 1",
        "aspect ratio",
    ),
    (
        "batch of masks on one pair",
        lambda: make_edit_pair(torch.ones(2, 64, 64), "dog", "cat"),
        "mask of edit pair 1",
        "one mask",
    ),
    (
        "image batch larger than one",
        lambda: fit_image(torch.rand(2, 64, 64, 3), (64, 64)),
        "image",
        "one image at a time",
    ),
    (
        "image of another aspect",
        lambda: fit_image(torch.rand(64, 96, 3), (64, 64)),
        "image",
        "does not match",
    ),
    ("no edit pairs", lambda: build_prompts("a dog", []), "pairs", "no edit pairs"),
    (
        "source phrase missing",
        lambda: build_prompts("a dog next to a gift", [EditPairText("horse", "zebra")]),
        "pairs[0].source",
        "not",
    ),
    (
        "source phrase repeated",
        lambda: build_prompts("a dog and a dog", [EditPairText("dog", "cat")]),
        "pairs[0].source",
        "occurs",
    ),
    (
        "source phrases overlap",
        lambda: build_prompts("a red dog", [EditPairText("red dog", "cat"), EditPairText("dog", "fox")]),
        "pairs[1].source",
        "overlap",
    ),
    (
        "steps < 2",
        lambda: invert(_host_and_trajectory()[0], torch.zeros(4, 8, 8), torch.tensor([1.0, 0.0])),
        "sigmas",
        "at least 2",
    ),
    (
        "reassembly step >= steps",
        lambda: reassemble(*_host_and_trajectory(), [5], [_box(0, 0)], STEPS, 0),
        "reassembly_step",
        "must lie in",
    ),
    (
        "reassembly + re-inversion > steps",
        lambda: reassemble(*_host_and_trajectory(), [5], [_box(0, 0)], 6, 5),
        "reinversion_steps",
        "exceeds the inversion's",
    ),
    (
        "overlapping masks with the 'error' rule",
        lambda: reassemble(
            *_host_and_trajectory(), [5, 6], [_box(0, 0), _box(16, 16)], 2, 2, overlap="error"
        ),
        "edit_pairs",
        "overlap",
    ),
    (
        "trajectory from another model",
        lambda: check_trajectory_source(_host_and_trajectory()[1], {"model_sampling": "CONST"}),
        "trajectory",
        "model_sampling",
    ),
    (
        "latent channel mismatch",
        lambda: check_trajectory_source(_host_and_trajectory()[1], {"latent_channels": 16}),
        "trajectory",
        "latent_channels",
    ),
    (
        "NaN in the input latent",
        lambda: invert(
            _host_and_trajectory()[0], torch.full((4, 8, 8), float("nan")), ddim_uniform_schedule(4), "euler"
        ),
        "latent",
        "not finite",
    ),
    ("cfg = 0", lambda: check_cfg(0.0), "cfg", "must be positive"),
    (
        "combo value outside its options (API clients)",
        lambda: check_choice("karras2", ("normal", "karras"), "scheduler"),
        "scheduler",
        "not one of the options",
    ),
    ("cfg < 0", lambda: check_cfg(-2.0), "cfg", "must be positive"),
    (
        "no steps to search",
        lambda: generate_candidates(*_host_and_trajectory(), [[]]),
        "search_steps",
        "no steps",
    ),
    (
        "Edit Region Score: a batch of final images",
        lambda: _region(torch.rand(2, 64, 64, 3), [_box(0, 0)], ["cat"]),
        "image",
        "one edit at a time",
    ),
    (
        "Edit Region Score: not an image",
        lambda: _region(torch.rand(64, 64), [_box(0, 0)], ["cat"]),
        "image",
        "one RGB image",
    ),
    (
        "Edit Region Score: NaN pixels",
        lambda: _region(torch.full((1, 64, 64, 3), float("nan")), [_box(0, 0)], ["cat"]),
        "image",
        "cannot be scored",
    ),
    (
        "Edit Region Score: no pairs",
        lambda: _region(torch.rand(1, 64, 64, 3), [], []),
        "oir_edit",
        "no edit pairs",
    ),
    (
        "Edit Region Score: masks and phrases of different counts",
        lambda: _region(torch.rand(1, 64, 64, 3), [_box(0, 0)], ["cat", "cake"]),
        "oir_edit",
        "its mask and its phrase",
    ),
    (
        "Edit Region Score: a mask of another image",
        lambda: _region(torch.rand(1, 64, 128, 3), [_box(0, 0)], ["cat"]),
        "mask of edit pair 1",
        "aspect ratio",
    ),
    (
        "scores with NaN",
        lambda: score_table([1, 2], torch.tensor([0.1, float("nan")]), torch.tensor([0.0, 0.0])),
        "candidates",
        "",
    ),
]


@pytest.mark.parametrize(("case", "action", "input_name", "problem"), ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_gets_a_clear_error(
    case: str, action: Callable[[], object], input_name: str, problem: str
) -> None:
    with pytest.raises(OIRInputError) as caught:
        action()
    message = str(caught.value)
    assert f"'{input_name}" in message or caught.value.input_name.startswith(input_name), message
    assert problem in message and "Fix:" in message, message


def test_scorer_files_missing_corrupt_or_pickled(tmp_path: Path) -> None:
    with pytest.raises(OIRInputError, match=r"not found|missing"):
        load_state_dict_file(tmp_path / "absent.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(OIRInputError, match="Fix:"):
        load_state_dict_file(corrupt)
    with pytest.raises(OIRInputError, match="refused"):
        load_state_dict_file(_pickle_with_code(tmp_path / "code.pt"))
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    assert torch.equal(load_state_dict_file(plain)["weight"], torch.ones(2))


def test_fallback_chosen_step_at_or_below_reassembly_is_clamped() -> None:
    host, trajectory = _host_and_trajectory()
    result = reassemble(host, trajectory, [1, 2], [_box(0, 0), _box(32, 32)], 3, 2)
    assert result.effective_starts == [3, 3]
    assert torch.isfinite(result.latent).all()


def test_fallback_overlapping_masks_later_pair_wins() -> None:
    host, trajectory = _host_and_trajectory()
    result = reassemble(host, trajectory, [5, 6], [_box(0, 0), _box(16, 16)], 2, 2)
    assert result.pair_regions[1, 2:6, 2:6].eq(1).all() and result.pair_regions[0, 2:4, 2:4].eq(0).all()


def test_fallback_mask_covering_the_whole_image() -> None:
    """No background to preserve: fidelity cannot rank candidates, so editability alone decides."""
    table = score_table([1, 2, 3], torch.tensor([0.1, 0.3, 0.2]), torch.zeros(3))
    assert table.fidelity_constant and table.chosen_step == 2
    host, trajectory = _host_and_trajectory()
    result = reassemble(host, trajectory, [5], [torch.ones(64, 64)], 2, 2)
    assert result.background.sum() == 0


def test_fallback_mask_of_another_resolution_is_resized() -> None:
    small = torch.zeros(16, 16)
    small[:8, :8] = 1
    host, trajectory = _host_and_trajectory()
    result = reassemble(host, trajectory, [5], [small], 2, 2)
    assert result.pair_regions[0, :4, :4].eq(1).all() and result.pair_regions[0].sum() == 16


def test_fallback_image_a_few_pixels_larger_than_candidates_is_resized() -> None:
    image = torch.rand(1, 66, 66, 3)
    assert fit_image(image, (64, 64)).shape == (64, 64, 3)
