"""What newer ComfyUI hosts change around the pack (ARCHITECTURE.md §9).

- ComfyUI's MultiGPU CFG Split (``comfy.multigpu``, ``model_options["multigpu_clones"]``; in 0.33.0
  and 0.38.x, not in 0.3.64) splits a model call's conds over devices. OIR's row-wise shared forward
  (§5) is one ``sampling_function`` with one cond and one uncond for every pair's rows, so the split
  reaches it unchanged: checked here with ComfyUI's own ``create_multigpu_deepclones`` on two
  devices of this machine (the CPU twice, as ``cpu`` and ``cpu:0``; on a CUDA machine the GPU and
  the CPU). OIR Phrase Mask's attention capture is the exception: it drops the split and says so.
- Hosts newer than 0.33 serve only ``.json`` under ``/workflow_templates/<pack>/``; the pack serves
  its own card pictures.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
from pathlib import Path
from typing import Any

import comfy.model_management
import comfy.samplers
import comfy_env
import pytest
import tiny_models
import torch
from comfy_server import TestServer, shared_test_server
from PIL import Image

from oir_cli.client import HTTPStatusError
from oir_cli.server import PACK_FOLDER

EXAMPLE_WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows"
HAS_MULTIGPU = importlib.util.find_spec("comfy.multigpu") is not None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> TestServer:
    return shared_test_server(tmp_path_factory, request)


# --------------------------------------------------------------------------------------------------
# MultiGPU CFG Split
# --------------------------------------------------------------------------------------------------


def split_over_two_devices(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, torch.device]:
    """``(plain model, the same model after ComfyUI's MultiGPU CFG Split, the second device)``.

    The split is ``comfy.multigpu.create_multigpu_deepclones`` (what the MultiGPU CFG Split node
    runs); its second model is rebuilt by the loader factory ComfyUI's own loaders register
    (``cached_patcher_init``), here the tiny UNet builder with the same seed.
    """
    import comfy.multigpu

    plain = tiny_models.build_tiny_unet("eps", seed=0)
    plain.cached_patcher_init = (tiny_models.build_tiny_unet, ("eps", 0))
    first = plain.load_device
    second = torch.device("cpu") if first.type != "cpu" else torch.device("cpu", 0)
    devices = [first, second]
    monkeypatch.setattr(comfy.model_management, "get_all_torch_devices", lambda **_: devices)
    split = comfy.multigpu.create_multigpu_deepclones(plain, 2)
    assert [m.load_device for m in split.get_additional_models_with_key("multigpu")] == [second]
    return plain, split, second


def test_multigpu_cfg_split_gets_the_rowwise_shared_forward(
    comfy_host: Any, oir_host: Any, prompts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every model call of a two-pair guided stage goes through ComfyUI's multi-device dispatch
    (``_calc_cond_batch_multigpu``), which runs all pairs' cond rows on one device and all their
    uncond rows on the other (one forward each), and every row equals the single-device run.
    (ComfyUI 0.3.64 has no such split: there its conds are batched on one device only.)"""
    if not HAS_MULTIGPU:
        assert not hasattr(comfy.samplers, "_calc_cond_batch_multigpu")
        return
    plain, split, second = split_over_two_devices(monkeypatch)
    dispatched: list[int] = []
    original_dispatch = comfy.samplers._calc_cond_batch_multigpu

    def spy_dispatch(model: Any, conds: list, x: torch.Tensor, *args: Any) -> Any:
        dispatched.append(x.shape[0])
        return original_dispatch(model, conds, x, *args)

    monkeypatch.setattr(comfy.samplers, "_calc_cond_batch_multigpu", spy_dispatch)
    forwards: list[tuple[str, int, tuple[int, ...]]] = []
    spied = split.clone()
    spied.set_model_unet_function_wrapper(
        lambda apply, args: (
            forwards.append(
                (
                    str(args["c"]["transformer_options"].get("multigpu_thread_device")),
                    args["input"].shape[0],
                    tuple(args["cond_or_uncond"]),
                )
            ),
            apply(args["input"], args["timestep"], **args["c"]),
        )[1]
    )
    guided = [prompts["guided_0"], prompts["guided_1"]]
    ids = torch.tensor([0, 1, 1, 0, 1])
    latent = torch.randn((len(ids), 4, 8, 8), generator=torch.Generator().manual_seed(23))
    sigmas = comfy_host.get_sigmas(plain, "normal", 3)
    stage = oir_host.Stage("guided", sigmas, len(ids), tuple(latent.shape[1:]), "search")

    def run(model: Any) -> torch.Tensor:
        original, negative, target = prompts["original"], prompts["negative"], prompts["target"]
        host = comfy_host.ComfyHost(model, original, negative, guided, target, 6.0)
        start = comfy_host.model_space_in(model, latent)
        return host.run(stage, lambda denoise, _: torch.stack([denoise(start, s, ids) for s in sigmas[:-1]]))

    ours = run(spied)
    calls = len(sigmas) - 1
    assert dispatched == [len(ids)] * calls  # every model call, all rows at once
    first = str(plain.load_device)
    # one forward per device and call: every pair's cond rows together, every uncond row together
    assert sorted(forwards) == sorted([(first, len(ids), (0,)), (str(second), len(ids), (1,))] * calls)
    reference = run(plain)
    assert float((ours - reference).abs().max()) <= 1e-5 * float(reference.abs().max())


# --------------------------------------------------------------------------------------------------
# Template card pictures
# --------------------------------------------------------------------------------------------------


def test_every_template_thumbnail_is_served_by_the_pack(server: TestServer) -> None:
    """Both paths the frontend may ask (with and without ``/api``) give each card's JPEG; 0.3.64 and
    0.33.0 serve only the ``/api`` one themselves, so the other proves the pack's own route."""
    names = sorted(path.stem for path in EXAMPLE_WORKFLOWS.glob("*.json"))
    assert names and all((EXAMPLE_WORKFLOWS / f"{name}.jpg").is_file() for name in names)
    for name in names:
        expected = (EXAMPLE_WORKFLOWS / f"{name}.jpg").read_bytes()
        for prefix in ("", "/api"):
            served = server.client.request("GET", f"{prefix}/workflow_templates/{PACK_FOLDER}/{name}.jpg")
            assert served == expected and Image.open(io.BytesIO(served)).format == "JPEG", (prefix, name)
    with pytest.raises(HTTPStatusError) as refused:
        server.client.request("GET", f"/workflow_templates/{PACK_FOLDER}/not_a_template.jpg")
    assert refused.value.status == 404


def test_the_thumbnail_route_answers_before_a_json_only_template_route(pack: Any) -> None:
    """On hosts newer than 0.33 ComfyUI adds ``/workflow_templates/{module_name}/{filename}`` (``.json``
    only, else 404) after the custom nodes' routes; aiohttp's router must still give the pack's
    ``.jpg`` to the pack's route, and leave every ``.json`` to ComfyUI's."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient
    from aiohttp.test_utils import TestServer as AiohttpServer

    thumbnails = comfy_env.import_pack_module("nodes.template_thumbnails")
    routes = web.RouteTableDef()
    thumbnails.add_thumbnail_route(routes, PACK_FOLDER)

    @routes.get("/workflow_templates/{module_name}/{filename}")
    async def json_only(request: web.Request) -> web.Response:  # the newer host's rule
        if not request.match_info["filename"].endswith(".json"):
            raise web.HTTPNotFound()
        return web.json_response({"served_by": "host"})

    app = web.Application()
    app.add_routes(routes)
    name = "oir_two_object_edit"

    async def fetch() -> tuple[int, bytes, Any]:
        async with TestClient(AiohttpServer(app)) as client:
            picture = await client.get(f"/workflow_templates/{PACK_FOLDER}/{name}.jpg")
            workflow = await client.get(f"/workflow_templates/{PACK_FOLDER}/{name}.json")
            return picture.status, await picture.read(), await workflow.json()

    status, body, workflow = asyncio.run(fetch())
    assert status == 200 and body == (EXAMPLE_WORKFLOWS / f"{name}.jpg").read_bytes()
    assert workflow == {"served_by": "host"}


def test_the_phrase_mask_capture_says_it_runs_on_one_device_and_finds_the_same_map(
    comfy_host: Any,
    pack: Any,
    tiny_clip: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Attention maps are gathered in one place, so OIR Phrase Mask's cross-attention capture drops
    the MultiGPU split (with a warning, before any model call) and gives the one-device map."""
    from oir_core.phrase_masks import AttentionMaps, find_phrase_mask

    mask_nodes = comfy_env.import_pack_module("nodes.mask_nodes")
    prompt = "a dog sitting next to a gift"
    models = [tiny_models.build_tiny_unet("eps", seed=0)]
    if HAS_MULTIGPU:
        plain, split, _ = split_over_two_devices(monkeypatch)
        models = [plain, split]
    found = []
    for model in models:
        maps = AttentionMaps((8, 8), mask_nodes.phrase_positions(tiny_clip, prompt, "dog", 0))
        caplog.clear()
        capture = mask_nodes.capture_cross_attention(model, maps)
        warned = "runs on one device" in caplog.text
        assert warned == bool(model.get_additional_models_with_key("multigpu"))
        assert not capture.get_additional_models_with_key("multigpu")
        host = comfy_host.ComfyHost(
            capture, tiny_models.encode_prompt(tiny_clip, prompt), None, [], None, 1.0
        )
        found.append(
            find_phrase_mask(
                host,
                torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(5)),
                method="cross_attention",
                sigma=1.0,
                samples=2,
                seed=0,
                flow=False,
                threshold=0.5,
                attention=maps,
            ).soft
        )
    assert torch.equal(found[0], found[-1])
