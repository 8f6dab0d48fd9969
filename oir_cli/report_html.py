"""``oir-edit report OUT``: a finished batch folder as one offline HTML page and a ``metrics.csv``.

It reads what ``oir-edit batch`` wrote (``batch_report.json`` and each case's ``report.json``,
``edited.png``; the source image and masks at the paths ``report.json`` records) and writes:

- ``OUT/report.html``: one self-contained file (no scripts, fonts or links outside it; pictures
  embedded as small base64 JPEG/PNG thumbnails, so 500 cases stay a few MB): the batch averages,
  a histogram of the chosen steps per pair, and a contact sheet with per case the source, each
  pair's mask, the edited image, each pair's score curves (inline SVG, chosen step marked) and
  its background fidelity and the edited regions' CLIP score;
- ``OUT/metrics.csv``: one row per case: status, pairs, chosen steps, PSNR/MSE/SSIM between
  source and edit outside every mask (``oir_cli/fidelity.py``, PIE-Bench's definitions) and the
  final image's CLIP score inside each pair's mask.

The CLIP score is the one ``report.json`` records per pair as ``final_clip_score``: OIR Edit
Region Score's value, computed in the ComfyUI run of the edit with the search's scorer (the
search metric's ``S_e`` of the final image, a raw cosine: not PIE-Bench's CLIPScore, which scales
by 100 and crops). A case's value is the mean over its pairs.

Averages are plain means over the cases that have the metric, in the units PIE-Bench's tables
use (PSNR in dB, MSE x 10^4, SSIM x 10^2); the CLIP score's batch average is the mean of the
cases' values.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image

from . import pictures
from .cli import EXIT_OK
from .fidelity import BackgroundFidelity, background_fidelity, background_mask, read_object_mask
from .results import BATCH_REPORT_NAME, REPORT_NAME, safe_case_dir
from .specs import SpecError

__all__ = [
    "METRICS_NAME",
    "PAGE_NAME",
    "CaseView",
    "collect_cases",
    "run_report_command",
    "write_report_files",
]

PAGE_NAME = "report.html"
METRICS_NAME = "metrics.csv"
THUMBNAIL_SIDE = 128
"""Longest side of an embedded picture, in pixels (the page never carries full images)."""
JPEG_QUALITY = 80
CURVE_SIZE = (200, 80)
"""Width and height of one score-curve SVG."""
SERIES = (("combined", "#1f5fbf", "combined"), ("editing_norm", "#2e8b3a", "editing"),
          ("fidelity_norm", "#c2410c", "fidelity"))  # fmt: skip
"""Score-table columns drawn per pair: key in the table, colour, legend word."""

CSV_COLUMNS = (
    "case",
    "status",
    "pairs",
    "chosen_steps",
    "background_fraction",
    "psnr_db",
    "mse",
    "ssim",
    "final_clip_score",
    "final_clip_scores",
    "note",
)


@dataclass
class Thumb:
    """An embedded picture: its data URI and displayed size."""

    uri: str
    width: int
    height: int
    label: str


@dataclass
class CaseView:
    """One case of the batch as the page and the CSV show it."""

    name: str
    status: str
    """``done``/``skipped`` (finished, has ``report.json``) or ``failed``."""
    folder: Path
    report: dict[str, Any] | None = None
    error: str | None = None
    fidelity: BackgroundFidelity | None = None
    note: str = ""
    """Why a metric or picture is missing (empty when nothing is)."""
    source: Thumb | None = None
    masks: list[Thumb] = field(default_factory=list)
    edited: Thumb | None = None

    @property
    def finished(self) -> bool:
        return self.report is not None

    def pairs(self) -> list[dict[str, Any]]:
        return list((self.report or {}).get("pairs", []))

    def chosen_steps(self) -> list[int]:
        return [int(p["chosen_step"]) for p in self.pairs()]

    def final_clip_scores(self) -> list[float] | None:
        """Each pair's CLIP score of the final image (``report.json``), or ``None`` when a pair lacks it."""
        values = [p.get("final_clip_score") for p in self.pairs()]
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]

    def final_clip_score(self) -> float | None:
        """The case's CLIP score: the mean over its pairs (``None`` when not recorded)."""
        values = self.final_clip_scores()
        return None if values is None else float(np.mean(values))


# --------------------------------------------------------------------------------------------------
# Reading the batch folder


def _listed_cases(out_dir: Path) -> list[tuple[str, str, Path, str | None]]:
    """``(name, status, folder, error)`` from ``batch_report.json``, else every folder with a report."""
    summary_path = out_dir / BATCH_REPORT_NAME
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
            return [
                (str(c["name"]), str(c["status"]), out_dir / safe_case_dir(str(c["name"])), c.get("error"))
                for c in summary["cases"]
            ]
        except (ValueError, KeyError, TypeError) as error:
            raise SpecError(
                f"{summary_path} is not a batch report ({type(error).__name__}: {error}): "
                "run `oir-edit batch` into this folder again (finished cases are kept)"
            ) from None
    found = []
    for path in sorted(out_dir.rglob(REPORT_NAME)):
        folder = path.parent
        name = folder.relative_to(out_dir).as_posix() if folder != out_dir else folder.name
        found.append((name, "done", folder, None))
    return found


def collect_cases(out_dir: Path, side: int = THUMBNAIL_SIDE) -> list[CaseView]:
    """Every case of the batch in ``out_dir``, with its thumbnails and background fidelity.

    Raises:
        SpecError: ``out_dir`` is not a folder, or holds no batch report and no case report.
    """
    if not out_dir.is_dir():
        raise SpecError(f"{out_dir} is not a folder: give the --out folder of `oir-edit batch`")
    listed = _listed_cases(out_dir)
    if not listed:
        raise SpecError(
            f"{out_dir} holds no {BATCH_REPORT_NAME} and no case folder with {REPORT_NAME}: give the --out "
            "folder of a finished `oir-edit batch`"
        )
    return [_case_view(name, status, folder, error, side) for name, status, folder, error in listed]


def _case_view(name: str, status: str, folder: Path, error: str | None, side: int) -> CaseView:
    view = CaseView(name, status, folder, error=error)
    report_path = folder / REPORT_NAME
    if not report_path.is_file():
        if status != "failed":
            view.note = f"no {REPORT_NAME} in {folder}"
        return view
    try:
        view.report = json.loads(report_path.read_text(encoding="utf-8"))
    except ValueError as problem:
        view.note = f"{report_path} is not JSON ({problem})"
        return view
    report = view.report
    assert report is not None
    notes = []
    edited_image = None
    edited_names = report.get("outputs", {}).get("edited", [])
    if edited_names:
        try:
            edited_image = pictures.open_file(folder / edited_names[0], "edited image").convert("RGB")
            view.edited = _thumb(edited_image, side, "edited")
        except pictures.PictureError as problem:
            notes.append(str(problem))
    else:
        notes.append("report.json lists no edited image")
    spec = report.get("spec", {})
    source_image = None
    try:
        source_image = pictures.as_seen(pictures.open_file(Path(spec["image"]), "source image"))
        view.source = _thumb(source_image, side, "source")
    except (pictures.PictureError, KeyError) as problem:
        notes.append(f"{problem}" if not isinstance(problem, KeyError) else "report.json has no spec.image")
    objects = []
    if source_image is not None:
        for k, edit in enumerate(spec.get("edits", []), 1):
            label = f"mask {k}: {edit.get('source')} -> {edit.get('target')}"
            try:
                mask = read_object_mask(Path(edit["mask"]), source_image.size, label)
            except (SpecError, KeyError) as problem:
                notes.append(str(problem))
                continue
            objects.append(mask)
            view.masks.append(_thumb(Image.fromarray(mask.astype(np.uint8) * 255, mode="L"), side, label))
    if (
        source_image is not None
        and edited_image is not None
        and objects
        and len(objects) == len(spec.get("edits", []))
    ):
        try:
            view.fidelity = background_fidelity(
                np.asarray(source_image), np.asarray(edited_image), background_mask(objects)
            )
        except SpecError as problem:
            notes.append(str(problem))
    view.note = "; ".join(notes)
    return view


def _thumb(image: Image.Image, side: int, label: str) -> Thumb:
    """``image`` shrunk to at most ``side`` pixels a side: JPEG for pictures, PNG for masks."""
    small = image.copy()
    is_mask = image.mode == "L"
    small.thumbnail((side, side), Image.Resampling.NEAREST if is_mask else Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if is_mask:
        small.save(buffer, format="PNG", optimize=True)
        kind = "png"
    else:
        small.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY)
        kind = "jpeg"
    uri = f"data:image/{kind};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
    return Thumb(uri, small.size[0], small.size[1], label)


# --------------------------------------------------------------------------------------------------
# Numbers


def averages(cases: Sequence[CaseView]) -> dict[str, float | int]:
    """Batch means of the background metrics in PIE-Bench's units, and how many cases they cover."""
    measured = [c.fidelity for c in cases if c.fidelity is not None]
    if not measured:
        return {"cases": 0}
    return {
        "cases": len(measured),
        "psnr_db": float(np.mean([f.psnr for f in measured])),
        "mse_e4": float(np.mean([f.mse for f in measured])) * 1e4,
        "ssim_e2": float(np.mean([f.ssim for f in measured])) * 1e2,
    }


def clip_average(cases: Sequence[CaseView]) -> tuple[int, float | None]:
    """How many cases recorded the final image's CLIP score, and the mean of their values."""
    scored = [value for c in cases if (value := c.final_clip_score()) is not None]
    return len(scored), (float(np.mean(scored)) if scored else None)


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return "inf" if math.isinf(value) else f"{value:.8g}"


def metrics_rows(cases: Iterable[CaseView]) -> list[dict[str, str]]:
    """One CSV row per case (raw values: MSE and SSIM not scaled)."""
    rows = []
    for case in cases:
        fid = case.fidelity
        pairs = "; ".join(f"{p.get('source')} -> {p.get('target')}" for p in case.pairs())
        note = case.note or (_one_line(case.error) if case.error else "")
        rows.append(
            {
                "case": case.name,
                "status": case.status,
                "pairs": pairs,
                "chosen_steps": " ".join(str(s) for s in case.chosen_steps()),
                "background_fraction": _number(fid.background_fraction if fid else None),
                "psnr_db": _number(fid.psnr if fid else None),
                "mse": _number(fid.mse if fid else None),
                "ssim": _number(fid.ssim if fid else None),
                "final_clip_score": _number(case.final_clip_score()),
                "final_clip_scores": " ".join(_number(v) for v in case.final_clip_scores() or []),
                "note": note,
            }
        )
    return rows


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


# --------------------------------------------------------------------------------------------------
# The page


def _fmt(value: float, digits: int = 2) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def _svg_open(css_class: str, width: int, height: int, title: str) -> str:
    return (
        f'<svg class="{css_class}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img"><title>{html.escape(title)}</title>'
    )


def score_curve_svg(entry: Mapping[str, Any], title: str) -> str:
    """One pair's normalised score curves over its steps, the chosen step marked (inline SVG)."""
    table = entry.get("table", {})
    steps = [int(s) for s in table.get("steps", [])]
    width, height = CURVE_SIZE
    pad = 6
    if not steps:
        return _svg_open("curve", width, height, f"{title}: no scores") + "</svg>"
    low, high = min(steps), max(steps)

    def x(step: float) -> float:
        return pad + (step - low) / max(high - low, 1) * (width - 2 * pad)

    def y(value: float) -> float:
        return height - pad - min(max(value, 0.0), 1.0) * (height - 2 * pad)

    chosen = int(entry.get("chosen", table.get("chosen_step", steps[0])))
    parts = [
        _svg_open("curve", width, height, f"{title}: chosen step {chosen}"),
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fff" stroke="#ccc"/>',
        f'<line x1="{x(chosen):.1f}" y1="{pad}" x2="{x(chosen):.1f}" y2="{height - pad}" stroke="#888" '
        'stroke-dasharray="3 2"/>',
    ]
    for key, colour, _ in SERIES:
        values = table.get(key, [])
        points = " ".join(
            f"{x(s):.1f},{y(float(v)):.1f}"
            for s, v in zip(steps, values)
            if v is not None and math.isfinite(float(v))
        )
        if points:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{points}"/>')
    combined = table.get("combined", [])
    if chosen in steps and steps.index(chosen) < len(combined):
        value = float(combined[steps.index(chosen)])
        parts.append(f'<circle cx="{x(chosen):.1f}" cy="{y(value):.1f}" r="3" fill="{SERIES[0][1]}"/>')
    parts.append(
        f'<text x="{width - pad}" y="{pad + 8}" text-anchor="end" font-size="10">t = {chosen}</text></svg>'
    )
    return "".join(parts)


def histogram_svg(counts: Mapping[int, int], steps: int, title: str) -> str:
    """Bars of how many cases chose each step ``1..steps`` (inline SVG)."""
    width, height, pad = 420, 120, 18
    top = max(counts.values(), default=0) or 1
    bar = (width - 2 * pad) / max(steps, 1)
    parts = [
        _svg_open("histogram", width, height, title),
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#666"/>',
    ]
    for step in range(1, steps + 1):
        count = counts.get(step, 0)
        if count:
            tall = count / top * (height - 2 * pad)
            parts.append(
                f'<rect x="{pad + (step - 1) * bar + 0.5:.1f}" y="{height - pad - tall:.1f}" '
                f'width="{max(bar - 1, 0.5):.1f}" height="{tall:.1f}" fill="#1f5fbf">'
                f"<title>step {step}: {count} case{'s' if count != 1 else ''}</title></rect>"
            )
    parts.append(f'<text x="{pad}" y="{height - 4}" font-size="10">1</text>')
    parts.append(f'<text x="{width - pad}" y="{height - 4}" font-size="10" text-anchor="end">{steps}</text>')
    parts.append(f'<text x="{pad}" y="{pad - 6}" font-size="10">{top} max</text></svg>')
    return "".join(parts)


def _img(thumb: Thumb) -> str:
    label = html.escape(thumb.label)
    return (
        f'<figure><img src="{thumb.uri}" width="{thumb.width}" height="{thumb.height}" alt="{label}" '
        f'decoding="async"><figcaption>{label}</figcaption></figure>'
    )


_STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px} h2{font-size:16px;margin-top:24px}
table.summary{border-collapse:collapse}
table.summary td,table.summary th{border:1px solid #ccc;padding:3px 8px}
.case{display:flex;gap:10px;align-items:flex-start;flex-wrap:wrap;border-top:1px solid #ddd;padding:8px 0;
content-visibility:auto;contain-intrinsic-size:auto 170px}
.case h3{font-size:13px;margin:0;width:180px;overflow-wrap:anywhere}
figure{margin:0;text-align:center} figcaption{font-size:10px;color:#555;max-width:128px}
.failed h3{color:#b00} .note{color:#a15c00;font-size:11px;max-width:520px}
.metrics{font-size:12px;min-width:150px} .legend span{margin-right:10px}
.histograms{display:flex;flex-wrap:wrap;gap:16px}
"""


def render_page(out_dir: Path, cases: Sequence[CaseView]) -> str:
    """The whole HTML document (self-contained)."""
    finished = [c for c in cases if c.finished]
    failed = [c for c in cases if c.status == "failed"]
    means = averages(cases)
    head = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>OIR batch report: "
        f"{html.escape(out_dir.name)}</title><style>{_STYLE}</style></head><body>"
    )
    body = [f"<h1>OIR batch report: {html.escape(str(out_dir))}</h1>"]
    body.append(
        f"<p>{len(cases)} cases: {len(finished)} finished, {len(failed)} failed, "
        f"{len(cases) - len(finished) - len(failed)} without a report.</p>"
    )
    body.append("<h2>Background fidelity (outside every mask, PIE-Bench's definitions)</h2>")
    if means["cases"]:
        body.append(
            "<table class='summary'><tr><th>cases measured</th><th>PSNR (dB) ↑</th><th>MSE ×10⁴ ↓</th>"
            f"<th>SSIM ×10² ↑</th></tr><tr><td>{means['cases']}</td><td>{_fmt(means['psnr_db'])}</td>"
            f"<td>{_fmt(means['mse_e4'])}</td><td>{_fmt(means['ssim_e2'])}</td></tr></table>"
        )
    else:
        body.append("<p>No case could be measured (see the notes below).</p>")
    body.append("<p class='note'>Means over the measured cases. Not shown: LPIPS (it needs a network).</p>")
    body.append("<h2>Edited regions' CLIP score of the final image</h2>")
    scored, clip_mean = clip_average(cases)
    if clip_mean is not None:
        body.append(
            "<table class='summary'><tr><th>cases scored</th><th>CLIP score ↑</th></tr>"
            f"<tr><td>{scored}</td><td class='clip-mean'>{clip_mean:.4f}</td></tr></table>"
        )
    else:
        body.append("<p>No case recorded it (report.json written before oir-edit scored final images).</p>")
    body.append(
        "<p class='note'>Per pair, the search's editing score S_e of the edited image: the cosine of the "
        "target phrase's CLIP text embedding and the image's embedding with attention restricted to the "
        "pair's mask (the scorer and settings the search ranked with, computed in the same ComfyUI run). "
        "A case's value is the mean over its pairs; the batch's, the mean over the cases.</p>"
    )
    body.append("<h2>Chosen steps per pair</h2><div class='histograms'>")
    for k, (counts, steps) in enumerate(_step_counts(finished), 1):
        body.append(f"<figure>{histogram_svg(counts, steps, f'pair {k}: chosen steps')}"
                    f"<figcaption>pair {k} ({sum(counts.values())} cases)</figcaption></figure>")  # fmt: skip
    body.append("</div><h2>Cases</h2><p class='legend'>Score curves: "
                + "".join(f"<span style='color:{c}'>■ {w}</span>" for _, c, w in SERIES)
                + " (normalised), dashed line and dot: the chosen step.</p>")  # fmt: skip
    for case in cases:
        body.append(_case_html(case))
    return head + "".join(body) + "</body></html>\n"


def _step_counts(cases: Sequence[CaseView]) -> list[tuple[dict[int, int], int]]:
    """Per pair position: ``{step: cases}`` and the largest step count those cases searched."""
    result: list[tuple[dict[int, int], int]] = []
    for case in cases:
        report = case.report or {}
        total = int(report.get("spec", {}).get("steps", 0) or 0)
        for k, step in enumerate(case.chosen_steps()):
            while len(result) <= k:
                result.append(({}, 1))
            counts, most = result[k]
            counts[step] = counts.get(step, 0) + 1
            result[k] = (counts, max(most, total, step))
    return result


def _case_html(case: CaseView) -> str:
    name = html.escape(case.name)
    if not case.finished:
        message = html.escape(_one_line(case.error) or case.note or case.status)
        return (
            f"<section class='case failed'><h3>{name}</h3>"
            f"<p class='note'>{case.status}: {message}</p></section>"
        )
    parts = [f"<section class='case'><h3>{name}</h3>"]
    for thumb in (case.source, *case.masks, case.edited):
        if thumb is not None:
            parts.append(_img(thumb))
    report = case.report or {}
    for k, entry in enumerate(report.get("scores", [])):
        pair = case.pairs()[k] if k < len(case.pairs()) else {}
        title = f"pair {k + 1}: {pair.get('source')} -> {pair.get('target')}"
        parts.append(
            f"<figure>{score_curve_svg(entry, title)}<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    fid = case.fidelity
    steps = ", ".join(str(s) for s in case.chosen_steps())
    metrics = f"chosen steps: {steps}<br>"
    if fid is not None:
        metrics += (
            f"PSNR {_fmt(fid.psnr)} dB<br>MSE×10⁴ {_fmt(fid.mse * 1e4)}<br>"
            f"SSIM×10² {_fmt(fid.ssim * 1e2)}<br>background {fid.background_fraction:.0%}"
        )
    finals = case.final_clip_scores()
    if finals is not None:
        metrics += "<br>CLIP score " + ", ".join(
            f"<span class='clip'>{value:.4f}</span> ({html.escape(str(pair.get('target')))})"
            for value, pair in zip(finals, case.pairs())
        )
    parts.append(f"<div class='metrics'>{metrics}</div>")
    if case.note:
        parts.append(f"<p class='note'>{html.escape(case.note)}</p>")
    parts.append("</section>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# Writing


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8", newline="")
    partial.replace(path)


def write_report_files(out_dir: Path, side: int = THUMBNAIL_SIDE) -> tuple[Path, Path, list[CaseView]]:
    """Write ``report.html`` and ``metrics.csv`` into ``out_dir``; returns their paths and the cases."""
    cases = collect_cases(out_dir, side)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(metrics_rows(cases))
    page, table = out_dir / PAGE_NAME, out_dir / METRICS_NAME
    try:
        _write_atomically(table, buffer.getvalue())
        _write_atomically(page, render_page(out_dir, cases))
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SpecError(f"{out_dir}: cannot write the report there ({reason})") from None
    return page, table, cases


def run_report_command(args: argparse.Namespace, stream: TextIO | None) -> int:
    """``oir-edit report OUT``."""
    if args.thumbnail < 16:
        raise SpecError(f"--thumbnail {args.thumbnail}: give at least 16 (pixels, the longest side)")
    page, table, cases = write_report_files(Path(args.directory), args.thumbnail)
    if stream is not None:
        measured = sum(c.fidelity is not None for c in cases)
        stream.write(
            f"report: {page} ({page.stat().st_size / 1e6:.1f} MB), {table}; {len(cases)} cases, "
            f"{measured} measured\n"
        )
    return EXIT_OK
