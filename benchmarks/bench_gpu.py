"""GPU check: full-size SD1.5 (512²) and SDXL (1024²) two-object searches through ComfyUI on one GPU.

One command per weight-loading mode, a few minutes each on a data-centre GPU::

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_gpu.py --device cuda --vram dynamic
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_gpu.py --device cuda --vram legacy

``--vram auto`` (the default) uses the mode ComfyUI's own ``main.py`` picks: on ComfyUI 0.33 with an
NVIDIA GPU that is dynamic VRAM (``comfy_aimdo``, ``ModelPatcherDynamic``: weights stream in on demand),
elsewhere the classic ``ModelPatcher``. The two modes need separate processes (dynamic VRAM is set up
before ``comfy.model_management`` is imported).

For each family a random-weight fp16 UNet (the real architecture, ComfyUI's own model classes) is
loaded by ComfyUI's model management exactly as in a user's graph (``ComfyHost``, default chunk),
then: the inversion, an exhaustive search and a coarse-to-fine search of two pairs (its worst
case: both pairs refine around the deepest coarse step). Printed per family and search:

- peak GPU memory (``torch.cuda.max_memory_allocated``) and the model's size;
- whether ComfyUI kept the weights fully loaded at every UNet forward (a ComfyUI model wrapper reads
  the patcher's loaded bytes right after each forward: under dynamic VRAM the weights arrive during
  the first one);
- the chunk ``ComfyHost`` chose, the search's candidate rows/s and the same model's best batched
  rows/s through the same host path (one sweep of batch sizes per family), and their ratio;
- the smallest batch reaching 95 % of the best rate, and the rows per model call the static plan
  chose (``plan_call_rows``'s work bound): the two show what the cancel-latency bound costs.

``--tiny`` proves the script on a CPU: the tiny SD1.5-architecture test UNet standing in for both
families, at latents 8² and 16², T = 6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import benchlib
import torch
from benchlib import Metric, Report, fmt_bytes, fmt_pct

from oir_core.candidates import exhaustive_steps, generate_candidates
from oir_core.inversion import invert
from oir_core.search import coarse_to_fine_candidates


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    latent: int
    steps: int


FAMILIES = (
    Family("sd15", "SD1.5 512²", 64, 50),
    Family("sdxl", "SDXL 1024²", 128, 20),
)
"""T = 50 as in the paper for SD1.5; T = 20 for SDXL keeps the whole check near 10 minutes."""


class LoadWatch:
    """A ComfyUI UNet wrapper that records the loaded fraction of the weights at every forward."""

    def __init__(self, patcher: Any) -> None:
        self.patcher = patcher
        self.lowest = 1.0
        self.forwards = 0

    def __call__(self, apply_model: Callable[..., Any], args: dict[str, Any]) -> Any:
        out = apply_model(args["input"], args["timestep"], **args["c"])
        self.forwards += 1
        self.lowest = min(self.lowest, self.patcher.loaded_size() / self.patcher.model_size())
        return out


def build(family: Family, tiny: bool, device: str, seed: int) -> Any:
    """The family's UNet as a ComfyUI MODEL: full size fp16 on CUDA, or the tiny test UNet."""
    import comfy.model_management
    import tiny_models

    if tiny:
        return tiny_models.build_tiny_unet("eps", seed=seed)
    dtype = torch.float16 if device == "cuda" else torch.float32
    return tiny_models.build_full_size_unet(
        family.name,
        dtype,
        comfy.model_management.unet_offload_device(),
        load_device=comfy.model_management.get_torch_device(),
        seed=seed,
    )


def conditionings(family: Family, tiny: bool, count: int) -> list[Any]:
    import tiny_models

    if tiny:
        return [tiny_models.random_conditioning(seed) for seed in range(count)]
    return [tiny_models.full_size_conditioning(family.name, seed) for seed in range(count)]


def best_rate(host: Any, shape: tuple[int, ...], limit: int, device: str) -> tuple[float, int, int]:
    """``(best rows/s, its batch, smallest batch within 95 % of it)`` over batch sizes up to ``limit``."""
    curve = {}
    for batch in benchlib.geometric_batches(limit):
        seconds = benchlib.batch_time(host, batch, shape, 5.0, 1.0, device)
        curve[batch] = batch / seconds
    top = max(curve, key=curve.__getitem__)
    enough = min(b for b, rate in curve.items() if rate >= 0.95 * curve[top])
    return curve[top], top, enough


def run_family(report: Report, family: Family, args: Any) -> None:
    comfy_host = benchlib.pack("nodes.comfy_host")
    steps = 6 if args.tiny else family.steps
    latent = (8 if family.name == "sd15" else 16) if args.tiny else family.latent
    shape = (4, latent, latent)
    label = f"tiny UNet, latent {latent}² (stands in for {family.label})" if args.tiny else family.label
    label += ", dynamic VRAM" if args.vram == "dynamic" else ", classic ModelPatcher"
    patcher = build(family, args.tiny, args.device, args.seed)
    watch = LoadWatch(patcher)
    model = patcher.clone()
    model.set_model_unet_function_wrapper(watch)
    conds = conditionings(family, args.tiny, 3)
    host = comfy_host.ComfyHost(model, conds[0], None, conds[1:], None, cfg=7.5)
    sigmas = comfy_host.get_sigmas(model, "ddim_uniform", steps)
    clean = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    cuda = args.device == "cuda"
    trajectory = invert(host, clean, sigmas, "official", clean_sigma=comfy_host.clean_sigma(model))
    size = patcher.model_size()
    sweep: tuple[float, int, int] | None = None
    searches: dict[str, Callable[[], Any]] = {
        "exhaustive": lambda: generate_candidates(host, trajectory, [exhaustive_steps(steps)] * 2),
        "coarse-to-fine (worst case)": lambda: (
            coarse_to_fine_candidates(
                host, trajectory, 2, lambda found: [max(found.steps)] * 2, stride=5, radius=2
            ).pool
        ),
    }
    for name, search in searches.items():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        watch.lowest, watch.forwards = 1.0, 0
        seconds, found = benchlib.timed(search, args.device)
        peak = torch.cuda.max_memory_allocated() if cuda else float("nan")
        rate = found.stats.rows / seconds
        chunk = host.last_max_batch or 1
        per_call = host.reports[-1].plan.rows_per_call if host.reports else chunk
        if sweep is None:  # the same model, shape and host path for both searches: one sweep
            sweep = best_rate(host, shape, max(chunk, 64), args.device)
        top_rate, top_batch, enough = sweep
        fully = watch.lowest == 1.0
        print(
            f"{label}, {name}, T={steps}, K=2: {found.stats.rows} candidate rows in {seconds:.1f} s "
            f"({rate:.1f} rows/s, chunk {chunk}, {per_call} rows per model call at the end); "
            f"best batched {top_rate:.1f} rows/s at batch {top_batch} "
            f"(95 % from batch {enough}); peak GPU memory {fmt_bytes(peak) if cuda else 'n/a (CPU)'} "
            f"for {fmt_bytes(size)} of weights; fully loaded at all {watch.forwards} forwards: {fully} "
            f"(lowest {fmt_pct(watch.lowest)})",
            flush=True,
        )
        report.add(
            Metric(
                f"6. GPU check, {label}, {name} (T={steps}, K=2)",
                f"{fmt_pct(rate / top_rate)} of best batched rows/s ({rate:.1f} vs {top_rate:.1f} @ batch "
                f"{top_batch}; chunk {chunk}, {per_call} rows/call); "
                f"peak {fmt_bytes(peak) if cuda else 'n/a'}; "
                f"weights fully loaded: {'yes' if fully else 'no'}",
                "weights fully loaded",
                fully,
                f"95 % of the best rate from batch {enough} on; weights {fmt_bytes(size)}.",
            )
        )


def main() -> None:
    parser = benchlib.base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU proof of the script: tiny UNet, tiny latents"
    )
    parser.add_argument("--families", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    parser.add_argument(
        "--vram",
        choices=("auto", "dynamic", "legacy"),
        default="auto",
        help="ComfyUI's weight loading: dynamic VRAM (0.33 on NVIDIA), the classic patcher, or what "
        "ComfyUI's main.py would pick here (default)",
    )
    args = parser.parse_args()
    if args.device == "cpu" and not args.tiny:
        raise SystemExit(
            "bench_gpu.py: full-size models need --device cuda (use --tiny to prove it on a CPU)"
        )
    benchlib.apply_common(args)
    report = benchlib.comfy_report("bench_gpu", args, "GPU check")
    if report is None:
        return
    wanted = {name.strip() for name in args.families.split(",")}
    for family in FAMILIES:
        if family.name in wanted:
            run_family(report, family, args)
    report.emit(args.json_out)


if __name__ == "__main__":
    main()
