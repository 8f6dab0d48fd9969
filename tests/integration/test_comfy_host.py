"""ComfyHost against ComfyUI's own sampling path, on tiny in-memory models.

Equivalence: an Euler loop run by the engine through ComfyHost must reproduce ComfyUI's own
``euler`` sampler (``comfy.sample.sample_custom`` with zero noise) on the same model, prompts and
sigmas. Spies check that LoRA weight patches, attention patches and ControlNet in the
conditioning are active in every role, and that the user's conditionings are never mutated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.controlnet
import comfy.model_management
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import node_helpers
import pytest
import tiny_models
import torch
from torch import Tensor

ROWS = 2


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def euler_body(
    x_start: Tensor, sigmas: Tensor, cond_ids: Tensor | None = None, record: dict | None = None
) -> Callable[[Any, int | None], Tensor]:
    """A body running k-diffusion's Euler loop (same float ops as ``sample_euler``) over ``sigmas``."""

    def body(denoise: Any, max_batch: int | None) -> Tensor:
        if record is not None:
            record["max_batch"] = max_batch
        x = x_start.clone()
        for i in range(len(sigmas) - 1):
            denoised = denoise(x, sigmas[i], cond_ids)
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigmas[i + 1] - sigmas[i])
        return x

    return body


def one_call_body(
    x: Tensor, sigma: Tensor, cond_ids: Tensor | None = None
) -> Callable[[Any, int | None], Tensor]:
    """A body making a single denoiser call."""
    return lambda denoise, max_batch: denoise(x, sigma, cond_ids)


def raw_latent(seed: int, rows: int = ROWS, shape: tuple[int, ...] = (4, 8, 8)) -> Tensor:
    """A LATENT-space ``samples`` tensor (as a VAE would give), nonzero."""
    return torch.randn((rows, *shape), generator=torch.Generator().manual_seed(seed))


def start_in_model_space(comfy_host: Any, model: Any, latent: Tensor, sigma0: Tensor) -> Tensor:
    """Where ComfyUI's KSAMPLER starts given zero noise.

    That is ``noise_scaling(sigma0, 0, process_latent_in(latent))``.
    """
    x = comfy_host.model_space_in(model, latent)
    if comfy_host.is_flow_model(model):
        x = (1.0 - sigma0) * x
    return x


def comfy_euler(
    model: Any, positive: list, negative: list, cfg: float, sigmas: Tensor, latent: Tensor
) -> Tensor:
    """ComfyUI's own path: ``sample_custom``, ``euler`` sampler, zero noise. Returns LATENT space."""
    sampler = comfy.samplers.sampler_object("euler")
    return comfy.sample.sample_custom(
        model,
        torch.zeros_like(latent),
        cfg,
        sampler,
        sigmas,
        positive,
        negative,
        latent,
        disable_pbar=True,
        seed=0,
    )


def snapshot(cond: list) -> list:
    """A deep record of a CONDITIONING: the list, each entry, tensor values and dict contents."""
    return [
        (
            entry,
            entry[0],
            entry[0].clone(),
            entry[1],
            dict(entry[1]),
            {k: v.clone() for k, v in entry[1].items() if isinstance(v, torch.Tensor)},
        )
        for entry in cond
    ]


def assert_unchanged(cond: list, snap: list) -> None:
    assert len(cond) == len(snap)
    for entry, (e, t, t_val, d, d_copy, tensors) in zip(cond, snap):
        assert entry is e and len(entry) == 2
        assert entry[0] is t and torch.equal(entry[0], t_val)
        assert entry[1] is d and entry[1].keys() == d_copy.keys()
        for k, v in entry[1].items():
            assert v is d_copy[k], k
        for k, v in tensors.items():
            assert torch.equal(entry[1][k], v), k


class ControlSpy(comfy.controlnet.ControlBase):
    """A ControlNet stand-in: records each ``get_control`` call; optionally adds ``value`` to the
    UNet's middle block (so its effect on the output is visible)."""

    def __init__(self, value: float | None = None) -> None:
        super().__init__()
        self.value = value
        self.calls: list[dict] = []

    def get_control(
        self, x_noisy: Tensor, t: Tensor, cond: dict, batched_number: int, transformer_options: dict
    ) -> dict | None:
        self.calls.append(
            {
                "batch": x_noisy.shape[0],
                "sigma": float(t[0]),
                "cond_or_uncond": list(transformer_options.get("cond_or_uncond", [])),
            }
        )
        if self.value is None:
            return None
        h, w = x_noisy.shape[2] // 2, x_noisy.shape[3] // 2
        middle = torch.full(
            (x_noisy.shape[0], tiny_models.MIDDLE_CHANNELS, h, w),
            self.value,
            dtype=x_noisy.dtype,
            device=x_noisy.device,
        )
        return {"input": [], "middle": [middle], "output": []}

    def copy(self) -> ControlSpy:
        c = ControlSpy(self.value)
        self.copy_to(c)
        c.calls = self.calls
        return c


@pytest.fixture
def sigmas(comfy_host: Any, tiny_unet: Any) -> Tensor:
    """A short descending schedule that does not start at sigma_max (a partial denoise)."""
    return comfy_host.get_sigmas(tiny_unet, "normal", 4)[1:]


def make_host(comfy_host: Any, model: Any, prompts: dict, cfg: float = 5.0, **kw: Any) -> Any:
    """A host over the fixture prompts."""
    return comfy_host.ComfyHost(
        model,
        prompts["original"],
        kw.pop("negative", prompts["negative"]),
        [prompts["guided_0"], prompts["guided_1"]],
        prompts["target"],
        cfg,
        **kw,
    )


# --------------------------------------------------------------------------------------------------
# equivalence with ComfyUI's own sampler
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["tiny_unet", "tiny_unet_v", "tiny_unet_flow"])
@pytest.mark.parametrize("role", ["target", "original"])
def test_euler_matches_comfy_sampler(
    request: pytest.FixtureRequest, comfy_host: Any, oir_host: Any, prompts: dict, model_name: str, role: str
) -> None:
    model = request.getfixturevalue(model_name)
    sigmas = comfy_host.get_sigmas(model, "normal", 4)[1:]  # flow: sigma_max is exactly 1.0; start below
    latent = raw_latent(10)
    cfg = 5.0
    host = make_host(comfy_host, model, prompts, cfg=cfg)
    stage = oir_host.Stage(role, sigmas, ROWS, tuple(latent.shape[1:]), "test")
    x0 = start_in_model_space(comfy_host, model, latent, sigmas[0])
    ours = comfy_host.model_space_out(model, host.run(stage, euler_body(x0, sigmas)))

    if role == "target":
        ref = comfy_euler(model, prompts["target"], prompts["negative"], cfg, sigmas, latent)
    else:
        ref = comfy_euler(model, prompts["original"], prompts["negative"], 1.0, sigmas, latent)
    assert torch.isfinite(ours).all()
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, latent, atol=1e-3)  # the model did something


def test_negative_none_uses_original(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    latent = raw_latent(11)
    host = make_host(comfy_host, tiny_unet, prompts, cfg=4.0, negative=None)
    stage = oir_host.Stage("target", sigmas, ROWS, tuple(latent.shape[1:]))
    ours = comfy_host.model_space_out(
        tiny_unet, host.run(stage, euler_body(comfy_host.model_space_in(tiny_unet, latent), sigmas))
    )
    ref = comfy_euler(tiny_unet, prompts["target"], prompts["original"], 4.0, sigmas, latent)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_ascending_sigmas_match_flipsigmas_unsampling(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict
) -> None:
    """An inversion stage (ascending sigmas, first 1e-4 as FlipSigmas sets it) equals ComfyUI's
    unsampling: FlipSigmas + euler + zero noise, on the original prompt at cfg 1."""
    sigmas = comfy_host.get_sigmas(tiny_unet, "normal", 4).flip(0)
    sigmas[0] = 1e-4
    latent = raw_latent(12)
    host = make_host(comfy_host, tiny_unet, prompts)
    stage = oir_host.Stage("original", sigmas, ROWS, tuple(latent.shape[1:]), "inversion")
    ours = comfy_host.model_space_out(
        tiny_unet, host.run(stage, euler_body(comfy_host.model_space_in(tiny_unet, latent), sigmas))
    )
    ref = comfy_euler(tiny_unet, prompts["original"], prompts["original"], 1.0, sigmas, latent)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours.abs().max() > 2 * latent.abs().max()  # really noised up


@pytest.mark.parametrize("with_control", [False, True])
def test_guided_rows_match_per_pair_cfg_guider(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor, with_control: bool
) -> None:
    """A batch mixing pairs 0 and 1 gives, row by row, what a plain CFGGuider(G_k, negative) gives.

    With ``with_control`` pair 0 carries a ControlNet marked ``control_apply_to_uncond`` (ComfyUI
    then copies it onto the negative), which the guided guider must reproduce per pair.
    """
    guided = [prompts["guided_0"], prompts["guided_1"]]
    if with_control:
        spy = ControlSpy(value=0.5)
        guided[0] = node_helpers.conditioning_set_values(
            guided[0], {"control": spy, "control_apply_to_uncond": True}
        )
    cfg = 6.0
    host = comfy_host.ComfyHost(
        tiny_unet,
        prompts["original"],
        prompts["negative"],
        guided,
        prompts["target"],
        cfg,
    )
    ids = torch.tensor([0, 1, 1, 0, 1])
    latent = raw_latent(13, rows=len(ids))
    stage = oir_host.Stage("guided", sigmas, len(ids), tuple(latent.shape[1:]), "search")
    ours = comfy_host.model_space_out(
        tiny_unet,
        host.run(stage, euler_body(comfy_host.model_space_in(tiny_unet, latent), sigmas, cond_ids=ids)),
    )
    for k in (0, 1):
        rows = torch.nonzero(ids == k).squeeze(1)
        ref = comfy_euler(tiny_unet, guided[k], prompts["negative"], cfg, sigmas, latent[rows])
        # pairs sharing a forward: fp32 rounding of another batch composition (relative 1e-5)
        assert float((ours[rows] - ref).abs().max()) <= 1e-5 * float(ref.abs().max()), k
    # the two pairs really differ: the same start under the other pair's prompt gives another result
    other = comfy_euler(tiny_unet, guided[1], prompts["negative"], cfg, sigmas, latent[:1])
    assert not torch.allclose(ours[:1], other, atol=1e-3)
    if with_control:
        assert any(1 in c["cond_or_uncond"] for c in spy.calls), "control not applied to the negative"


@pytest.mark.parametrize("setup", ["plain", "lora", "controlnet_on_both", "controlnet_on_pair_0"])
def test_pairs_share_one_forward_unless_they_differ_beyond_their_embeddings(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor, setup: str
) -> None:
    """All pairs' rows, cond and uncond, go through one UNet forward per model call when the guided
    prompts differ only in their embeddings (as OIR's guided prompts do: same template, same
    ControlNet and patches inherited from the original); each row still equals a plain
    ``CFGGuider(G_k, negative)``. A ControlNet on one pair only keeps the pairs apart."""
    guided = [prompts["guided_0"], prompts["guided_1"]]
    model = tiny_unet.clone()
    if setup == "lora":
        key = "diffusion_model.out.2.weight"
        delta = torch.randn(model.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(5))
        model.add_patches({key: ("diff", (0.2 * delta,))}, 1.0)
    if setup == "controlnet_on_both":
        control = ControlSpy(value=0.5)
        guided = [node_helpers.conditioning_set_values(g, {"control": control}) for g in guided]
    if setup == "controlnet_on_pair_0":
        guided[0] = node_helpers.conditioning_set_values(guided[0], {"control": ControlSpy(value=0.5)})
    batches: list[int] = []
    spied = model.clone()
    spied.set_model_unet_function_wrapper(
        lambda apply, args: (
            batches.append(args["input"].shape[0]),
            apply(args["input"], args["timestep"], **args["c"]),
        )[1]
    )
    cfg = 6.0
    host = comfy_host.ComfyHost(
        spied, prompts["original"], prompts["negative"], guided, prompts["target"], cfg
    )
    ids = torch.tensor([0, 1, 1, 0, 1])
    latent = raw_latent(17, rows=len(ids))
    stage = oir_host.Stage("guided", sigmas, len(ids), tuple(latent.shape[1:]), "search")
    ours = comfy_host.model_space_out(
        model, host.run(stage, euler_body(comfy_host.model_space_in(model, latent), sigmas, cond_ids=ids))
    )
    calls = len(sigmas) - 1
    rows = len(ids)
    per_call = {
        "plain": [2 * rows],  # every row of both pairs, cond and uncond, in one forward
        "lora": [2 * rows],
        # ComfyUI runs a cond with a ControlNet apart from an uncond without one (it does so for a
        # single prompt too): still one forward for all pairs' conds
        "controlnet_on_both": [rows, rows],
        "controlnet_on_pair_0": [2, 2, 2 * 3],  # the pairs apart: pair 0 cond, its uncond, pair 1
    }[setup]
    assert sorted(batches) == sorted(per_call * calls)
    for k in (0, 1):
        at = torch.nonzero(ids == k).squeeze(1)
        ref = comfy_euler(model, guided[k], prompts["negative"], cfg, sigmas, latent[at])
        # the same float ops on other batch compositions: fp32 kernels round differently (these raw
        # latents reach |x| ~ 100, where fp32's own step is ~1e-5)
        assert float((ours[at] - ref).abs().max()) <= 1e-5 * float(ref.abs().max()), (setup, k)


def test_guided_rejects_bad_cond_ids(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    host = make_host(comfy_host, tiny_unet, prompts)
    x = torch.zeros(2, 4, 8, 8)
    stage = oir_host.Stage("guided", sigmas, 2, (4, 8, 8))
    with pytest.raises(ValueError, match="cond_ids"):
        host.run(stage, one_call_body(x, sigmas[0], torch.tensor([0, 2])))
    with pytest.raises(ValueError, match="cond_ids"):
        host.run(stage, one_call_body(x, sigmas[0], None))


# --------------------------------------------------------------------------------------------------
# patches, ControlNet, conditioning integrity
# --------------------------------------------------------------------------------------------------

ROLES = ("original", "guided", "target")


def run_role(
    comfy_host: Any,
    oir_host: Any,
    host: Any,
    role: str,
    sigma: Tensor,
    sigmas: Tensor,
    ids: Tensor | None = None,
) -> Tensor:
    x = raw_latent(20, rows=3) * float(sigma)
    if role == "guided" and ids is None:
        ids = torch.tensor([0, 1, 0])
    stage = oir_host.Stage(role, sigmas, 3, (4, 8, 8))
    return host.run(stage, one_call_body(x, sigma, ids if role == "guided" else None))


def test_lora_patch_changes_every_role(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    key = "diffusion_model.out.2.weight"
    weight = tiny_unet.model.state_dict()[key]
    delta = torch.randn(weight.shape, generator=torch.Generator().manual_seed(5)) * 0.2
    lora = tiny_unet.clone()
    lora.add_patches({key: ("diff", (delta,))}, 1.0)
    plain_host = make_host(comfy_host, tiny_unet, prompts)
    lora_host = make_host(comfy_host, lora, prompts)
    for role in ROLES:
        before = run_role(comfy_host, oir_host, plain_host, role, sigmas[0], sigmas)
        patched = run_role(comfy_host, oir_host, lora_host, role, sigmas[0], sigmas)
        after = run_role(comfy_host, oir_host, plain_host, role, sigmas[0], sigmas)
        assert torch.isfinite(patched).all()
        assert (patched - before).abs().max() > 1e-3, role
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)  # the patch does not leak
    assert torch.equal(tiny_unet.model.state_dict()[key], weight)


def test_attention_patch_and_sample_sigmas_seen_in_every_role(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    calls: list[dict] = []

    def attn1_spy(q: Tensor, k: Tensor, v: Tensor, extra_options: dict) -> tuple[Tensor, Tensor, Tensor]:
        calls.append(
            {
                "cond_or_uncond": list(extra_options["cond_or_uncond"]),
                "sample_sigmas": extra_options["sample_sigmas"].detach().cpu().clone(),
            }
        )
        return q, k, v

    patched = tiny_unet.clone()
    patched.set_model_attn1_patch(attn1_spy)
    host = make_host(comfy_host, patched, prompts)
    ascending = sigmas.flip(0)
    for role, stage_sigmas in (("original", ascending), ("guided", sigmas), ("target", sigmas)):
        calls.clear()
        run_role(comfy_host, oir_host, host, role, stage_sigmas[0], stage_sigmas)
        assert calls, role
        assert all(torch.equal(c["sample_sigmas"], stage_sigmas) for c in calls), role
        branches = {i for c in calls for i in c["cond_or_uncond"]}
        assert branches == ({0} if role == "original" else {0, 1}), role
    assert "attn1_patch" not in tiny_unet.model_options.get("transformer_options", {}).get("patches", {})


def test_controlnet_in_conditioning_is_called_where_used(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    spies = {name: ControlSpy() for name in ("original", "guided_1", "target")}
    conds = dict(prompts)
    for name, spy in spies.items():
        conds[name] = node_helpers.conditioning_set_values(prompts[name], {"control": spy})
    guided = [conds["guided_0"], conds["guided_1"]]
    snaps = {name: snapshot(c) for name, c in conds.items()}
    # negative None: the original prompt (with its ControlNet) is the negative of guided/target
    host = comfy_host.ComfyHost(tiny_unet, conds["original"], None, guided, conds["target"], 5.0)

    expected = {  # role -> spy -> branches (0 cond, 1 uncond) it must have been called for
        "original": {"original": {0}, "guided_1": set(), "target": set()},
        "guided": {"original": {1}, "guided_1": {0}, "target": set()},
        "target": {"original": {1}, "guided_1": set(), "target": {0}},
    }
    for role, per_spy in expected.items():
        for spy in spies.values():
            spy.calls.clear()
        run_role(comfy_host, oir_host, host, role, sigmas[0], sigmas, ids=torch.tensor([0, 1, 0]))
        for name, branches in per_spy.items():
            seen = {i for c in spies[name].calls for i in c["cond_or_uncond"]}
            assert seen == branches, (role, name, spies[name].calls)
            assert all(abs(c["sigma"] - float(sigmas[0])) < 1e-4 for c in spies[name].calls)
    for name, c in conds.items():
        assert_unchanged(c, snaps[name])
    assert "control" not in prompts["original"][0][1]


def test_user_conditioning_never_mutated(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    masked = node_helpers.conditioning_set_values(
        prompts["guided_0"],
        {"mask": torch.ones(1, 16, 16), "mask_strength": 1.0, "start_percent": 0.0, "end_percent": 1.0},
    )
    conds = {
        "original": prompts["original"],
        "negative": prompts["negative"],
        "guided_0": masked,
        "guided_1": prompts["guided_1"],
        "target": prompts["target"],
    }
    snaps = {name: snapshot(c) for name, c in conds.items()}
    host = comfy_host.ComfyHost(
        tiny_unet,
        conds["original"],
        conds["negative"],
        [conds["guided_0"], conds["guided_1"]],
        conds["target"],
        5.0,
    )
    for role in ROLES:
        out = run_role(comfy_host, oir_host, host, role, sigmas[0], sigmas)
        assert torch.isfinite(out).all()
    for name, c in conds.items():
        assert_unchanged(c, snaps[name])


# --------------------------------------------------------------------------------------------------
# model families, memory, interruption, helpers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["tiny_unet_v", "tiny_unet_flow"])
def test_denoiser_call_finite_for_v_and_flow(
    request: pytest.FixtureRequest, comfy_host: Any, oir_host: Any, prompts: dict, model_name: str
) -> None:
    model = request.getfixturevalue(model_name)
    sigmas = comfy_host.get_sigmas(model, "simple", 4)[1:]
    host = make_host(comfy_host, model, prompts)
    for role in ROLES:
        out = run_role(comfy_host, oir_host, host, role, sigmas[0], sigmas)
        assert out.shape == (3, 4, 8, 8) and torch.isfinite(out).all()


def test_model_family_helpers(comfy_host: Any, tiny_unet: Any, tiny_unet_v: Any, tiny_unet_flow: Any) -> None:
    assert not comfy_host.is_flow_model(tiny_unet)
    assert not comfy_host.is_flow_model(tiny_unet_v)
    assert comfy_host.is_flow_model(tiny_unet_flow)
    ms = tiny_unet.get_model_object("model_sampling")
    assert comfy_host.clean_sigma(tiny_unet) == pytest.approx(float(ms.sigmas[0]))
    assert 0.02 < comfy_host.clean_sigma(tiny_unet) < 0.04  # SD's t = 0 level, ~0.029
    sig = comfy_host.get_sigmas(tiny_unet, "ddim_uniform", 10)
    assert sig.shape == (11,) and sig.dtype == torch.float32 and float(sig[-1]) == 0.0
    assert bool((sig[:-1] > sig[1:]).all())
    assert float(comfy_host.get_sigmas(tiny_unet_flow, "simple", 4)[0]) == pytest.approx(1.0)
    latent = raw_latent(30)
    x = comfy_host.model_space_in(tiny_unet, latent)
    torch.testing.assert_close(x, latent * 0.18215)  # SD15 latent format
    torch.testing.assert_close(comfy_host.model_space_out(tiny_unet, x), latent)


def brute_force_k(
    memory_required: Callable, shape: tuple, rows: int, free: float, branches: int, cap: int | None = None
) -> int:
    limit = rows if cap is None else min(rows, cap)
    fitting = [k for k in range(1, limit + 1) if memory_required([k * branches, *shape]) * 1.5 < free]
    return max(fitting) if fitting else 1


def test_fit_max_batch_matches_memory_required(comfy_host: Any, tiny_unet: Any) -> None:
    mem = tiny_unet.model.memory_required
    shape = (4, 8, 8)
    per_row = mem([2, *shape]) * 1.5
    for branches in (1, 2):
        for free in (1.0, per_row * 0.5, per_row * 3.2, per_row * 7.0, per_row * 100.0):
            for cap in (None, 4):
                expected = brute_force_k(mem, shape, 20, free, branches, cap)
                got = comfy_host.fit_max_batch(mem, shape, 20, free, branches=branches, cap=cap)
                assert got == expected, (branches, free, cap)
    assert comfy_host.fit_max_batch(mem, shape, 20, per_row * 3.2, branches=2) == 3
    assert comfy_host.fit_max_batch(mem, shape, 20, per_row * 3.2, branches=1) == 6
    assert comfy_host.fit_max_batch(mem, shape, 5, 1e30) == 5
    assert comfy_host.fit_max_batch(mem, shape, 5, 0.0) == 1


@pytest.mark.parametrize("role,user_cap", [("guided", None), ("original", None), ("target", 2)])
def test_host_passes_memory_sized_max_batch(
    monkeypatch: pytest.MonkeyPatch,
    comfy_host: Any,
    oir_host: Any,
    tiny_unet: Any,
    prompts: dict,
    sigmas: Tensor,
    role: str,
    user_cap: int | None,
) -> None:
    mem = tiny_unet.model.memory_required
    shape = (4, 8, 8)
    rows = 12
    free = mem([2, *shape]) * 1.5 * 4.6  # a budget for 4 rows with CFG, 9 without
    branches = 1 if role == "original" else 2
    expected = brute_force_k(mem, shape, rows, free, branches, user_cap)
    assert expected == (min(4, user_cap or 99) if branches == 2 else 9)

    reserved: list[tuple] = []
    real_prepare = comfy.sampler_helpers.prepare_sampling

    def prepare_spy(model: Any, noise_shape: Any, *args: Any, **kwargs: Any) -> Any:
        reserved.append(tuple(noise_shape))
        return real_prepare(model, noise_shape, *args, **kwargs)

    monkeypatch.setattr(comfy.sampler_helpers, "prepare_sampling", prepare_spy)
    host = make_host(comfy_host, tiny_unet, prompts, max_batch=user_cap)
    host.memory_budget_override = free
    record: dict = {}
    x = raw_latent(40, rows=rows)
    ids = torch.arange(rows) % 2 if role == "guided" else None

    def body(denoise: Any, max_batch: int | None) -> list:
        record["max_batch"] = max_batch
        return [
            denoise(chunk, sigmas[0], None if ids is None else ids[i : i + max_batch])
            for i, chunk in zip(range(0, rows, max_batch), x.split(max_batch))
        ]

    out = host.run(oir_host.Stage(role, sigmas, rows, shape), body)
    assert record["max_batch"] == expected == host.last_max_batch
    split = host.split_report()[-1]
    assert split["rows_per_call"] == expected and split["as_planned"]
    assert split["limited_by"] == ("max_batch" if user_cap else "memory")
    assert sum(o.shape[0] for o in out) == rows
    # ComfyUI is asked to reserve for one row (or the user's cap), never for the whole stage: the
    # chunk itself is sized above from the memory left after loading.
    assert reserved == [(1 if user_cap is None else min(rows, user_cap), *shape)]


def test_interrupt_is_honoured_on_the_first_call(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    calls: list[int] = []
    spy_model = tiny_unet.clone()
    spy_model.set_model_attn1_patch(lambda q, k, v, extra: (calls.append(1), (q, k, v))[1])
    host = make_host(comfy_host, spy_model, prompts)
    entered: list[bool] = []

    def body(denoise: Any, max_batch: int | None) -> Tensor:
        entered.append(True)
        return denoise(torch.zeros(1, 4, 8, 8), sigmas[0], None)

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            host.run(oir_host.Stage("target", sigmas, 1, (4, 8, 8)), body)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert entered == [True] and calls == []
    out = host.run(oir_host.Stage("target", sigmas, 1, (4, 8, 8)), body)  # usable afterwards
    assert torch.isfinite(out).all() and calls


def test_run_validates_stage(comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict) -> None:
    host = comfy_host.ComfyHost(tiny_unet, prompts["original"], None, [], None, 5.0)
    sig = torch.tensor([1.0, 0.0])
    with pytest.raises(ValueError, match="target"):
        host.run(oir_host.Stage("target", sig, 1, (4, 8, 8)), lambda d, m: None)
    with pytest.raises(ValueError, match="guided"):
        host.run(oir_host.Stage("guided", sig, 1, (4, 8, 8)), lambda d, m: None)
    with pytest.raises(ValueError, match="no sigmas"):
        host.run(oir_host.Stage("original", torch.zeros(0), 1, (4, 8, 8)), lambda d, m: None)
    with pytest.raises(ValueError, match="max_batch"):
        comfy_host.ComfyHost(tiny_unet, prompts["original"], None, [], None, 5.0, max_batch=0)


def test_calls_follow_the_plan_and_a_cancel_stops_within_one_call(
    comfy_host: Any, oir_host: Any, tiny_unet: Any, prompts: dict, sigmas: Tensor
) -> None:
    """A batch larger than the planned rows is split into planned calls whatever the free memory
    (ARCHITECTURE.md §5); a cancel set during a call stops the stage before the next call."""
    rows = 12
    x = raw_latent(41, rows=rows)
    ids = torch.zeros(rows, dtype=torch.long)  # one pair: one forward per call (cond + uncond)
    batches: list[int] = []
    spy = tiny_unet.clone()
    spy.set_model_unet_function_wrapper(
        lambda apply, args: (
            batches.append(args["input"].shape[0]),
            apply(args["input"], args["timestep"], **args["c"]),
        )[1]
    )
    stage = oir_host.Stage("guided", sigmas, rows, (4, 8, 8))
    budget = tiny_unet.model.memory_required([2, 4, 8, 8]) * 1.5 * 5.5  # 5 rows with CFG

    def chunked_body(denoise: Any, max_batch: int | None) -> Tensor:
        assert max_batch is not None
        return torch.cat([denoise(c, sigmas[0], i) for c, i in zip(x.split(max_batch), ids.split(max_batch))])

    host = make_host(comfy_host, spy, prompts)
    host.memory_budget_override = budget
    first = host.run(stage, chunked_body)
    assert batches == [10, 10, 4]  # cond + uncond of 5, 5 and 2 rows in one forward each
    assert host.split_report()[-1] == {
        "stage": "guided", "rows_per_call": 5, "limited_by": "memory", "memory_rows": 5,
        "latency_rows": host.reports[-1].plan.latency_rows, "calls": 3, "largest_call": 5,
        "fallbacks": [], "as_planned": True,
    }
    batches.clear()
    again = host.run(stage, chunked_body)
    assert batches == [10, 10, 4] and torch.equal(again, first)

    batches.clear()
    cancelling = tiny_unet.clone()

    def cancel_during_the_first_call(apply: Any, args: dict) -> Any:
        batches.append(args["input"].shape[0])
        comfy.model_management.interrupt_current_processing(True)
        return apply(args["input"], args["timestep"], **args["c"])

    cancelling.set_model_unet_function_wrapper(cancel_during_the_first_call)
    cancel_host = make_host(comfy_host, cancelling, prompts)
    cancel_host.memory_budget_override = budget
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            cancel_host.run(stage, chunked_body)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert batches == [10]  # the first call finished, no other started
