"""CONDITIONING helpers that never mutate the user's objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..oir_core.errors import OIRInputError

Conditioning = list[list[Any]]


def check_conditioning(conditioning: Any, input_name: str) -> Conditioning:
    """Refuse anything that is not a non-empty ComfyUI CONDITIONING list."""
    if (
        not isinstance(conditioning, list)
        or not conditioning
        or not all(
            isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict)
            for entry in conditioning
        )
    ):
        raise OIRInputError(
            input_name, type(conditioning).__name__, "is not a CONDITIONING", "connect a text-encoder output"
        )
    return conditioning


def inherit_conditioning(
    template: Conditioning, encoded: Conditioning, encoder_keys: Iterable[str]
) -> Conditioning:
    """A guided prompt's CONDITIONING that carries everything the user attached to ``template``.

    Each entry of ``template`` (the original prompt's CONDITIONING, possibly with ControlNet, hooks,
    areas or masks applied) is copied with its text-encoder output replaced by the guided
    prompt's: the tensor and the keys the encoder produces (``encoder_keys``) come from
    ``encoded[0]``, every other key from the template. New lists and dicts are built; neither input
    is changed.
    """
    encoder = set(encoder_keys)
    tensor, encoded_extras = encoded[0][0], encoded[0][1]
    derived: Conditioning = []
    for _, extras in template:
        inherited = {key: value for key, value in extras.items() if key not in encoder}
        derived.append([tensor, {**encoded_extras, **inherited}])
    return derived
