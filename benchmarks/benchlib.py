"""Shared helpers of the OIR benchmarks: machine line, CLI, timing, ComfyUI setup, models, results.

Every benchmark script in this folder runs from the repository root as
``python benchmarks/<name>.py`` (``COMFYUI_PATH`` set for the ComfyUI-based parts). This module puts
what the scripts need on ``sys.path``:

- the repository root (for ``oir_core``; appended, so ComfyUI's ``nodes.py`` keeps precedence over
  the pack's ``nodes/`` folder once ComfyUI is set up);
- ``tests/integration`` (``comfy_env``: importing ComfyUI and the pack; ``tiny_models``: tiny
  in-memory SD1.5-architecture models) and ``tests/core`` (``tiny_clip``).

Benchmarks print human-readable lines, a machine line, and a list of :class:`Metric` rows; with
``--json-out PATH`` they also write those rows as JSON for ``run_all.py``. They never assert.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
for _extra in (REPO_ROOT, REPO_ROOT / "tests" / "integration", REPO_ROOT / "tests" / "core"):
    if str(_extra) not in sys.path:
        sys.path.append(str(_extra))

import comfy_env  # noqa: E402  (tests/integration, put on sys.path above)

FULL_SD_VAE_DDCONFIG: dict[str, Any] = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}
"""The SD1.x AutoencoderKL architecture (84 M parameters)."""

FULL_SIZE_LATENT = (4, 64, 64)
"""SD1.5 at 512x512."""


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class Metric:
    """One row of the results table.

    Attributes:
        name: what is measured (``"search efficiency (rows/s vs best batched)"``).
        measured: the measured value, formatted (``"91.3 %"``).
        target: the target, formatted (``">= 85 %"``), or ``"-"`` for context rows.
        met: whether the target is met (``None`` for context rows without a target).
        detail: a short note shown under the table by ``run_all.py``.
    """

    name: str
    measured: str
    target: str = "-"
    met: bool | None = None
    detail: str = ""


@dataclass
class Report:
    """Everything one benchmark script reports."""

    script: str
    machine: str
    metrics: list[Metric] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, *metrics: Metric) -> None:
        self.metrics.extend(metrics)

    def skip(self, reason: str) -> None:
        """Record (and print) a part that could not run."""
        print(f"SKIPPED: {reason}")
        self.skipped.append(reason)

    def emit(self, json_out: str | None) -> None:
        """Print the metric rows as a markdown table; write JSON when ``json_out`` is given."""
        print()
        print(f"machine: {self.machine}")
        print(markdown_table(self.metrics))
        for reason in self.skipped:
            print(f"(skipped: {reason})")
        if json_out:
            payload = {
                "script": self.script,
                "machine": self.machine,
                "metrics": [asdict(m) for m in self.metrics],
                "skipped": self.skipped,
            }
            Path(json_out).write_text(json.dumps(payload, indent=2), encoding="utf-8")


def markdown_table(metrics: Sequence[Metric]) -> str:
    """``| metric | measured | target |`` rows (a check mark or cross after met/missed targets)."""
    lines = ["| metric | measured | target |", "|---|---|---|"]
    for m in metrics:
        mark = "" if m.met is None else (" ✅" if m.met else " ❌")
        lines.append(f"| {m.name} | {m.measured} | {m.target}{mark} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Machine line


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def comfyui_version() -> str:
    """ComfyUI's version from ``$COMFYUI_PATH/comfyui_version.py`` (without importing it)."""
    path = comfy_env.comfyui_path()
    if path is None:
        return "n/a (COMFYUI_PATH unset)"
    try:
        text = (path / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return f"unknown ({path})"
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else f"unknown ({path})"


def device_name(device: str) -> str:
    """``cpu`` or the CUDA device's name and memory."""
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return device


def machine_line(device: str) -> str:
    """One line: CPU model, cores/threads, torch version, device, ComfyUI version, load average."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:  # psutil comes with ComfyUI's requirements; the analytic parts do not need it
        physical = None
    logical = os.cpu_count()
    try:
        load = "load avg {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())
    except OSError:
        load = "load avg n/a"
    return (
        f"CPU {cpu_model()} ({physical or '?'} cores / {logical} threads, torch threads "
        f"{torch.get_num_threads()}), torch {torch.__version__}, device {device_name(device)}, "
        f"ComfyUI {comfyui_version()}, Python {platform.python_version()}, {load}"
    )


# --------------------------------------------------------------------------------------------------
# CLI


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device")
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="full-size SD1.5-architecture UNet (random weights, 512x512) instead of the tiny one",
    )
    parser.add_argument("--json-out", default=None, help="also write the metric rows as JSON here")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1; 0 = torch's default). With several threads, any other busy "
        "process stalls every parallel op at its barrier and CPU timings swing by up to 100x",
    )
    return parser


def apply_common(args: argparse.Namespace) -> None:
    """Check the device and set torch's CPU thread count (``--threads``)."""
    check_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)


def check_device(device: str) -> None:
    """Refuse ``--device cuda`` without a CUDA device (with a readable message)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")


# --------------------------------------------------------------------------------------------------
# Timing


def sync(device: str) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    """``(seconds, result)`` of one call, synchronised on CUDA."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def batch_time(
    host: Any, batch: int, shape: tuple[int, ...], sigma: float, min_seconds: float, device: str
) -> float:
    """Mean seconds per denoiser call on ``batch`` rows of pair 0 through ``host`` (one guider chain).

    After one warm-up call, calls repeat for at least ``min_seconds`` (3 calls at least, 50 at most);
    the mean (not the best call) is what a sustained run achieves, like the search's own time.
    """
    from oir_core.host import Stage

    stage = Stage(role="guided", sigmas=torch.tensor([sigma, 0.0]), rows=batch, latent_shape=shape)
    x = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(batch))
    ids = torch.zeros(batch, dtype=torch.long)
    sig = torch.tensor(sigma)

    def body(denoise: Any, _max_batch: int | None) -> float:
        denoise(x, sig, ids)  # warm-up
        spent, calls = 0.0, 0
        while calls < 3 or (spent < min_seconds and calls < 50):
            seconds, _ = timed(lambda: denoise(x, sig, ids), device)
            spent, calls = spent + seconds, calls + 1
        return spent / calls

    return host.run(stage, body)


@dataclass
class Timing:
    """Repeated wall-clock measurements of one variant (seconds)."""

    samples: list[float]

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def fmt_ratio(value: float) -> str:
    return f"{value:.1f}×" if value >= 10 else f"{value:.2f}×"


def fmt_pct(value: float) -> str:
    return f"{100.0 * value:.1f} %"


def fmt_bytes(value: float) -> str:
    if abs(value) >= 2**30:
        return f"{value / 2**30:.2f} GiB"
    return f"{value / 2**20:.1f} MiB"


# --------------------------------------------------------------------------------------------------
# ComfyUI


def comfy_unavailable_reason() -> str | None:
    """Why the ComfyUI-based parts cannot run here (``None``: they can)."""
    return comfy_env.unavailable_reason()


def comfy_report(name: str, args: argparse.Namespace, what: str) -> Report | None:
    """A benchmark's :class:`Report` (machine line printed), with ComfyUI set up for ``args.device``.

    ``None`` when ComfyUI is unavailable: the skip (``what`` needs ComfyUI) is then already emitted.
    """
    report = Report(name, machine_line(args.device))
    print(report.machine)
    reason = comfy_unavailable_reason()
    if reason is not None:
        report.skip(f"{what} needs ComfyUI: {reason}")
        report.emit(args.json_out)
        return None
    mode = setup_comfy(args.device, getattr(args, "vram", "legacy"))
    if hasattr(args, "vram"):
        args.vram = mode  # "auto" resolved, for the script's labels
    if mode == "dynamic":
        report.machine += ", ComfyUI dynamic VRAM (comfy_aimdo)"
        print("ComfyUI dynamic VRAM (comfy_aimdo) on, as ComfyUI's main.py turns it on for this GPU")
    return report


def setup_comfy(device: str, vram: str = "legacy") -> str:
    """Make ``import comfy`` work for ``$COMFYUI_PATH`` on ``device`` and import the pack.

    Like ``tests/integration/comfy_env.setup_comfyui`` but for either device: ``--cpu`` mode is
    set before ``comfy.model_management`` is imported when ``device == "cpu"``; for ``cuda``
    ComfyUI picks the GPU itself (its default flags). ``vram``: ``"legacy"`` (ComfyUI's classic
    model patcher), ``"dynamic"`` (ComfyUI 0.33's dynamic VRAM through ``comfy_aimdo``, as its
    ``main.py`` sets it up) or ``"auto"`` (dynamic exactly where ``main.py`` would turn it on).
    Returns the mode used.
    """
    path = comfy_env.comfyui_path()
    assert path is not None
    entry = str(path)
    sys.path[:] = [e for e in sys.path if e != entry]
    sys.path.insert(0, entry)
    stray = sys.modules.get("nodes")
    if stray is not None and not str(getattr(stray, "__file__", "") or "").startswith(entry):
        del sys.modules["nodes"]
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"
    if vram == "auto":
        vram = "dynamic" if device == "cuda" and host_has_dynamic_vram() else "legacy"
    if vram == "dynamic":
        start_dynamic_vram_allocator()
    import comfy.model_management

    if vram == "dynamic":
        enable_dynamic_vram()
    comfy_env.load_pack()
    return vram


def host_has_dynamic_vram() -> bool:
    """Whether this ComfyUI would turn on its dynamic VRAM (``comfy_aimdo``) on this machine by default.

    ComfyUI 0.33's ``main.py`` does so on NVIDIA GPUs unless a VRAM flag says otherwise; 0.3.64 has no
    such mode.
    """
    import comfy.cli_args

    enables = getattr(comfy.cli_args, "enables_dynamic_vram", None)
    return enables is not None and bool(enables()) and torch.cuda.is_available() and torch.version.hip is None


def start_dynamic_vram_allocator() -> None:
    """What ComfyUI's ``main.py`` does before it imports ``comfy.model_management`` (dynamic VRAM)."""
    import comfy.cli_args
    import comfy_aimdo.control

    reserve = comfy.cli_args.args.reserve_vram
    comfy_aimdo.control.init(
        simple_vram_headroom=None if reserve is None else int(reserve * 1024**3),
        nvml_pressure=not comfy.cli_args.args.disable_nvml_pressure,
    )


def enable_dynamic_vram() -> None:
    """What ComfyUI's ``main.py`` does next: dynamic model patchers on every device comfy_aimdo takes."""
    import comfy.cli_args
    import comfy.memory_management
    import comfy.model_management
    import comfy.model_patcher
    import comfy_aimdo.control

    devices = comfy.model_management.get_all_torch_devices()
    headroom = int(comfy.cli_args.args.vram_headroom * 1024**3)
    if not comfy_aimdo.control.init_devices((d.index, headroom) for d in devices):
        raise SystemExit("comfy_aimdo could not take this GPU: run with --vram legacy")
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True


def pack(dotted: str) -> ModuleType:
    """A module of the pack as ComfyUI imports it, e.g. ``pack("nodes.comfy_host")``."""
    return comfy_env.import_pack_module(dotted)


def build_unet(full_size: bool, seed: int, device: str) -> Any:
    """A ComfyUI MODEL (``ModelPatcher``) with an SD1.5-architecture EPS UNet and random weights.

    ``full_size=False``: ``tests/integration/tiny_models.build_tiny_unet`` (~1.6 M parameters,
    ``context_dim`` 64). ``full_size=True``: the real SD1.5 config (860 M parameters, ``context_dim``
    768), fp16 on CUDA and fp32 on CPU, weights drawn like the tiny model's.
    """
    import tiny_models

    if not full_size:
        return tiny_models.build_tiny_unet("eps", seed=seed)
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    dtype = torch.float16 if device == "cuda" else torch.float32
    offload = comfy.model_management.unet_offload_device()
    return tiny_models.build_full_size_unet(
        "sd15", dtype, offload, load_device=comfy.model_management.get_torch_device(), seed=seed
    )


def build_vae(full_size: bool, seed: int) -> Any:
    """A ComfyUI VAE: the tiny test VAE or the full SD1.x AutoencoderKL architecture (random weights)."""
    import tiny_models

    if not full_size:
        return tiny_models.build_tiny_vae(seed=seed)
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    params = {"ddconfig": dict(FULL_SD_VAE_DDCONFIG), "embed_dim": FULL_SD_VAE_DDCONFIG["z_channels"]}
    template = AutoencoderKL(**params)
    tiny_models.init_weights_(template, seed)
    state_dict = {k: v.detach().clone() for k, v in template.state_dict().items()}
    return comfy.sd.VAE(sd=state_dict, config={"params": params}, dtype=torch.float32)


def context_dim(full_size: bool) -> int:
    import tiny_models

    return int(tiny_models.FULL_SIZE_UNETS["sd15"]["context_dim"]) if full_size else 64


def conditioning(seed: int, full_size: bool) -> list[list[Any]]:
    """A random CONDITIONING ``[[cond [1, 77, D], {"pooled_output": [1, D]}]]`` for the UNet's width."""
    import tiny_models

    return tiny_models.random_conditioning(seed, dim=context_dim(full_size))


@dataclass
class UnetCounter:
    """Counts UNet forward passes and the rows they held (cond and uncond rows both count)."""

    forwards: int = 0
    rows: int = 0
    batches: list[int] = field(default_factory=list)

    def reset(self) -> None:
        self.forwards, self.rows, self.batches = 0, 0, []

    def __deepcopy__(self, memo: dict[int, Any]) -> UnetCounter:
        # ComfyUI deep-copies model options when a model is cloned (a node may clone to patch it):
        # the clone must still count here.
        return self

    def __call__(self, apply_model: Callable[..., Any], args: dict[str, Any]) -> Any:
        batch = int(args["input"].shape[0])
        self.forwards += 1
        self.rows += batch
        self.batches.append(batch)
        return apply_model(args["input"], args["timestep"], **args["c"])


def counted(model: Any) -> tuple[Any, UnetCounter]:
    """A clone of ``model`` whose every UNet forward is counted (ComfyUI's ``model_function_wrapper``)."""
    counter = UnetCounter()
    clone = model.clone()
    clone.set_model_unet_function_wrapper(counter)
    return clone, counter


def triangular(n: int) -> int:
    """``n (n + 1) / 2``: rows of an exhaustive search over ``n`` steps for one pair."""
    return n * (n + 1) // 2


def geometric_batches(limit: int) -> list[int]:
    """``1, 2, 4, ...`` up to ``limit``, plus ``limit`` itself."""
    out = [1 << i for i in range(int(math.log2(max(limit, 1))) + 1)]
    return sorted({*out, limit})


@dataclass
class CallCounter:
    """Wraps an engine denoiser (``x, sigma, cond_ids -> x0_hat``) and counts calls and rows."""

    inner: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
    calls: int = 0
    rows: int = 0

    def reset(self) -> None:
        self.calls, self.rows = 0, 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond_ids: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        self.rows += int(x.shape[0])
        return self.inner(x, sigma, cond_ids)


def sd_clean_sigma() -> float:
    """SD's t = 0 noise level (~0.029): where the ``official`` inversion puts the clean latent."""
    from oir_core.analytic import sd_discrete_sigmas

    return float(sd_discrete_sigmas()[0])


RESULTS_BEGIN = "<!-- benchmarks/run_all.py writes from here -->"
RESULTS_END = "<!-- to here -->"


def replace_marked_block(page: str, block: str) -> str:
    """``page`` with the text between :data:`RESULTS_BEGIN` and :data:`RESULTS_END` replaced by
    ``block`` (the markers stay, so the next run finds them again); a page without both markers
    is an error, never a silent append."""
    start, end = page.find(RESULTS_BEGIN), page.find(RESULTS_END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no '{RESULTS_BEGIN}' ... '{RESULTS_END}' block to replace")
    return page[: start + len(RESULTS_BEGIN)] + "\n\n" + block.strip() + "\n\n" + page[end:]
