"""The edit spec model: an edit's fields and settings, parsed from spec-file keys, flags and shorthand.

An *edit spec* is everything one OIR edit needs: the source image, the original prompt, one or more
edit pairs (``source`` phrase, ``target`` phrase, mask file), the checkpoint and the OIR settings.
It comes from command-line flags, from a spec file (YAML or JSON, same field names), or from an
OIR-Bench configuration (``image_path``, ``origin_prompt``, ``guided_prompt`` templates, ...).

Host-agnostic, never imports ComfyUI. Spec files and batch folders are read by
:mod:`oir_cli.discovery`; what can be checked without a server (files, image/mask sizes, prompt
phrases, step ranges) is checked by :mod:`oir_cli.checks`, before any heavy work; a spec fills an
API-format workflow in :mod:`oir_cli.filling`, which :mod:`oir_cli.runner` queues on ComfyUI.

Spec file example (YAML)::

    image: photo.png
    prompt: a dog sitting next to a gift
    edits:
      - {source: dog, target: cat, mask: masks/dog.png}
      - gift=cake:masks/gift.png          # the --edit shorthand works too
    checkpoint: v1-5-pruned-emaonly-fp16.safetensors
    steps: 50
    loras: ["style.safetensors:0.8"]
    controlnets: [{name: control_depth.safetensors, strength: 0.6, hint: depth.png}]

Relative paths in a spec file are relative to the file's folder.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, FiniteFloat, ValidationError

from oir_core.options import (
    ATTENTION_MODES,
    BACKGROUND_MODES,
    CONVENTIONS,
    FIDELITY_SPACES,
    MASK_GEOMETRIES,
    OVERLAP_RULES,
    SCORER_BACKENDS,
    SCORER_DEVICES,
    SCORER_PRECISIONS,
    SEARCH_MODES,
)


class SpecError(ValueError):
    """A bad edit spec: one line that names the problem (and the file or flag it came from)."""


@dataclass(frozen=True)
class EditItem:
    """One edit pair of a spec.

    Attributes:
        source: phrase of the original prompt naming the object (``"dog"``).
        target: what it becomes (``"cat"``).
        mask: mask file, white = object, any resolution with the image's aspect ratio.
        occurrence: 1-based occurrence of ``source`` when it occurs several times; ``None`` = once.
        guided_prompt: explicit guided prompt for this pair (OIR-Bench gives them); ``None`` = built.
    """

    source: str
    target: str
    mask: Path
    occurrence: int | None = None
    guided_prompt: str | None = None


@dataclass(frozen=True)
class LoraItem:
    """A LoRA applied to the model and the text encoder (ComfyUI's LoraLoader)."""

    name: str
    strength_model: float = 1.0
    strength_clip: float = 1.0


@dataclass(frozen=True)
class ControlNetItem:
    """A ControlNet applied to the target (positive) and original (negative) conditionings.

    Attributes:
        name: file name in ComfyUI's ``models/controlnet``.
        strength: ControlNet strength.
        hint: control image (depth map, edges, ...); ``None`` = the source image itself.
        start_percent: where in the schedule the control starts (0..1).
        end_percent: where it ends (0..1).
    """

    name: str
    strength: float = 1.0
    hint: Path | None = None
    start_percent: float = 0.0
    end_percent: float = 1.0


@dataclass(frozen=True)
class EditSpec:
    """Everything one headless OIR edit needs (field names = spec-file keys = flag names).

    ``checkpoint`` and ``scorer`` may stay ``None`` until the server is known: a missing checkpoint
    is refused there, a missing scorer means the first CLIP the server lists in ``models/oir_clip``.
    ``seed`` is recorded in the report only: OIR is deterministic (DDIM inversion and denoising
    with eta = 0), so no node of the workflow draws noise.
    """

    name: str
    image: Path
    prompt: str
    edits: tuple[EditItem, ...]
    target_prompt: str | None = None
    checkpoint: str | None = None
    steps: int = 50
    cfg: float = 7.5
    reassembly_step: int = -1
    reinversion_steps: int = -1
    seed: int | None = None
    scheduler: str = "ddim_uniform"
    convention: str = "auto"
    scorer: str | None = None
    scorer_backend: str = "auto"
    scorer_device: str = "auto"
    scorer_precision: str = "fp32"
    search_mode: str = "exhaustive"
    custom_steps: str | None = None
    coarse_stride: int = 5
    refine_radius: int = 2
    editing_weight: float = 0.5
    attention_mode: str = "official"
    fidelity_space: str = "official"
    step_override: str = ""
    overlap: str = "later_wins"
    mask_geometry: str = "official"
    background: str = "official"
    feather: int = 0
    max_batch: int = 0
    loras: tuple[LoraItem, ...] = ()
    controlnets: tuple[ControlNetItem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (paths as strings), as recorded in ``report.json``."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value

        return plain(asdict(self))

    def files(self) -> list[Path]:
        """Every local file the edit reads: the image, the masks, the control hints."""
        found = [self.image, *(edit.mask for edit in self.edits)]
        found += [net.hint for net in self.controlnets if net.hint is not None]
        return found


SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(EditSpec) if f.name != "name")
"""Keys a spec file may use (dashes are accepted for underscores)."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "search_mode": SEARCH_MODES,
    "attention_mode": ATTENTION_MODES,
    "fidelity_space": FIDELITY_SPACES,
    "convention": CONVENTIONS,
    "overlap": OVERLAP_RULES,
    "mask_geometry": MASK_GEOMETRIES,
    "background": BACKGROUND_MODES,
    "scorer_backend": SCORER_BACKENDS,
    "scorer_device": SCORER_DEVICES,
    "scorer_precision": SCORER_PRECISIONS,
}


def _choice(field: str) -> Any:
    """A pydantic validator of one setting's choices (``oir_core.options``), naming them on refusal."""
    choices = _CHOICES[field]

    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"is not one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's yes/no: pydantic would read True as 1
        raise ValueError("is not a whole number")
    return value


WholeNumber = Annotated[int, BeforeValidator(_no_bool)]
"""A spec's INT setting: ``5``, ``5.0`` and ``"5"`` are fine; ``5.5``, ``"many"`` and booleans are not."""


class SpecSettings(BaseModel):
    """The scalar fields of a spec, typed: a whole number where the nodes take an INT (``"5"`` and 5
    are fine, ``5.5`` and ``"many"`` are not), a number for FLOATs, a text for the rest, and each
    setting one of the choices its node offers. Pairs, LoRAs and ControlNets are parsed separately
    (they also come in the ``--edit``/``--lora``/``--controlnet`` shorthand)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, coerce_numbers_to_str=True)

    target_prompt: str | None = None
    checkpoint: str | None = None
    steps: WholeNumber | None = None
    cfg: FiniteFloat | None = None
    reassembly_step: WholeNumber | None = None
    reinversion_steps: WholeNumber | None = None
    seed: WholeNumber | None = None
    scheduler: str | None = None
    convention: Annotated[str, _choice("convention")] | None = None
    scorer: str | None = None
    scorer_backend: Annotated[str, _choice("scorer_backend")] | None = None
    scorer_device: Annotated[str, _choice("scorer_device")] | None = None
    scorer_precision: Annotated[str, _choice("scorer_precision")] | None = None
    search_mode: Annotated[str, _choice("search_mode")] | None = None
    custom_steps: str | None = None
    coarse_stride: WholeNumber | None = None
    refine_radius: WholeNumber | None = None
    editing_weight: FiniteFloat | None = None
    attention_mode: Annotated[str, _choice("attention_mode")] | None = None
    fidelity_space: Annotated[str, _choice("fidelity_space")] | None = None
    step_override: str | None = None
    overlap: Annotated[str, _choice("overlap")] | None = None
    mask_geometry: Annotated[str, _choice("mask_geometry")] | None = None
    background: Annotated[str, _choice("background")] | None = None
    feather: WholeNumber | None = None
    max_batch: WholeNumber | None = None


_ITEM_FIELDS = ("image", "prompt", "edits", "loras", "controlnets")
"""Spec fields parsed outside :class:`SpecSettings` (paths, pairs and their shorthand)."""

_TYPE_WORDS = {
    "int": "is not a whole number",
    "float": "is not a number",
    "finite": "is not a finite number",
    "string": "is not a text",
}


def _settings(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """:class:`SpecSettings` of ``values`` (unset fields left out), or one line naming the field."""
    try:
        return SpecSettings.model_validate(values).model_dump(exclude_none=True)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        kind = str(first["type"]).split("_")[0]
        if first["type"] == "value_error":
            problem = str(first["ctx"]["error"])
        else:
            problem = _TYPE_WORDS.get(kind, first["msg"])
        raise SpecError(f"{where}: '{field}' = {first['input']!r} {problem}") from None


# --------------------------------------------------------------------------------------------------
# Shorthand arguments: --edit, --lora, --controlnet


def resolve_path(path: str | Path, base: Path) -> Path:
    """``path`` made absolute against ``base`` (``~`` expanded)."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)


def parse_edit_arg(text: str, base: Path = Path()) -> EditItem:
    """Parse ``SOURCE=TARGET:MASK`` (optionally ``SOURCE#N=...`` for the N-th occurrence).

    The target ends at the first ``:`` after ``=``, so the mask path may contain ``:`` (Windows
    drives); a target phrase may not.

    Examples:
        ``dog=cat:masks/dog.png``, ``red car#2=blue car:car2.png``.
    """
    source, equals, rest = text.partition("=")
    target, colon, mask = rest.partition(":")
    if equals and colon and source.strip() and mask.strip() and not target.strip():
        raise SpecError(f"--edit {text!r}: {_empty_target(source.strip())}")
    if not equals or not colon or not source.strip() or not target.strip() or not mask.strip():
        raise SpecError(f"--edit {text!r}: expected SOURCE=TARGET:MASK.png (e.g. dog=cat:dog_mask.png)")
    occurrence = None
    match = re.fullmatch(r"(.*?)#(\d+)\s*", source)
    if match:
        source, occurrence = match.group(1), int(match.group(2))
        if occurrence < 1:
            raise SpecError(f"--edit {text!r}: occurrences count from 1 (SOURCE#1 = first)")
    return EditItem(source.strip(), target.strip(), resolve_path(mask.strip(), base), occurrence)


def _empty_target(source: str) -> str:
    return (
        f"the target is empty: nothing says what {source!r} should become; type the new object's words "
        "(e.g. dog=cat:dog_mask.png)"
    )


def _number(text: Any, what: str, context: str) -> float:
    """``text`` (a flag's text or a spec file's value) as a finite number, or one line."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise SpecError(f"{context}: {what} {text!r} is not a number") from None
    if isinstance(text, bool) or not math.isfinite(value):
        raise SpecError(f"{context}: {what} {text!r} is not a finite number")
    return value


def parse_lora_arg(text: str) -> LoraItem:
    """Parse ``NAME[:STRENGTH[:CLIP_STRENGTH]]`` (strength 1.0 when omitted; clip = model strength)."""
    parts = text.split(":")
    name = parts[0].strip()
    if not name or len(parts) > 3:
        raise SpecError(f"--lora {text!r}: expected NAME:STRENGTH (e.g. style.safetensors:0.8)")
    strength = _number(parts[1], "strength", f"--lora {text!r}") if len(parts) > 1 else 1.0
    clip = _number(parts[2], "clip strength", f"--lora {text!r}") if len(parts) > 2 else strength
    return LoraItem(name, strength, clip)


def parse_controlnet_arg(text: str, base: Path = Path()) -> ControlNetItem:
    """Parse ``NAME[:STRENGTH[:HINT.png]]``; the hint path may itself contain ``:``."""
    name, _, rest = text.partition(":")
    strength_text, _, hint = rest.partition(":")
    if not name.strip():
        raise SpecError(f"--controlnet {text!r}: expected NAME:STRENGTH[:HINT.png]")
    strength = _number(strength_text, "strength", f"--controlnet {text!r}") if strength_text.strip() else 1.0
    return ControlNetItem(name.strip(), strength, resolve_path(hint.strip(), base) if hint.strip() else None)


# --------------------------------------------------------------------------------------------------
# Mappings (spec files, flags) -> EditSpec


def normalise_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).strip().replace("-", "_"): v for k, v in data.items()}


def _edit_from(value: Any, base: Path, where: str) -> EditItem:
    if isinstance(value, EditItem):
        return value
    if isinstance(value, str):
        try:
            return parse_edit_arg(value, base)
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}: an edit is 'SOURCE=TARGET:MASK' or a mapping with source, target, mask")
    item = normalise_keys(value)
    unknown = sorted(set(item) - {"source", "target", "mask", "occurrence", "guided_prompt"})
    if unknown:
        raise SpecError(
            f"{where}: unknown edit field(s) {unknown} (known: source, target, mask, occurrence, "
            "guided_prompt)"
        )
    missing = [k for k in ("source", "target", "mask") if not str(item.get(k) or "").strip()]
    if missing == ["target"]:
        raise SpecError(f"{where}: {_empty_target(str(item['source']).strip())}")
    if missing:
        raise SpecError(f"{where}: the edit lacks {', '.join(missing)}")
    occurrence = item.get("occurrence")
    if occurrence in (None, "", 0):
        occurrence = None
    elif isinstance(occurrence, bool) or not isinstance(occurrence, int) or occurrence < 1:
        raise SpecError(f"{where}: occurrence {occurrence!r} must be a whole number from 1 (1 = first)")
    guided = item.get("guided_prompt")
    return EditItem(
        str(item["source"]).strip(),
        str(item["target"]).strip(),
        resolve_path(str(item["mask"]), base),
        occurrence,
        str(guided).strip() if guided is not None and str(guided).strip() else None,
    )


def _lora_from(value: Any, where: str) -> LoraItem:
    if isinstance(value, LoraItem):
        return value
    if isinstance(value, str):
        return parse_lora_arg(value)
    if isinstance(value, Mapping):
        item = normalise_keys(value)
        if not item.get("name"):
            raise SpecError(f"{where}: a LoRA needs a name")
        strength = _number(item.get("strength", item.get("strength_model", 1.0)), "strength", where)
        return LoraItem(
            str(item["name"]), strength, _number(item.get("strength_clip", strength), "strength_clip", where)
        )
    raise SpecError(f"{where}: a LoRA is 'NAME:STRENGTH' or a mapping with name and strength")


def _controlnet_from(value: Any, base: Path, where: str) -> ControlNetItem:
    if isinstance(value, ControlNetItem):
        return value
    if isinstance(value, str):
        return parse_controlnet_arg(value, base)
    if isinstance(value, Mapping):
        item = normalise_keys(value)
        if not item.get("name"):
            raise SpecError(f"{where}: a ControlNet needs a name")
        hint = item.get("hint")
        return ControlNetItem(
            str(item["name"]),
            _number(item.get("strength", 1.0), "strength", where),
            resolve_path(str(hint), base) if hint else None,
            _number(item.get("start_percent", 0.0), "start_percent", where),
            _number(item.get("end_percent", 1.0), "end_percent", where),
        )
    raise SpecError(f"{where}: a ControlNet is 'NAME:STRENGTH[:HINT]' or a mapping with name, strength, hint")


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def spec_from_mapping(
    data: Mapping[str, Any], base: Path, name: str, defaults: Mapping[str, Any] | None = None
) -> EditSpec:
    """Build an :class:`EditSpec` from spec-file keys.

    Args:
        data: the case's own fields (they win over ``defaults``).
        base: folder that relative paths in ``data`` are relative to.
        name: the case name (output sub-folder, report title).
        defaults: fields given elsewhere (e.g. batch-wide flags); their paths must be absolute.

    Raises:
        SpecError: unknown or missing fields, wrong types, bad choices.
    """
    where = name
    merged = normalise_keys(defaults or {})
    merged.update(normalise_keys(data))
    unknown = sorted(set(merged) - set(SPEC_FIELDS))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown} (known: {', '.join(SPEC_FIELDS)})")
    for key in ("image", "prompt", "edits"):
        if merged.get(key) in (None, "", [], ()):
            flag = {"image": "--image", "prompt": "--prompt", "edits": "--edit"}[key]
            raise SpecError(f"{where}: missing '{key}' (spec field '{key}' or flag {flag})")
    values = _settings({k: v for k, v in merged.items() if k not in _ITEM_FIELDS}, where)
    for key, value in merged.items():
        if value is None or key not in _ITEM_FIELDS:
            continue
        if key == "image":
            values[key] = resolve_path(str(value), base)
        elif key == "edits":
            values[key] = tuple(
                _edit_from(item, base, f"{where}: edit {k}") for k, item in enumerate(as_list(value), 1)
            )
        elif key == "loras":
            values[key] = tuple(
                _lora_from(item, f"{where}: lora {k}") for k, item in enumerate(as_list(value), 1)
            )
        elif key == "controlnets":
            values[key] = tuple(
                _controlnet_from(item, base, f"{where}: controlnet {k}")
                for k, item in enumerate(as_list(value), 1)
            )
        else:
            values[key] = str(value)
    if "target_prompt" in values and not values["target_prompt"].strip():
        del values["target_prompt"]  # an empty target prompt means "build it from the pairs"
    return EditSpec(name=name, **values)
