"""Benchmark 8: what a user waits for, the whole two-object OIR edit against a plain generation.

**Measured** in one process and one run, through the real nodes inside ComfyUI (each node's own
``execute``, the search node seeing the queued prompt as ComfyUI hands it, so it keeps its latents
at the reassembly's ``R``): for each row (model, image size, steps ``T``)

1. a plain generation: CLIP Text Encode (positive, negative), Empty Latent Image, **KSampler**
   (``ddim`` / ``ddim_uniform``, ``T`` steps, cfg 7.5) and VAE Decode on the same model and size;
2. the two-object edit, ``exhaustive`` search: OIR Edit Pair ×2, OIR Guided Prompt Builder, VAE
   Encode, OIR DDIM Inversion, OIR Parallel Step Search, OIR Mask Metric Scorer, OIR Object
   Reassembly (``R``, ``r`` auto: a fifth of ``T`` each), VAE Decode;
3. the same edit with ``coarse_to_fine`` (stride 5, radius 2);
4. the plain generation again (the baseline is the mean of 1 and 4; both are printed).

Each edit's wall time is split into phases (fractions of the edit): prompt encode, VAE encode,
inversion, search UNet (time inside UNet forwards during the search node), candidate decode (the
VAE's ``decode`` during the search), scoring (the scorer's ``score`` calls, in the search's
coarse-to-fine ranking and in the Mask Metric Scorer), previews and bookkeeping (the rest of both
nodes: lockstep bookkeeping, 8-bit storage, the grids and plots), reassembly, final decode.
Time inside the UNet is measured by ComfyUI's ``model_function_wrapper`` (synchronised on CUDA),
the VAE's and scorer's calls by wrapping the objects' methods: nothing of the pack is changed.

Models: random weights, never downloaded. CPU rows: the full SD1.5 architecture (UNet 860 M,
CLIP-L text encoder, AutoencoderKL) at 128² and 256², ``T`` = 20 and 50; the scorer is a
random-weight CLIP of ViT-B/16's architecture (the paper's ``clip-vit-base-patch16``: 224², 16-px
patches, 12 layers) saved to a transformers folder and loaded by OIR Load CLIP Scorer.
``--device cuda``: SD1.5 512² ``T`` = 50 and SDXL 1024² ``T`` = 30 (fp16). ``--tiny``: tiny
SD1.5- and SDXL-architecture models on the CPU (latent 8², ``T`` = 6): proves the script and
prints the call profile (UNet forwards and rows per forward of every phase) the GPU rows would run.

Targets (one run, ratios): coarse-to-fine edit ≤ 5× a plain generation, exhaustive ≤ 15× (CPU
full-size, 256², T = 50). The UNet-row ratio each mode cannot go below is printed beside it.

Run: ``COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_edit_vs_plain.py`` (``--rows
sd15:128:20`` for one row; ``--modes coarse_to_fine`` for one mode).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import torch
from bench_edit import pair_masks, test_image
from benchlib import Metric, fmt_pct, fmt_ratio

CFG = 7.5
STRIDE, RADIUS = 5, 2
MODES = ("exhaustive", "coarse_to_fine")
CPU_ROWS = ("sd15:128:20", "sd15:128:50", "sd15:256:20", "sd15:256:50")
CUDA_ROWS = ("sd15:512:50", "sdxl:1024:30")
TINY_ROWS = ("sd15:64:6", "sdxl:64:6")
TARGETS = {"exhaustive": 15.0, "coarse_to_fine": 5.0}
TARGET_ROW = "sd15:256:50"
"""The row the targets are stated for (CPU, full size)."""

EDIT_PHASES = (
    "prompt encode",
    "VAE encode",
    "inversion",
    "search UNet",
    "candidate decode",
    "scoring",
    "previews + bookkeeping",
    "reassembly",
    "final decode",
)

VIT_B16 = {
    "text": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 8,
    },
    "vision": {
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 224,
        "patch_size": 16,
    },
    "projection_dim": 512,
}
"""``openai/clip-vit-base-patch16``'s architecture (the paper's scorer), from its config.json."""


# --------------------------------------------------------------------------------------------------
# Instruments


@dataclass
class Ledger:
    """Seconds, UNet rows and UNet forwards per phase; ``phase`` is where time now goes."""

    phase: str = "-"
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    device: str = "cpu"

    def reset(self) -> None:
        self.seconds, self.rows, self.calls = defaultdict(float), defaultdict(int), defaultdict(list)

    def timed(self, phase: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` with ``phase`` current; its wall time goes to ``phase`` (less what the
        wrapped UNet, VAE and scorer calls inside attribute to their own phases)."""
        outer, self.phase = self.phase, phase
        benchlib.sync(self.device)
        start = time.perf_counter()
        try:
            return fn()
        finally:
            benchlib.sync(self.device)
            self.seconds[phase] += time.perf_counter() - start
            self.phase = outer

    def inner(self, phase: str, seconds: float) -> None:
        """Move ``seconds`` measured inside the current phase to ``phase``."""
        self.seconds[self.phase] -= seconds
        self.seconds[phase] += seconds


class TimedUnet:
    """ComfyUI ``model_function_wrapper``: counts and times every UNet forward for the ledger.

    ``rename`` maps the phase a forward happens in to the phase it is booked under (the search
    node's forwards are "search UNet"). ComfyUI deep-copies model options when a node clones the
    model: the copy must still book here.
    """

    def __init__(self, ledger: Ledger, rename: dict[str, str]) -> None:
        self.ledger, self.rename = ledger, rename

    def __deepcopy__(self, memo: dict[int, Any]) -> TimedUnet:
        return self

    def __call__(self, apply_model: Callable[..., Any], args: dict[str, Any]) -> Any:
        ledger = self.ledger
        batch = int(args["input"].shape[0])
        benchlib.sync(ledger.device)
        start = time.perf_counter()
        out = apply_model(args["input"], args["timestep"], **args["c"])
        benchlib.sync(ledger.device)
        phase = self.rename.get(ledger.phase, ledger.phase)
        if phase != ledger.phase:
            ledger.inner(phase, time.perf_counter() - start)
        ledger.rows[phase] += batch
        ledger.calls[phase].append(batch)
        return out


def wrap_method(obj: Any, name: str, ledger: Ledger, rename: dict[str, str]) -> None:
    """Shadow ``obj.name`` by a wrapper booking its time under ``rename[current phase]``."""
    method = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        benchlib.sync(ledger.device)
        start = time.perf_counter()
        out = method(*args, **kwargs)
        benchlib.sync(ledger.device)
        phase = rename.get(ledger.phase)
        if phase is not None:
            ledger.inner(phase, time.perf_counter() - start)
        return out

    setattr(obj, name, wrapper)


# --------------------------------------------------------------------------------------------------
# Models


@dataclass
class Models:
    family: str
    model: Any
    clip: Any
    vae: Any
    scorer_name: str
    label: str


def full_text_encoder(family: str, dtype: torch.dtype, seed: int) -> Any:
    """The family's full-size text encoders (SD1.5: CLIP-L; SDXL: CLIP-L + CLIP-G), random weights,
    with ComfyUI's real tokenizers, built as ``comfy.sd`` builds a loaded checkpoint's CLIP."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import tiny_models
    from comfy.supported_models_base import ClipTarget

    target = {
        "sd15": ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel),
        "sdxl": ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel),
    }[family]
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": dtype})
    tiny_models.init_weights_(clip.cond_stage_model, seed)
    return clip


def save_scorer(folder: Path, tiny: bool, seed: int) -> None:
    """A random-weight transformers CLIP folder: ViT-B/16's architecture, or the tests' tiny CLIP."""
    import tiny_clip

    if tiny:
        tiny_clip.make_transformers_clip(folder, seed=seed)
        return
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    special = tiny_clip.write_tiny_tokenizer(folder)  # byte-level: any phrase tokenizes
    config = CLIPConfig(
        text_config={**VIT_B16["text"], "max_position_embeddings": 77, **special},
        vision_config=VIT_B16["vision"],
        projection_dim=VIT_B16["projection_dim"],
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    tiny_clip.spread_weights(model, seed)
    config.save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def register_scorer(root: Path) -> None:
    """Make OIR Load CLIP Scorer list the folders under ``root`` (ComfyUI's folder_paths)."""
    import folder_paths

    scoring = benchlib.pack("nodes.scoring_nodes")
    scoring.register_scorer_folder()
    paths, _ = folder_paths.folder_names_and_paths[scoring.SCORER_FOLDER]
    if str(root) not in paths:
        paths.insert(0, str(root))


def build_models(family: str, tiny: bool, device: str, workdir: Path, seed: int) -> Models:
    import comfy.model_management
    import tiny_models

    scorer_name = "tiny-clip" if tiny else "clip-vit-b16-random"
    if not (workdir / scorer_name).exists():
        save_scorer(workdir / scorer_name, tiny, seed)
    if tiny:
        model = tiny_models.build_tiny_family_model(family, seed=seed)
        clip = tiny_models.build_tiny_family_clip(family, seed=seed + 1)
        vae = tiny_models.build_tiny_family_vae(family, seed=seed + 2)
        return Models(family, model, clip, vae, scorer_name, f"tiny {family.upper()}-arch")
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = tiny_models.build_full_size_unet(
        family,
        dtype,
        comfy.model_management.unet_offload_device(),
        load_device=comfy.model_management.get_torch_device(),
        seed=seed,
    )
    clip = full_text_encoder(family, dtype, seed + 1)
    vae = benchlib.build_vae(True, seed + 2)  # SD1.x and SDXL share the AutoencoderKL architecture
    name = {"sd15": "SD1.5", "sdxl": "SDXL"}[family]
    return Models(family, model, clip, vae, scorer_name, f"full-size {name} (random weights, {dtype})")


# --------------------------------------------------------------------------------------------------
# The graphs


def pack_node(node_id: str) -> Any:
    module = benchlib.pack("nodes")
    return next(cls for cls in module.NODES if cls.define_schema().node_id == node_id)


def queued_prompt(search_mode: str) -> dict[str, Any]:
    """The edit's API prompt as far as the search node reads it (``cls.hidden.prompt``): its own
    trajectory link and the reassembly's constant ``R`` and ``r`` on the same trajectory."""
    return {
        "5": {"class_type": "OIRDDIMInversion", "inputs": {}},
        "9": {
            "class_type": "OIRParallelStepSearch",
            "inputs": {"trajectory": ["5", 0], "search_mode": search_mode},
        },
        "12": {
            "class_type": "OIRObjectReassembly",
            "inputs": {"trajectory": ["5", 0], "reassembly_step": -1, "reinversion_steps": -1},
        },
    }


def run_queued(node: Any, prompt: dict[str, Any], unique_id: str, **inputs: Any) -> tuple[Any, ...]:
    """``node.execute(**inputs)``'s outputs, with ``node.hidden`` set as ComfyUI sets it for a
    queued prompt (the node id ``unique_id`` of ``prompt``)."""
    from comfy_api.latest import io

    saved = node.__dict__.get("hidden", None)
    node.hidden = io.HiddenHolder.from_dict({io.Hidden.prompt: prompt, io.Hidden.unique_id: unique_id})
    try:
        return tuple(node.execute(**inputs).args)
    finally:
        node.hidden = saved


ORIGINAL_PROMPT = "a dog sitting next to a gift"
TARGET_PROMPT = "a cat sitting next to a cake"


def plain_generation(models: Models, size: int, steps: int, ledger: Ledger, seed: int) -> Any:
    """CLIP Text Encode ×2 → Empty Latent Image → KSampler → VAE Decode (ComfyUI's own nodes)."""
    import nodes as comfy_nodes

    encode = comfy_nodes.CLIPTextEncode()
    positive = ledger.timed("prompt encode", lambda: encode.encode(models.clip, TARGET_PROMPT)[0])
    negative = ledger.timed("prompt encode", lambda: encode.encode(models.clip, ORIGINAL_PROMPT)[0])
    empty = comfy_nodes.EmptyLatentImage().generate(size, size, 1)[0]
    latent = ledger.timed(
        "sampling",
        lambda: comfy_nodes.KSampler().sample(
            models.model, seed, steps, CFG, "ddim", "ddim_uniform", positive, negative, empty
        )[0],
    )
    return ledger.timed("final decode", lambda: comfy_nodes.VAEDecode().decode(models.vae, latent)[0])


@dataclass
class EditRun:
    chosen: tuple[int, ...]
    pair_sources: list[str]
    candidates: int


def load_scorer(models: Models, ledger: Ledger) -> Any:
    """OIR Load CLIP Scorer's metric, its ``score`` calls booked as scoring (loaded once, outside the
    timed edit: a cached load, like a checkpoint's)."""
    (metric,) = (
        pack_node("OIRLoadCLIPScorer")
        .execute(clip_name=models.scorer_name, backend="auto", device="auto", precision="fp32")
        .args
    )
    wrap_method(metric.scorer, "score", ledger, {"search": "scoring", "scorer": "scoring"})
    return metric


def two_object_edit(models: Models, scorer: Any, size: int, steps: int, mode: str, ledger: Ledger) -> EditRun:
    """The example workflow's two-object edit, node by node (``oir_graph.run_graph``'s wiring)."""
    import nodes as comfy_nodes

    image = test_image(size)
    left, right = (m[None] for m in pair_masks(size))
    edit_pair, builder = pack_node("OIREditPair"), pack_node("OIRGuidedPromptBuilder")

    def prompts() -> tuple[Any, ...]:
        pairs = edit_pair.execute(mask=left, source="dog", target="cat", occurrence=0).args[0]
        pairs = edit_pair.execute(
            mask=right, source="gift", target="cake", occurrence=0, edit_pairs=pairs
        ).args[0]
        return tuple(
            builder.execute(clip=models.clip, original_prompt=ORIGINAL_PROMPT, edit_pairs=pairs).args
        )

    original, target, edit, _ = ledger.timed("prompt encode", prompts)
    latent = ledger.timed("VAE encode", lambda: comfy_nodes.VAEEncode().encode(models.vae, image)[0])
    prompt = queued_prompt(mode)
    inversion = pack_node("OIRDDIMInversion")
    trajectory, _ = ledger.timed(
        "inversion",
        lambda: run_queued(
            inversion,
            prompt,
            "5",
            model=models.model,
            latent=latent,
            original=original,
            steps=steps,
            scheduler="ddim_uniform",
            convention="auto",
        ),
    )
    search = pack_node("OIRParallelStepSearch")
    candidates, _ = ledger.timed(
        "search",
        lambda: run_queued(
            search,
            prompt,
            "9",
            model=models.model,
            trajectory=trajectory,
            oir_edit=edit,
            original=original,
            vae=models.vae,
            cfg=CFG,
            search_mode=mode,
            custom_steps="",
            coarse_stride=STRIDE,
            refine_radius=RADIUS,
            max_batch=0,
            scorer=scorer,
            image=image,
        ),
    )
    chosen, *_ = ledger.timed(
        "scorer",
        lambda: (
            pack_node("OIRMaskMetricScorer")
            .execute(candidates=candidates, scorer=scorer, image=image, step_override="")
            .args
        ),
    )
    reassembly = pack_node("OIRObjectReassembly")
    out = ledger.timed(
        "reassembly",
        lambda: reassembly.execute(
            model=models.model,
            trajectory=trajectory,
            oir_edit=edit,
            chosen_steps=chosen,
            original=original,
            target=target,
            cfg=CFG,
            reassembly_step=-1,
            reinversion_steps=-1,
            overlap="later_wins",
            max_batch=0,
        ),
    )
    ledger.timed("final decode", lambda: comfy_nodes.VAEDecode().decode(models.vae, out.args[0])[0])
    sources = [p["source"] for p in out.ui["oir_reassembly"][0]["pairs"]]
    return EditRun(tuple(chosen.steps), sources, len(candidates.candidates.steps))


def edit_phases(ledger: Ledger) -> dict[str, float]:
    """The ledger's seconds in :data:`EDIT_PHASES` (the nodes' remainders are bookkeeping)."""
    seconds = dict(ledger.seconds)
    rest = seconds.pop("search", 0.0) + seconds.pop("scorer", 0.0)
    seconds["previews + bookkeeping"] = seconds.get("previews + bookkeeping", 0.0) + rest
    return {name: seconds.get(name, 0.0) for name in EDIT_PHASES}


def call_profile(calls: dict[str, list[int]]) -> str:
    """``phase: forwards × rows`` (rows per forward: one value or min-max and the mean)."""
    parts = []
    for phase, batches in calls.items():
        if not batches:
            continue
        low, high = min(batches), max(batches)
        shape = f"{low}" if low == high else f"{low}-{high} (mean {sum(batches) / len(batches):.1f})"
        parts.append(f"{phase}: {len(batches)} forwards, {sum(batches)} rows, rows/forward {shape}")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------------


def measure_row(
    models: Models,
    family: str,
    size: int,
    steps: int,
    modes: list[str],
    ledger: Ledger,
    report: benchlib.Report,
    args: Any,
) -> list[dict[str, Any]]:
    """Plain generation, each mode's edit, plain generation again; the report rows and JSON rows."""
    results: list[dict[str, Any]] = []
    row = f"{models.label}, {size}², T={steps}"
    print(f"\n== {row}", flush=True)
    plain: list[tuple[float, dict[str, float], dict[str, list[int]]]] = []

    def run_plain(when: str) -> None:
        ledger.reset()
        seconds, _ = benchlib.timed(
            lambda: plain_generation(models, size, steps, ledger, args.seed), args.device
        )
        plain.append((seconds, dict(ledger.seconds), dict(ledger.calls)))
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in ledger.seconds.items())
        print(
            f"plain generation ({when}): {seconds:.2f} s ({parts}); {sum(ledger.rows.values())} UNet rows",
            flush=True,
        )
        print(f"  call profile: {call_profile(ledger.calls)}", flush=True)

    scorer = load_scorer(models, ledger)
    run_plain("before")
    edits: dict[str, tuple[float, dict[str, float], EditRun, int, dict[str, list[int]]]] = {}
    for mode in modes:
        ledger.reset()
        seconds, run = benchlib.timed(
            lambda mode=mode: two_object_edit(models, scorer, size, steps, mode, ledger), args.device
        )
        phases = edit_phases(ledger)
        unet_rows = sum(ledger.rows.values())
        edits[mode] = (seconds, phases, run, unet_rows, dict(ledger.calls))
        print(
            f"{mode}: {seconds:.1f} s, {unet_rows} UNet rows, {run.candidates} candidates, chosen steps "
            f"{list(run.chosen)}, reassembly pairs {run.pair_sources}",
            flush=True,
        )
        for name, value in phases.items():
            print(f"  {name:24s} {value:9.2f} s  {value / seconds:6.1%}", flush=True)
        print(f"  call profile: {call_profile(ledger.calls)}", flush=True)
    run_plain("after")
    base = sum(p[0] for p in plain) / len(plain)
    base_rows = sum(plain[0][2].get("sampling", [])) or 1
    for mode, (seconds, phases, run, unet_rows, calls) in edits.items():
        ratio = seconds / base
        target = TARGETS[mode] if targeted(args, family, size, steps) else None
        breakdown = ", ".join(f"{k} {fmt_pct(v / seconds)}" for k, v in phases.items() if v > 0)
        report.add(
            Metric(
                f"8. two-object edit vs plain generation, {mode} ({row}): wall",
                f"{fmt_ratio(ratio)} ({seconds:.1f} s vs {base:.1f} s; "
                f"UNet rows {fmt_ratio(unet_rows / base_rows)})",
                "-" if target is None else f"≤ {fmt_ratio(target)}",
                None if target is None else ratio <= target,
                f"plain before / after {plain[0][0]:.1f} s / {plain[-1][0]:.1f} s; phases of the edit: "
                f"{breakdown}; chosen steps {list(run.chosen)}; call profile: {call_profile(calls)}",
            )
        )
        results.append(
            {
                "row": row,
                "mode": mode,
                "edit_s": seconds,
                "plain_s": base,
                "plain_before_s": plain[0][0],
                "plain_after_s": plain[-1][0],
                "ratio": ratio,
                "unet_row_ratio": unet_rows / base_rows,
                "phases_s": phases,
                "chosen": list(run.chosen),
            }
        )
    return results


def targeted(args: Any, family: str, size: int, steps: int) -> bool:
    """Whether the ratio targets apply to this row: CPU full size at :data:`TARGET_ROW`, or any GPU row."""
    if args.tiny:
        return False
    return args.device == "cuda" or (family, size, steps) == parse_row(TARGET_ROW)


def parse_row(text: str) -> tuple[str, int, int]:
    family, size, steps = text.split(":")
    if family not in ("sd15", "sdxl"):
        raise SystemExit(f"--rows: family {family!r} is not sd15 or sdxl (e.g. sd15:256:50)")
    return family, int(size), int(steps)


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", default="", help="family:size:steps, comma-separated (default: per device)")
    parser.add_argument("--modes", default=",".join(MODES), help="search modes, comma-separated")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny SD1.5/SDXL models on the CPU: the call profile"
    )
    args = parser.parse_args()
    if args.tiny:
        args.device = "cpu"
    benchlib.apply_common(args)
    report = benchlib.comfy_report("bench_edit_vs_plain", args, "the edit-vs-plain benchmark")
    if report is None:
        return
    default_rows = TINY_ROWS if args.tiny else CUDA_ROWS if args.device == "cuda" else CPU_ROWS
    rows = [parse_row(r) for r in (args.rows.split(",") if args.rows else default_rows)]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="oir-bench-plain-"))
    register_scorer(workdir)
    ledger = Ledger(device=args.device)
    built: dict[str, Models] = {}
    results: list[dict[str, Any]] = []
    for family, size, steps in rows:
        if family not in built:
            built.clear()  # one family's weights in memory at a time
            started = time.perf_counter()
            built[family] = build_models(family, args.tiny, args.device, workdir, args.seed)
            model = built[family].model.clone()
            model.set_model_unet_function_wrapper(TimedUnet(ledger, {"search": "search UNet"}))
            built[family].model = model
            wrap_method(built[family].vae, "decode", ledger, {"search": "candidate decode"})
            print(f"built {built[family].label} in {time.perf_counter() - started:.0f} s", flush=True)
        results.extend(measure_row(built[family], family, size, steps, modes, ledger, report, args))
    print("\nresults (JSON): " + json.dumps(results))
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
