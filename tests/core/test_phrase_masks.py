"""Masks from words: the engine's phrase mapping, map aggregation and DiffEdit mechanics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oir_core import FunctionHost, OIRInputError
from oir_core.phrase_masks import (
    AttentionMaps,
    find_phrase_mask,
    noised_samples,
    phrase_token_positions,
    phrase_word_ids,
)

WORDS = "a dog, a small dog and a red gift box".split()


def test_phrase_words_multi_word_repeated_and_punctuated() -> None:
    assert phrase_word_ids(WORDS, "gift box") == [9, 10]
    assert phrase_word_ids(WORDS, "dog", occurrence=1) == [2]  # "dog," : the word carries the comma
    assert phrase_word_ids(WORDS, "small dog") == [4, 5]
    assert phrase_word_ids(WORDS, "dog", occurrence=2) == [5]
    with pytest.raises(OIRInputError, match="occurs 2 times"):
        phrase_word_ids(WORDS, "dog")
    with pytest.raises(OIRInputError, match="not found"):
        phrase_word_ids(WORDS, "cat")


def test_token_positions_follow_chunks_of_the_context() -> None:
    # two chunks of 6 (start, words..., end/pad): word 3 spans two tokens, word 5 sits in chunk 2
    chunks = [[0, 1, 2, 3, 3, 0], [0, 4, 5, 0, 0, 0]]
    assert phrase_token_positions(chunks, [3]) == [3, 4]
    assert phrase_token_positions(chunks, [5]) == [6 + 2]
    assert phrase_token_positions(chunks, [2, 3]) == [2, 3, 4]


def test_attention_maps_follow_the_documented_rule() -> None:
    """Per layer: phrase tokens summed, heads averaged, bilinear to the latent grid; layers and rows
    averaged equally (checked against the rule written out with numpy-style loops)."""
    generator = torch.Generator().manual_seed(0)
    maps = AttentionMaps((8, 8), [2, 3])
    layers = [((8, 8), 3), ((4, 4), 2), ((4, 4), 5)]
    expected = torch.zeros(8, 8)
    count = 0
    for hw, heads in layers:
        probabilities = torch.rand(2, heads, hw[0] * hw[1], 7, generator=generator).softmax(-1)
        maps.add(probabilities, hw)
        for row in range(2):
            layer = torch.zeros(hw)
            for head in range(heads):
                layer += (probabilities[row, head, :, 2] + probabilities[row, head, :, 3]).reshape(hw) / heads
            if hw != (8, 8):
                layer = F.interpolate(layer[None, None], size=(8, 8), mode="bilinear", align_corners=False)[
                    0, 0
                ]
            expected += layer
            count += 1
    torch.testing.assert_close(maps.mean(), expected / count)
    with pytest.raises(ValueError, match="do not form"):
        maps.add(torch.rand(1, 1, 10, 7), (4, 4))


def test_noised_samples_mix_noise_as_each_parameterisation_does() -> None:
    latent = torch.randn(4, 6, 6, generator=torch.Generator().manual_seed(1))
    vp = noised_samples(latent, 2.0, 3, seed=7, flow=False)
    flow = noised_samples(latent, 0.25, 3, seed=7, flow=True)
    noise = torch.randn((3, 4, 6, 6), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(vp, latent + 2.0 * noise)
    torch.testing.assert_close(flow, 0.75 * latent + 0.25 * noise)


REGION = torch.zeros(8, 8)
REGION[2:6, 1:4] = 1.0


def _region_host(shift_inside: float) -> FunctionHost:
    """A model whose prediction differs between the prompts only inside REGION."""

    def original(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        return x * 0.3

    def guided(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        assert cond_ids is not None and (cond_ids == 0).all()
        return x * 0.3 + shift_inside * REGION

    return FunctionHost(original=original, guided=guided, target=original)


@pytest.mark.parametrize("flow", [False, True])
def test_noise_difference_finds_exactly_where_the_prompts_disagree(flow: bool) -> None:
    host = _region_host(shift_inside=0.7)
    latent = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))
    found = find_phrase_mask(
        host, latent, method="noise_difference", sigma=0.6, samples=5, seed=3, flow=flow, threshold=0.5
    )
    assert torch.equal(found.mask, REGION)  # IoU 1
    assert torch.equal(found.soft, REGION)  # the difference is constant inside, zero outside
    assert found.model_rows == 10  # 5 draws x 2 prompts, no CFG
    assert [stage.role for stage in host.stages] == ["original", "guided"]
    assert all(stage.rows == 5 for stage in host.stages)


def test_cross_attention_reads_what_the_hosts_capture_recorded() -> None:
    """The engine runs the original prompt once over the noise draws; the capture (here a host
    whose model records a known attention pattern) decides the mask."""
    maps = AttentionMaps((8, 8), [4])
    pattern = torch.full((64, 6), 0.1)
    pattern[:, 4] = 0.5 * (1 - REGION.flatten()) + 0.5 * REGION.flatten()  # the phrase token
    pattern[REGION.flatten() > 0, 4] = 0.9

    def original(x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        maps.add(pattern.expand(x.shape[0], 2, 64, 6), (8, 8))
        return x

    host = FunctionHost(original=original, guided=original, target=original, max_batch=3)
    found = find_phrase_mask(
        host,
        torch.zeros(4, 8, 8),
        method="cross_attention",
        sigma=1.0,
        samples=7,
        seed=0,
        flow=False,
        threshold=0.5,
        attention=maps,
    )
    assert torch.equal(found.mask, REGION) and found.model_rows == 7
    assert maps.maps == 7  # every draw once (chunks of 3, 3, 1)


def test_bad_settings_are_refused_before_any_model_call() -> None:
    from oir_core.phrase_masks import check_mask_settings

    for threshold, samples, strength, name in [
        (0, 1, 0.5, "threshold"),
        (0.5, 0, 0.5, "draws"),
        (0.5, 1, 1.0, "noise_strength"),
    ]:
        with pytest.raises(OIRInputError, match=name):
            check_mask_settings(threshold, samples, strength)
