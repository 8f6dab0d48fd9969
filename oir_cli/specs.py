"""Edit specs for the headless ``oir-edit`` command: parsing, local validation, batch discovery, workflows.

An *edit spec* is everything one OIR edit needs: the source image, the original prompt, one or more
edit pairs (``source`` phrase, ``target`` phrase, mask file), the checkpoint and the OIR settings.
It comes from command-line flags, from a spec file (YAML or JSON, same field names), or from an
OIR-Bench configuration (``image_path``, ``origin_prompt``, ``guided_prompt`` templates, ...).

This module is host-agnostic and never imports ComfyUI: it turns specs into a filled API-format
workflow (one of the templates shipped in ``oir_cli/workflows``) that :mod:`oir_cli.cli`
queues on a ComfyUI server. Everything that can be checked without a server (files, image/mask
sizes, prompt phrases, step ranges) is checked here, before any heavy work.

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

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, FiniteFloat, ValidationError

from oir_core.errors import OIRInputError
from oir_core.options import (
    ASPECT_TOLERANCE,
    ATTENTION_MODES,
    BACKGROUND_MODES,
    CONVENTIONS,
    FIDELITY_SPACES,
    LATENT_FACTOR,
    MASK_GEOMETRIES,
    MIN_IMAGE_SIDE,
    OVERLAP_RULES,
    SCORER_BACKENDS,
    SCORER_DEVICES,
    SCORER_PRECISIONS,
    SEARCH_MODES,
)
from oir_core.prompts import EditPairText, PromptPlan, build_prompts
from oir_core.regions import exclusive_regions
from oir_core.steps import (
    coarse_steps,
    parse_step_overrides,
    parse_steps,
    validate_background,
    validate_reassembly,
)

from . import pictures

__all__ = [
    "Case",
    "ControlNetItem",
    "EditItem",
    "EditSpec",
    "LocalCheck",
    "LoraItem",
    "SpecError",
    "discover_cases",
    "fill_workflow",
    "load_spec_file",
    "load_template",
    "parse_controlnet_arg",
    "parse_edit_arg",
    "parse_lora_arg",
    "safe_case_dir",
    "single_spec",
    "spec_from_mapping",
    "validate_local",
]

WORKFLOW_DIR = Path(__file__).resolve().parent / "workflows"
"""API-format workflows shipped with the package (twins of ``example_workflows/*.json``)."""

BASE_TEMPLATE = "oir_two_object_edit"
"""The template every headless edit starts from; pairs, LoRAs and ControlNets are adapted in it."""


MASK_CHANNEL = "red"
"""LoadImageMask channel the headless workflows read: a mask file is white (object) on black."""


SPEC_SUFFIXES = (".yaml", ".yml", ".json")


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


def _resolve(path: str | Path, base: Path) -> Path:
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
    return EditItem(source.strip(), target.strip(), _resolve(mask.strip(), base), occurrence)


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
    return ControlNetItem(name.strip(), strength, _resolve(hint.strip(), base) if hint.strip() else None)


# --------------------------------------------------------------------------------------------------
# Mappings (spec files, flags) -> EditSpec


def _normalise_keys(data: Mapping[str, Any]) -> dict[str, Any]:
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
    item = _normalise_keys(value)
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
        _resolve(str(item["mask"]), base),
        occurrence,
        str(guided).strip() if guided is not None and str(guided).strip() else None,
    )


def _lora_from(value: Any, where: str) -> LoraItem:
    if isinstance(value, LoraItem):
        return value
    if isinstance(value, str):
        return parse_lora_arg(value)
    if isinstance(value, Mapping):
        item = _normalise_keys(value)
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
        item = _normalise_keys(value)
        if not item.get("name"):
            raise SpecError(f"{where}: a ControlNet needs a name")
        hint = item.get("hint")
        return ControlNetItem(
            str(item["name"]),
            _number(item.get("strength", 1.0), "strength", where),
            _resolve(str(hint), base) if hint else None,
            _number(item.get("start_percent", 0.0), "start_percent", where),
            _number(item.get("end_percent", 1.0), "end_percent", where),
        )
    raise SpecError(f"{where}: a ControlNet is 'NAME:STRENGTH[:HINT]' or a mapping with name, strength, hint")


def _as_list(value: Any) -> list[Any]:
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
    merged = _normalise_keys(defaults or {})
    merged.update(_normalise_keys(data))
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
            values[key] = _resolve(str(value), base)
        elif key == "edits":
            values[key] = tuple(
                _edit_from(item, base, f"{where}: edit {k}") for k, item in enumerate(_as_list(value), 1)
            )
        elif key == "loras":
            values[key] = tuple(
                _lora_from(item, f"{where}: lora {k}") for k, item in enumerate(_as_list(value), 1)
            )
        elif key == "controlnets":
            values[key] = tuple(
                _controlnet_from(item, base, f"{where}: controlnet {k}")
                for k, item in enumerate(_as_list(value), 1)
            )
        else:
            values[key] = str(value)
    if "target_prompt" in values and not values["target_prompt"].strip():
        del values["target_prompt"]  # an empty target prompt means "build it from the pairs"
    return EditSpec(name=name, **values)


# --------------------------------------------------------------------------------------------------
# Spec files and batch folders (our format and OIR-Bench's)


@dataclass(frozen=True)
class Case:
    """One case of a batch: a spec, or the one-line reason it could not be read."""

    name: str
    source: Path
    spec: EditSpec | None = None
    error: str | None = None


MAX_SPEC_BYTES = 8 * 1024 * 1024
"""The largest spec file read (8 MiB): a spec is a few hundred bytes, the official OIR-Bench configs
well under 1 MiB; anything bigger is not a spec and is refused before it is parsed."""


def _read_structured(path: Path) -> Any:
    """A spec file's YAML/JSON content, or one line saying why it cannot be one.

    Read defensively (one bad file must fail only its own case): too large, binary (NUL bytes),
    not UTF-8 text, or not valid YAML/JSON each give a :class:`SpecError` naming the file.
    """
    import yaml

    kind = path.suffix.lstrip(".").upper() or "YAML"
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"{path}: {size / 2**20:.1f} MiB is too large for a spec file (at most "
                f"{MAX_SPEC_BYTES // 2**20} MiB of {kind} text): is it the wrong file?"
            )
        data = path.read_bytes()
    except OSError as error:
        raise SpecError(f"{path}: cannot read ({error.strerror or error})") from None
    if b"\x00" in data:
        raise SpecError(f"{path}: a binary file, not {kind} text (it holds NUL bytes): is it the wrong file?")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}): "
            "save it as UTF-8"
        ) from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SpecError(f"{path}: not valid {kind} ({first})") from None


def _is_our_spec(data: Any) -> bool:
    return isinstance(data, Mapping) and "image" in data and ("edits" in data or "prompt" in data)


def _is_bench_case(data: Any) -> bool:
    return isinstance(data, Mapping) and "image_path" in data and "origin_prompt" in data


BENCH_FOLDER = "OIR-Bench"
"""The benchmark's folder name; its configs name files relative to the folder that holds it."""


def bench_base(config: Path) -> Path:
    """The folder an OIR-Bench config's relative paths are relative to.

    The official configs name files as ``OIR-Bench/multi_object/mask/<case>/<object>.png``, relative
    to the official repository's root, the folder that holds ``OIR-Bench``. So for a config inside
    an ``OIR-Bench`` folder (the nearest one above it) the base is that folder's parent; for a config
    anywhere else, its own folder (as for spec files).
    """
    folder = Path(config).resolve().parent
    for candidate in (folder, *folder.parents):
        if candidate.name == BENCH_FOLDER:
            return candidate.parent
    return folder


def resolve_bench_path(raw: str, base: Path) -> Path:
    """An OIR-Bench path exactly as named: absolute as it is, relative against ``base``
    (:func:`bench_base`). Nothing else is tried: a missing file fails its case with this path,
    never a same-named file found elsewhere."""
    return _resolve(str(raw).strip(), base)


def bench_cases(name: str, data: Mapping[str, Any], base: Path) -> list[tuple[str, dict[str, Any]]]:
    """Translate one OIR-Bench config entry into spec mappings (paths already absolute).

    ``base``: the folder relative paths are relative to (:func:`bench_base` of the config file).

    Multi-object entries (``origin_change``, ``prompt_change``, ``prompt_change_mask``,
    ``guided_prompt`` as ``[prefix, suffix]`` templates, ``target_prompt``) give one case.
    Single-object entries (``target_prompt_list`` template, ``target_changes``,
    ``origin_prompt_mask``) give one case per target change, named ``<entry>/<target>``; the
    source phrase is the part of ``origin_prompt`` between the template's prefix and suffix.
    """
    item = _normalise_keys(data)
    original = str(item["origin_prompt"]).strip()
    image = str(resolve_bench_path(str(item["image_path"]), base))
    common: dict[str, Any] = {"image": image, "prompt": original}
    for key in ("reassembly_step", "reinversion_steps"):
        if key in item:
            common[key] = item[key]
    if "prompt_change" in item:
        sources = _as_list(item.get("origin_change"))
        targets = _as_list(item["prompt_change"])
        masks = _as_list(item.get("prompt_change_mask"))
        templates = _as_list(item.get("guided_prompt"))
        if not (len(sources) == len(targets) == len(masks)) or (templates and len(templates) != len(targets)):
            raise SpecError(
                f"{name}: origin_change ({len(sources)}), prompt_change ({len(targets)}), prompt_change_mask "
                f"({len(masks)}) and guided_prompt ({len(templates)}) must list one entry per object"
            )
        edits = []
        for k, (source, target, mask) in enumerate(zip(sources, targets, masks)):
            edit: dict[str, Any] = {
                "source": str(source),
                "target": str(target),
                "mask": str(resolve_bench_path(str(mask), base)),
            }
            if templates:
                template = _as_list(templates[k])
                if len(template) != 2:
                    raise SpecError(f"{name}: guided_prompt {k + 1} must be [prefix, suffix]")
                edit["guided_prompt"] = f"{template[0]}{target}{template[1]}"
            edits.append(edit)
        spec = dict(common, edits=edits)
        if item.get("target_prompt"):
            spec["target_prompt"] = str(item["target_prompt"]).strip()
        return [(name, spec)]
    if "target_changes" in item:
        template = _as_list(item.get("target_prompt_list"))
        if len(template) != 2:
            raise SpecError(f"{name}: target_prompt_list must be [prefix, suffix]")
        prefix, suffix = str(template[0]), str(template[1])
        if not (original.startswith(prefix.strip()) and original.endswith(suffix.strip())):
            raise SpecError(f"{name}: origin_prompt does not start with {prefix!r} and end with {suffix!r}")
        source = original[len(prefix.rstrip()) : len(original) - len(suffix.lstrip())].strip()
        mask = str(resolve_bench_path(str(item.get("origin_prompt_mask", "")), base))
        cases = []
        for target in _as_list(item["target_changes"]):
            target_prompt = f"{prefix}{target}{suffix}".strip()
            cases.append(
                (
                    f"{name}/{target}",
                    dict(
                        common,
                        edits=[{"source": source, "target": str(target), "mask": mask}],
                        target_prompt=target_prompt,
                    ),
                )
            )
        return cases
    raise SpecError(f"{name}: OIR-Bench entry without prompt_change or target_changes")


def _is_entry(data: Any) -> bool:
    return _is_our_spec(data) or _is_bench_case(data)


def _file_entries(path: Path) -> list[tuple[str, Any]] | None:
    """``(name, entry)`` of a spec file: one spec / OIR-Bench entry, or a mapping of them; ``None``
    when the file is a mapping but no spec at all (other YAML/JSON in the folder).

    A mapping of entries keeps the entries that are not specs, so that each fails as its own case.

    Raises:
        SpecError: the file cannot be read (:func:`_read_structured`) or is not a mapping.
    """
    data = _read_structured(path)
    if not isinstance(data, Mapping):
        shape = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(
            f"{path}: {shape}, not an edit spec (a mapping with image, prompt and edits, or OIR-Bench "
            "entries)"
        )
    if _is_entry(data):
        return [(path.stem, data)]
    if any(_is_entry(v) for v in data.values()):
        return [(str(k), v) for k, v in data.items()]
    return None


def _expand(name: str, entry: Any, path: Path) -> list[tuple[str, Any]]:
    """Spec mappings of one entry of the spec file ``path`` (an OIR-Bench entry can hold several
    cases; its paths are relative to :func:`bench_base`, a spec's to the file's folder)."""
    if _is_bench_case(entry):
        return bench_cases(name, entry, bench_base(path))
    if not _is_our_spec(entry):
        raise SpecError(
            f"{path}: entry {name!r} is not an edit spec (it needs image, prompt and edits, or "
            "OIR-Bench's image_path and origin_prompt)"
        )
    return [(name, entry)]


def _one_line_error(where: str, error: Exception) -> SpecError:
    """Any error building a case as one line (a value of the wrong type can raise inside a parser)."""
    if isinstance(error, SpecError):
        return error
    return SpecError(f"{where}: {type(error).__name__}: {' '.join(str(error).split())}")


def load_spec_file(path: Path, defaults: Mapping[str, Any] | None = None) -> list[Case]:
    """Every case in one spec file.

    Accepted shapes: one spec (``image``, ``prompt``, ``edits``, ...), a mapping of case name to
    spec, an OIR-Bench config (a mapping of case name to ``image_path``/``origin_prompt``/...), or
    one OIR-Bench entry. Cases that cannot be built come back with ``error`` set. A mapping that is
    no spec at all gives an empty list.

    Raises:
        SpecError: the file cannot be read or is not a mapping (the batch fails it as one case).
    """
    path = Path(path).resolve()
    cases: list[Case] = []
    for name, entry in _file_entries(path) or []:
        try:
            for case_name, mapping in _expand(name, entry, path):
                cases.append(_case(case_name, path, mapping, path.parent, defaults))
        except (ValueError, TypeError) as error:
            cases.append(Case(name, path, error=str(_one_line_error(name, error))))
    return cases


def single_spec(path: Path, overrides: Mapping[str, Any] | None = None) -> EditSpec:
    """The one case of a spec file, with ``overrides`` (fields given on the command line) on top.

    Raises:
        SpecError: the file is unreadable, not a spec, holds several cases, or a field is bad.
    """
    path = Path(path).resolve()
    entries = _file_entries(path)
    if entries is None:
        raise SpecError(f"{path}: not an edit spec (it needs image, prompt and edits)")
    try:
        expanded = [case for name, entry in entries for case in _expand(name, entry, path)]
        if len(expanded) != 1:
            raise SpecError(
                f"{path} holds {len(expanded)} cases: run them with 'oir-edit batch {path.parent}'"
            )
        name, mapping = expanded[0]
        merged = {**_normalise_keys(mapping), **_normalise_keys(overrides or {})}
        return spec_from_mapping(merged, path.parent, name)
    except (ValueError, TypeError) as error:
        raise _one_line_error(str(path), error) from None


def _case(name: str, source: Path, mapping: Mapping[str, Any], base: Path, defaults: Any) -> Case:
    try:
        return Case(name, source, spec=spec_from_mapping(mapping, base, name, defaults))
    except (ValueError, TypeError) as error:
        return Case(name, source, error=str(_one_line_error(name, error)))


def safe_case_dir(name: str) -> Path:
    """Relative output folder of a case: its name with ``/`` kept as sub-folders, odd characters ``_``."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", part).strip("._") or "case" for part in name.split("/")]
    return Path(*parts)


def discover_cases(
    directory: Path, defaults: Mapping[str, Any] | None = None, exclude: Iterable[Path] = ()
) -> list[Case]:
    """Every case in the spec files under ``directory`` (recursive, sorted, hidden folders skipped).

    Files that are not specs (other YAML/JSON) are ignored; paths under ``exclude`` (e.g. the
    output folder) are never read. Case names must be unique: a clash is reported as a failing
    case rather than silently overwriting another case's output.
    """
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise SpecError(f"batch folder {directory} does not exist or is not a folder")
    excluded = [Path(p).resolve() for p in exclude]
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.suffix.lower() in SPEC_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        and not any(p == e or e in p.parents for e in excluded)
    )
    cases: list[Case] = []
    seen: dict[Path, Path] = {}
    for path in files:
        try:
            found = load_spec_file(path, defaults)
        except SpecError as error:
            cases.append(Case(path.stem, path, error=str(error)))
            continue
        for case in found:
            key = safe_case_dir(case.name)
            if key in seen:
                case = Case(case.name, path, error=f"{case.name}: case name also used in {seen[key]}")
            else:
                seen[key] = path
            cases.append(case)
    return cases


# --------------------------------------------------------------------------------------------------
# Local validation (no server, no torch needed for the file checks)


UPLOAD_SUBFOLDER = "oir-edit"
"""Subfolder of ComfyUI's input folder that ``oir-edit`` uploads into."""


@dataclass(frozen=True)
class LocalCheck:
    """What local validation learnt about a spec, and the files to upload.

    Attributes:
        image_size: the source image's ``(width, height)`` as the user gave it (and as
            ``edited.png`` is written).
        mask_sizes: each mask file's ``(width, height)``.
        plan: the prompts.
        uploads: per local file, the 8-bit PNG ComfyUI gets (``oir_cli/pictures.py``'s rules) and its
            content-addressed upload name.
        padded_size: the size ComfyUI works at: ``image_size`` rounded up to multiples of 8.
        mask_rules: per mask, ``"alpha"`` or ``"luminance"``: what it was read by.
        reassembly: ``(R, r)`` the reassembly will use (``-1``, auto, resolved).
    """

    image_size: tuple[int, int]
    mask_sizes: tuple[tuple[int, int], ...]
    plan: PromptPlan
    uploads: Mapping[Path, tuple[str, bytes]] = field(default_factory=dict)
    padded_size: tuple[int, int] = (0, 0)
    mask_rules: tuple[str, ...] = ()
    reassembly: tuple[int, int] = (0, 0)

    def upload_value(self, path: Path) -> str:
        """The LoadImage value of an uploaded file."""
        return f"{UPLOAD_SUBFOLDER}/{self.uploads[path][0]}"


def _open_image(path: Path, what: str) -> Any:
    try:
        return pictures.open_file(path, what)
    except pictures.PictureError as error:
        raise SpecError(str(error)) from None


def validate_local(spec: EditSpec) -> LocalCheck:
    """Check everything that needs no server; raise :class:`SpecError` with one line otherwise.

    Files exist and are images at least ``MIN_IMAGE_SIDE`` pixels on each side; each mask has the
    image's aspect ratio (masks may have another resolution: the nodes resize them), is read by the
    documented rule and is not empty; every source phrase occurs in the prompt (the same matching as
    the Guided Prompt Builder node); targets are given and differ from their sources; step settings
    are consistent. Also prepares the uploads: every file as the 8-bit PNG a person would see,
    padded to a multiple of 8 (``oir_cli/pictures.py``).
    """
    where = spec.name
    image = _open_image(spec.image, f"{where}: image")
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise SpecError(
            f"{where}: image {spec.image} is {width}x{height}: OIR needs at least {MIN_IMAGE_SIDE} "
            f"pixels on each side ({MIN_IMAGE_SIDE // LATENT_FACTOR} latent cells); "
            "use a larger image (SD models work best from 512 on)"
        )
    padded = pictures.padded_size(width, height)
    prepared: dict[Path, bytes] = {
        spec.image: pictures.png_bytes(pictures.pad_picture(pictures.as_seen(image), padded))
    }
    mask_sizes, rules, grid_masks = [], [], []
    for index, edit in enumerate(spec.edits, 1):
        label = f"{where}: mask of edit {index} ({edit.source} -> {edit.target})"
        mask = _open_image(edit.mask, label)
        mask_w, mask_h = mask.size
        if abs((mask_w / mask_h) / (width / height) - 1.0) > ASPECT_TOLERANCE:
            raise SpecError(
                f"{label} is {mask_w}x{mask_h} but the image is {width}x{height}: the aspect ratios differ "
                "(a mask of another image?)"
            )
        try:
            reading = pictures.read_mask(mask, f"{label} {edit.mask}")
        except pictures.PictureError as error:
            raise SpecError(str(error)) from None
        on_grid = pictures.mask_on_grid(reading.values, (width, height), padded)
        grid_masks.append(on_grid)
        prepared[edit.mask] = pictures.png_bytes(on_grid)
        mask_sizes.append((mask_w, mask_h))
        rules.append(reading.rule)
    for index, net in enumerate(spec.controlnets, 1):
        if net.hint is not None:
            hint = pictures.as_seen(_open_image(net.hint, f"{where}: hint of controlnet {index}"))
            if hint.size == (width, height):
                hint = pictures.pad_picture(hint, padded)
            prepared[net.hint] = pictures.png_bytes(hint)
    try:
        plan = build_prompts(
            spec.prompt,
            [EditPairText(e.source, e.target, e.occurrence, e.guided_prompt) for e in spec.edits],
            spec.target_prompt,
        )
    except OIRInputError as error:
        raise SpecError(f"{where}: {_cli_words(str(error))}") from None
    reassembly = _check_numbers(spec)
    _check_masks_on_grid(spec, grid_masks)
    uploads = {path: (upload_name(path, data), data) for path, data in prepared.items()}
    return LocalCheck((width, height), tuple(mask_sizes), plan, uploads, padded, tuple(rules), reassembly)


def _check_masks_on_grid(spec: EditSpec, masks: Sequence[Any]) -> None:
    """The masks at the latent grid, by the rule the reassembly uses (``oir_core.regions``, NumPy).

    ``masks``: the ``L`` masks as uploaded (on the padded image's pixel grid). Empty cells, a pair
    wholly covered by a later one, overlaps under ``overlap: error``: refused here, before anything
    is queued (the search node would refuse them only after the inversion).
    """
    arrays = [np.asarray(mask, dtype=np.float32) / 255.0 for mask in masks]
    width, height = masks[0].size
    grid = (height // LATENT_FACTOR, width // LATENT_FACTOR)
    names = [
        f"mask of edit {k} ({e.source} -> {e.target}, {e.mask.name})" for k, e in enumerate(spec.edits, 1)
    ]
    try:
        exclusive_regions(arrays, grid, spec.overlap, names, spec.mask_geometry)
    except OIRInputError as error:
        raise SpecError(f"{spec.name}: {_cli_words(str(error))}") from None


def _cli_words(message: str) -> str:
    """An engine error, with its 'OIR: input 'pairs[0].source'' wording mapped to edit numbers."""
    message = re.sub(r"pairs\[(\d+)\]\.(\w+)", lambda m: f"edit {int(m.group(1)) + 1} {m.group(2)}", message)
    return message.removeprefix("OIR: ")


def _check_numbers(spec: EditSpec) -> tuple[int, int]:
    """Step settings, with the engine's own validators (``oir_core.steps``, plain Python).

    Returns the reassembly's ``(R, r)`` with auto (-1) resolved.
    """
    where = spec.name
    if spec.steps < 2:
        raise SpecError(f"{where}: steps = {spec.steps}: OIR needs at least 2 steps (the paper uses 50)")
    if not (math.isfinite(spec.cfg) and spec.cfg > 0):
        raise SpecError(f"{where}: cfg = {spec.cfg}: must be positive and finite (the paper uses 7.5)")
    if not 0.0 <= spec.editing_weight <= 1.0:
        raise SpecError(f"{where}: editing_weight = {spec.editing_weight}: must lie in 0..1")
    if spec.max_batch < 0:
        raise SpecError(f"{where}: max_batch = {spec.max_batch}: must be 0 (auto) or more")
    try:
        reassembly = validate_reassembly(spec.steps, spec.reassembly_step, spec.reinversion_steps)
        validate_background(spec.background, spec.feather)
        if spec.search_mode == "custom":
            parse_steps(spec.custom_steps or f"1-{spec.steps}", spec.steps)
        if spec.search_mode == "coarse_to_fine":
            coarse_steps(spec.steps, spec.coarse_stride)
            if spec.refine_radius < 0:
                raise OIRInputError("refine_radius", spec.refine_radius, "must not be negative", "use e.g. 2")
        parse_step_overrides(spec.step_override, len(spec.edits), spec.steps)
    except OIRInputError as error:
        raise SpecError(f"{where}: {_cli_words(str(error))}") from None
    return reassembly


# --------------------------------------------------------------------------------------------------
# Workflows: load the shipped API templates and fill them


def load_template(name: str = BASE_TEMPLATE) -> dict[str, Any]:
    """A fresh copy of a shipped API-format workflow (``oir_cli/workflows/<name>.api.json``)."""
    path = WORKFLOW_DIR / f"{name}.api.json"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".api.json") for p in WORKFLOW_DIR.glob("*.api.json"))
        raise SpecError(f"no shipped workflow {name!r} (known: {', '.join(known)})")
    return json.loads(path.read_text(encoding="utf-8"))


def upload_name(path: Path, data: bytes) -> str:
    """Content-addressed name for uploading ``data`` read from ``path`` (``<sha1 prefix>_<stem>.png``).

    The hash covers the prepared bytes, so cases never clash and an unchanged file is not sent twice.
    """
    digest = hashlib.sha1(data).hexdigest()[:12]
    return f"{digest}_{re.sub(r'[^A-Za-z0-9._-]+', '_', Path(path).stem)}.png"


def nodes_of(workflow: Mapping[str, Any], class_type: str) -> list[str]:
    """Ids of the nodes of one class, in numeric order."""
    return sorted((i for i, n in workflow.items() if n["class_type"] == class_type), key=_id_key)


def _id_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


def _one(workflow: Mapping[str, Any], class_type: str) -> str:
    found = nodes_of(workflow, class_type)
    if len(found) != 1:
        raise SpecError(f"the workflow template needs exactly one {class_type} node (found {len(found)})")
    return found[0]


def _next_id(workflow: Mapping[str, Any]) -> str:
    return str(max((int(i) for i in workflow if i.isdigit()), default=0) + 1)


def _consumers(workflow: Mapping[str, Any], link: Sequence[Any]) -> list[tuple[str, str]]:
    """``(node id, input name)`` of every input linked to ``link`` (``[node id, output slot]``)."""
    source = [str(link[0]), int(link[1])]
    return [
        (node_id, name)
        for node_id, node in workflow.items()
        for name, value in node["inputs"].items()
        if isinstance(value, list) and len(value) == 2 and [str(value[0]), int(value[1])] == source
    ]


def _rewire(workflow: dict[str, Any], old: list[Any], new: list[Any], skip: Iterable[str]) -> None:
    skipped = set(skip)
    for node_id, name in _consumers(workflow, old):
        if node_id not in skipped:
            workflow[node_id]["inputs"][name] = list(new)


def pair_chain(workflow: Mapping[str, Any]) -> list[str]:
    """OIR Edit Pair ids in chain order (the first has no ``edit_pairs`` input)."""
    pairs = nodes_of(workflow, "OIREditPair")
    previous = {p: workflow[p]["inputs"].get("edit_pairs") for p in pairs}
    heads = [p for p in pairs if previous[p] is None]
    if len(heads) != 1:
        raise SpecError("the workflow template's OIR Edit Pairs do not form one chain")
    chain = heads
    while True:
        following = [p for p in pairs if previous[p] is not None and str(previous[p][0]) == chain[-1]]
        if not following:
            return chain
        chain.append(following[0])


def fill_workflow(
    template: Mapping[str, Any],
    spec: EditSpec,
    uploads: Mapping[Path, str],
    *,
    model_loader: str = "CheckpointLoaderSimple",
    scorer: str | None = None,
    filename_prefix: str | None = None,
) -> dict[str, Any]:
    """The API-format graph that runs ``spec``: a copy of ``template`` with every value filled.

    Edit pairs are added or removed to match ``spec.edits`` (each with its own LoadImageMask),
    LoRAs are inserted between the checkpoint loader and every MODEL/CLIP consumer, ControlNets
    between the Guided Prompt Builder's original/target outputs and every consumer (target as
    positive, original as negative). The template is not modified.

    Args:
        uploads: server-side name of every local file of the spec (``spec.files()``).
        model_loader: class of the node that replaces CheckpointLoaderSimple (same ``ckpt_name``
            input and MODEL, CLIP, VAE outputs).
        scorer: CLIP scorer name when ``spec.scorer`` is ``None``.
        filename_prefix: SaveImage prefix (default ``oir-edit/<case>``).
    """
    graph: dict[str, Any] = copy.deepcopy(dict(template))
    loader = _one(graph, "CheckpointLoaderSimple")
    graph[loader]["class_type"] = model_loader
    graph[loader]["inputs"]["ckpt_name"] = spec.checkpoint
    graph[loader]["_meta"] = {"title": "Load Checkpoint"}

    encode = _one(graph, "VAEEncode")
    source_image = str(graph[encode]["inputs"]["pixels"][0])
    graph[source_image]["inputs"]["image"] = uploads[spec.image]

    builder = _one(graph, "OIRGuidedPromptBuilder")
    chain = pair_chain(graph)
    masks = {p: str(graph[p]["inputs"]["mask"][0]) for p in chain}
    for extra in chain[len(spec.edits) :]:
        del graph[extra], graph[masks[extra]]
    chain = chain[: len(spec.edits)]
    while len(chain) < len(spec.edits):
        mask_id = _next_id(graph)
        graph[mask_id] = {"class_type": "LoadImageMask", "inputs": {}, "_meta": {}}
        pair_id = _next_id(graph)
        graph[pair_id] = {"class_type": "OIREditPair", "inputs": {"mask": [mask_id, 0]}, "_meta": {}}
        masks[pair_id] = mask_id
        chain.append(pair_id)
    for k, (pair_id, edit) in enumerate(zip(chain, spec.edits)):
        mask_id = masks[pair_id]
        graph[mask_id]["inputs"] = {"image": uploads[edit.mask], "channel": MASK_CHANNEL}
        graph[mask_id]["_meta"] = {"title": f"Mask: {edit.source}"}
        inputs: dict[str, Any] = {
            "source": edit.source,
            "target": edit.target,
            "occurrence": edit.occurrence or 0,
            "guided_prompt": edit.guided_prompt or "",
            "mask": [mask_id, 0],
        }
        if k:
            inputs["edit_pairs"] = [chain[k - 1], 0]
        graph[pair_id]["inputs"] = inputs
        graph[pair_id]["_meta"] = {"title": f"Edit pair {k + 1}: {edit.source} -> {edit.target}"}
    graph[builder]["inputs"].update(
        original_prompt=spec.prompt, target_prompt=spec.target_prompt or "", edit_pairs=[chain[-1], 0]
    )

    inversion = _one(graph, "OIRDDIMInversion")
    graph[inversion]["inputs"].update(steps=spec.steps, scheduler=spec.scheduler, convention=spec.convention)
    scorer_node = _one(graph, "OIRLoadCLIPScorer")
    graph[scorer_node]["inputs"].update(
        clip_name=spec.scorer or scorer,
        backend=spec.scorer_backend,
        device=spec.scorer_device,
        precision=spec.scorer_precision,
        editing_weight=spec.editing_weight,
        attention_mode=spec.attention_mode,
        fidelity_space=spec.fidelity_space,
        mask_geometry=spec.mask_geometry,
    )
    search = _one(graph, "OIRParallelStepSearch")
    graph[search]["inputs"].update(
        cfg=spec.cfg,
        search_mode=spec.search_mode,
        custom_steps=spec.custom_steps or f"1-{spec.steps}",
        coarse_stride=spec.coarse_stride,
        refine_radius=spec.refine_radius,
        max_batch=spec.max_batch,
    )
    metric = _one(graph, "OIRMaskMetricScorer")
    graph[metric]["inputs"].update(step_override=spec.step_override)
    reassembly = _one(graph, "OIRObjectReassembly")
    graph[reassembly]["inputs"].update(
        cfg=spec.cfg,
        reassembly_step=spec.reassembly_step,
        reinversion_steps=spec.reinversion_steps,
        overlap=spec.overlap,
        max_batch=spec.max_batch,
        mask_geometry=spec.mask_geometry,
        background=spec.background,
        feather=spec.feather,
    )
    for save in nodes_of(graph, "SaveImage"):
        graph[save]["inputs"]["filename_prefix"] = filename_prefix or f"oir-edit/{safe_case_dir(spec.name)}"

    model, clip = [loader, 0], [loader, 1]
    for lora in spec.loras:
        lora_id = _next_id(graph)
        graph[lora_id] = {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": lora.name,
                "strength_model": lora.strength_model,
                "strength_clip": lora.strength_clip,
            },
            "_meta": {"title": "Load LoRA"},
        }
        _rewire(graph, model, [lora_id, 0], skip=[lora_id])
        _rewire(graph, clip, [lora_id, 1], skip=[lora_id])
        graph[lora_id]["inputs"].update(model=model, clip=clip)
        model, clip = [lora_id, 0], [lora_id, 1]

    positive, negative = [builder, 1], [builder, 0]
    for net in spec.controlnets:
        loader_id = _next_id(graph)
        graph[loader_id] = {
            "class_type": "ControlNetLoader",
            "inputs": {"control_net_name": net.name},
            "_meta": {"title": "Load ControlNet Model"},
        }
        apply_id = _next_id(graph)
        graph[apply_id] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {},
            "_meta": {"title": "Apply ControlNet"},
        }
        if net.hint is not None:
            hint_id = _next_id(graph)
            graph[hint_id] = {
                "class_type": "LoadImage",
                "inputs": {"image": uploads[net.hint]},
                "_meta": {"title": "Control hint"},
            }
            hint: list[Any] = [hint_id, 0]
        else:
            hint = [source_image, 0]
        _rewire(graph, positive, [apply_id, 0], skip=[apply_id])
        _rewire(graph, negative, [apply_id, 1], skip=[apply_id])
        graph[apply_id]["inputs"] = {
            "strength": net.strength,
            "start_percent": net.start_percent,
            "end_percent": net.end_percent,
            "positive": positive,
            "negative": negative,
            "control_net": [loader_id, 0],
            "image": hint,
            "vae": [loader, 2],
        }
        positive, negative = [apply_id, 0], [apply_id, 1]
    return graph


def describe_nodes(workflow: Mapping[str, Any]) -> dict[str, str]:
    """``node id -> title`` for progress messages."""
    return {i: str(n.get("_meta", {}).get("title") or n["class_type"]) for i, n in workflow.items()}
