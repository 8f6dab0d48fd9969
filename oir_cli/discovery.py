"""Finds the cases of spec files and batch folders: our spec format, and OIR-Bench configs in its terms."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .results import safe_case_dir
from .specs import EditSpec, SpecError, as_list, normalise_keys, resolve_path, spec_from_mapping

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


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
    return resolve_path(str(raw).strip(), base)


def bench_cases(name: str, data: Mapping[str, Any], base: Path) -> list[tuple[str, dict[str, Any]]]:
    """Translate one OIR-Bench config entry into spec mappings (paths already absolute).

    ``base``: the folder relative paths are relative to (:func:`bench_base` of the config file).

    Multi-object entries (``origin_change``, ``prompt_change``, ``prompt_change_mask``,
    ``guided_prompt`` as ``[prefix, suffix]`` templates, ``target_prompt``) give one case.
    Single-object entries (``target_prompt_list`` template, ``target_changes``,
    ``origin_prompt_mask``) give one case per target change, named ``<entry>/<target>``; the
    source phrase is the part of ``origin_prompt`` between the template's prefix and suffix.
    """
    item = normalise_keys(data)
    original = str(item["origin_prompt"]).strip()
    image = str(resolve_bench_path(str(item["image_path"]), base))
    common: dict[str, Any] = {"image": image, "prompt": original}
    for key in ("reassembly_step", "reinversion_steps"):
        if key in item:
            common[key] = item[key]
    if "prompt_change" in item:
        sources = as_list(item.get("origin_change"))
        targets = as_list(item["prompt_change"])
        masks = as_list(item.get("prompt_change_mask"))
        templates = as_list(item.get("guided_prompt"))
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
                template = as_list(templates[k])
                if len(template) != 2:
                    raise SpecError(f"{name}: guided_prompt {k + 1} must be [prefix, suffix]")
                edit["guided_prompt"] = f"{template[0]}{target}{template[1]}"
            edits.append(edit)
        spec = dict(common, edits=edits)
        if item.get("target_prompt"):
            spec["target_prompt"] = str(item["target_prompt"]).strip()
        return [(name, spec)]
    if "target_changes" in item:
        template = as_list(item.get("target_prompt_list"))
        if len(template) != 2:
            raise SpecError(f"{name}: target_prompt_list must be [prefix, suffix]")
        prefix, suffix = str(template[0]), str(template[1])
        if not (original.startswith(prefix.strip()) and original.endswith(suffix.strip())):
            raise SpecError(f"{name}: origin_prompt does not start with {prefix!r} and end with {suffix!r}")
        source = original[len(prefix.rstrip()) : len(original) - len(suffix.lstrip())].strip()
        mask = str(resolve_bench_path(str(item.get("origin_prompt_mask", "")), base))
        cases = []
        for target in as_list(item["target_changes"]):
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
        merged = {**normalise_keys(mapping), **normalise_keys(overrides or {})}
        return spec_from_mapping(merged, path.parent, name)
    except (ValueError, TypeError) as error:
        raise _one_line_error(str(path), error) from None


def _case(name: str, source: Path, mapping: Mapping[str, Any], base: Path, defaults: Any) -> Case:
    try:
        return Case(name, source, spec=spec_from_mapping(mapping, base, name, defaults))
    except (ValueError, TypeError) as error:
        return Case(name, source, error=str(_one_line_error(name, error)))


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
