"""CLIP scorer (ARCHITECTURE.md §4.4, §6) on tiny random-weight models, saved and loaded for real."""

from __future__ import annotations

import gc
import json
import math
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
import tiny_clip
import torch
from safetensors.torch import load_file

from oir_core.clip_backends import CLIP_MEAN, CLIP_STD, ClipModel, ClipPreprocess, load_clip
from oir_core.clip_scorer import (
    ClipScorer,
    attention_bias,
    crop_geometry,
    load_clip_scorer,
    patch_region,
    preprocess_images,
    preprocess_images_official,
    preprocess_mask,
    quantize_images,
    region_tokens,
)
from oir_core.errors import OIRInputError
from oir_core.metric import search_scores

BACKENDS = ("transformers", "open_clip")
HF_MEAN = (0.5, 0.4, 0.3)
HF_STD = (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip")
    paths = {
        # The folder name claims patch 32 / 224 px: the loader must read 8 / 32 from config.json.
        "transformers": tiny_clip.make_transformers_clip(
            root / "clip-vit-base-patch32",
            preprocessor={
                "image_mean": list(HF_MEAN),
                "image_std": list(HF_STD),
                "size": {"shortest_edge": 32},
                "crop_size": {"height": 32, "width": 32},
            },
        ),
        "open_clip": tiny_clip.make_open_clip(root / "oc", "ViT-L-14-336"),
    }
    return paths


@pytest.fixture(scope="module")
def models(files: dict[str, Path]) -> dict[str, ClipModel]:
    return {name: load_clip(path, backend=name, device="cpu") for name, path in files.items()}


@pytest.fixture(params=BACKENDS)
def model(request: pytest.FixtureRequest, models: dict[str, ClipModel]) -> ClipModel:
    return models[request.param]


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _block_mask(h: int, w: int, rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(h, w)
    mask[rows, cols] = 1.0
    return mask


# --------------------------------------------------------------------------------------------------
# Loading and configuration


def test_sizes_and_normalization_come_from_config(models: dict[str, ClipModel]) -> None:
    hf, oc = models["transformers"], models["open_clip"]
    assert (hf.image_size, hf.patch_size, hf.grid_size, hf.num_tokens) == (32, 8, 4, 17)
    assert hf.preprocess == ClipPreprocess(32, 32, HF_MEAN, HF_STD)
    # the open_clip checkpoint is *named* ViT-L-14-336 but its sidecar model_cfg says 32 px / patch 8
    assert (oc.image_size, oc.patch_size) == (32, 8)
    assert oc.preprocess == ClipPreprocess(32, 32, CLIP_MEAN, CLIP_STD)


def test_open_clip_sidecar_preprocess_and_patch16(tmp_path: Path) -> None:
    ckpt = tiny_clip.make_open_clip(tmp_path, "m", patch_size=16)
    spec = json.loads(ckpt.with_suffix(".json").read_text())
    spec["preprocess_cfg"] = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    ckpt.with_suffix(".json").write_text(json.dumps(spec))
    loaded = load_clip(ckpt, device="cpu")
    assert loaded.grid_size == 2 and loaded.num_tokens == 5
    assert loaded.preprocess.mean == (0.1, 0.2, 0.3) and loaded.preprocess.std == (0.4, 0.5, 0.6)


def test_load_keeps_no_hidden_copy(files: dict[str, Path], models: dict[str, ClipModel]) -> None:
    """The host owns the loaded CLIP: no module-level cache keeps it (or its weights) alive."""
    path = files["open_clip"]
    again = load_clip(path, device="cpu")
    assert again is not models["open_clip"] and again.model is not models["open_clip"].model
    double = load_clip(path, device="cpu", dtype=torch.float64)
    assert double.dtype == torch.float64 and next(double.model.parameters()).dtype == torch.float64
    gone = weakref.ref(double.model)
    del double
    gc.collect()
    assert gone() is None


def test_scorer_runs_the_host_loading_hook_before_each_use(
    files: dict[str, Path], models: dict[str, ClipModel]
) -> None:
    """ComfyUI may offload the CLIP between uses: every scorer entry point loads it first."""
    model = load_clip(files["transformers"], device="cpu")
    calls: list[str] = []
    model.before_use = lambda: calls.append("load")
    scorer = ClipScorer(model)
    images = torch.rand(2, 32, 32, 3)
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1.0
    scorer.score(images, images[0], mask, "a cat")
    after_score = len(calls)
    assert after_score >= 2  # text (first time) and images at least
    scorer.fidelity_scores(images, images[0], mask)
    scorer.masked_image_embeddings(images, mask)
    assert len(calls) == after_score + 2
    assert model.device == torch.device("cpu") == model.ready()


def test_open_clip_local_dir_layout(
    tmp_path: Path, models: dict[str, ClipModel], files: dict[str, Path]
) -> None:
    folder = tmp_path / "local"
    folder.mkdir()
    shutil.copy(files["open_clip"], folder / "open_clip_model.safetensors")
    cfg = json.loads(files["open_clip"].with_suffix(".json").read_text())["model_cfg"]
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    loaded = load_clip(folder, device="cpu")
    pixels = preprocess_images(_images(2, 32, 32), loaded.preprocess)
    assert torch.allclose(loaded.encode_image(pixels), models["open_clip"].encode_image(pixels))


def test_transformers_tokenizer_fallback(tmp_path: Path) -> None:
    folder = tiny_clip.make_transformers_clip(tmp_path / "no_tok", with_tokenizer=False)
    loaded = load_clip(folder, device="cpu")
    texts = loaded.encode_text(["a red cat", "a blue cube"])
    assert texts.shape == (2, tiny_clip.EMBED) and not torch.allclose(texts[0], texts[1])
    # the fallback must see the same ids as open_clip's tokenizer gives: EOS pooled, padding ignored
    from open_clip.tokenizer import SimpleTokenizer

    ids = SimpleTokenizer(context_length=tiny_clip.CONTEXT)(["a red cat"])
    eos = int((ids[0] == 49407).nonzero()[0])
    hidden = loaded.model.text_model(input_ids=ids).last_hidden_state
    assert torch.allclose(texts[0], loaded.model.text_projection(hidden[0, eos]), atol=1e-5)


def test_transformers_without_tokenizer_and_tiny_vocab_is_refused(tmp_path: Path) -> None:
    folder = tiny_clip.make_transformers_clip(tmp_path / "tiny_vocab")
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(OIRInputError, match="no tokenizer files") as info:
        load_clip(folder, device="cpu")
    assert "tokenizer.json" in info.value.fix


def test_pickle_checkpoints(tmp_path: Path, files: dict[str, Path], models: dict[str, ClipModel]) -> None:
    state = load_file(str(files["open_clip"]))
    sidecar = files["open_clip"].with_suffix(".json").read_text()
    pixels = preprocess_images(_images(2, 32, 32), models["open_clip"].preprocess)
    expected = models["open_clip"].encode_image(pixels)

    good = tmp_path / "good.pt"
    torch.save({"state_dict": state, "epoch": 3}, good)  # tensors and primitives: weights-only loadable
    good.with_suffix(".json").write_text(sidecar)
    assert torch.allclose(load_clip(good, device="cpu").encode_image(pixels), expected)

    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": state, "extra": np.float64(1.0).__class__}, bad)  # a pickled class object
    bad.with_suffix(".json").write_text(sidecar)
    with pytest.raises(OIRInputError, match="refused") as info:
        load_clip(bad, device="cpu")
    assert "safetensors" in info.value.fix


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("missing", "not found"),
        ("corrupt", "cannot be read as safetensors"),
        ("unknown_arch", "not an open_clip architecture"),
        ("no_sidecar", "architecture of"),
        ("mismatch", "does not match the checkpoint"),
        ("suffix", "unsupported file type"),
        ("hf_no_config", "neither config.json"),
        ("hf_corrupt", "cannot be read as safetensors"),
        ("hf_wrong_type", "model_type"),
        ("backend", "unknown CLIP backend"),
        ("open_clip_on_hf_folder", "no open_clip_config.json"),
        ("device", "not a torch device"),
    ],
)
def test_loader_errors(tmp_path: Path, files: dict[str, Path], case: str, match: str) -> None:
    oc = files["open_clip"]
    sidecar = json.loads(oc.with_suffix(".json").read_text())
    target = tmp_path / "m.safetensors"
    backend = "auto"
    if case == "missing":
        target = tmp_path / "absent.safetensors"
    elif case == "corrupt":
        target.write_bytes(b"\x00garbage" * 10)
        target.with_suffix(".json").write_text(json.dumps(sidecar))
    elif case in ("unknown_arch", "no_sidecar", "mismatch"):
        shutil.copy(oc, target)
        if case == "unknown_arch":
            target.with_suffix(".json").write_text(json.dumps({"architecture": "NoSuchNet-B-99"}))
        elif case == "mismatch":
            sidecar["model_cfg"]["vision_cfg"]["width"] = 48
            target.with_suffix(".json").write_text(json.dumps(sidecar))
    elif case == "suffix":
        target = tmp_path / "m.onnx"
        target.write_bytes(b"x")
    elif case.startswith("hf_"):
        target = tmp_path / "hf"
        shutil.copytree(files["transformers"], target)
        if case == "hf_no_config":
            (target / "config.json").unlink()
        elif case == "hf_corrupt":
            (target / "model.safetensors").write_bytes(b"{not safetensors")
        else:
            config = json.loads((target / "config.json").read_text())
            config["model_type"] = "siglip"
            (target / "config.json").write_text(json.dumps(config))
    elif case == "backend":
        target, backend = oc, "onnx"
    elif case == "open_clip_on_hf_folder":
        target, backend = files["transformers"], "open_clip"
    device = "tpu-nonsense" if case == "device" else "cpu"
    if case == "device":
        target = oc
    with pytest.raises(OIRInputError, match=match) as info:
        load_clip(target, backend=backend, device=device)  # type: ignore[arg-type]
    assert info.value.fix and info.value.input_name


# --------------------------------------------------------------------------------------------------
# Preprocessing geometry


def test_crop_geometry_values() -> None:
    prep = ClipPreprocess(32, 32, CLIP_MEAN, CLIP_STD)
    assert crop_geometry(64, 128, prep) == (32, 64, 0, 16)
    assert crop_geometry(128, 64, prep) == (64, 32, 16, 0)
    assert crop_geometry(50, 75, prep) == (32, 48, 0, 8)
    assert crop_geometry(32, 32, prep) == (32, 32, 0, 0)
    assert crop_geometry(100, 100, ClipPreprocess(40, 32, CLIP_MEAN, CLIP_STD)) == (40, 40, 4, 4)


@pytest.mark.parametrize(("h", "w"), [(64, 128), (128, 64), (96, 96)])
@pytest.mark.parametrize("mask_scale", [1, 2])
def test_mask_follows_the_image_crop(h: int, w: int, mask_scale: int) -> None:
    """An image that *is* its mask (white on black) must come out of preprocessing equal to the mask."""
    prep = ClipPreprocess(32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    new_h, _, top, left = crop_geometry(h, w, prep)
    factor = h // new_h
    # a block whose edges fall on pixel edges at every scale involved (crop rows 8..20, cols 12..28)
    mask = _block_mask(
        h,
        w,
        slice((top + 8) * factor, (top + 20) * factor),
        slice((left + 12) * factor, (left + 28) * factor),
    )
    image = mask[None, :, :, None].expand(1, h, w, 3)
    seen = preprocess_images(image, prep)[0, 0] > 0.5
    cropped = preprocess_mask(mask[::mask_scale, ::mask_scale][None], (h, w), prep)[0] > 0.5
    assert seen.shape == cropped.shape == (32, 32)
    assert cropped.any() and not cropped.all()
    assert torch.equal(seen, cropped)


@pytest.mark.parametrize(("h", "w"), [(96, 160), (160, 96)])
def test_preprocessing_matches_clip_image_processor(h: int, w: int) -> None:
    from transformers import CLIPImageProcessor

    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 12, 20, generator=torch.Generator().manual_seed(1)), size=(h, w), mode="bilinear"
    )
    image = (smooth.permute(0, 2, 3, 1) * 255).round() / 255
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = processor(images=[(image[0].numpy() * 255).astype(np.uint8)], return_tensors="pt")[
        "pixel_values"
    ]
    ours = preprocess_images(image, ClipPreprocess(32, 32, CLIP_MEAN, CLIP_STD))
    assert ours.shape == reference.shape
    # PIL/uint8 vs torch float bicubic differ slightly; a one-pixel misalignment would differ ~0.3
    assert (ours - reference).abs().mean() < 0.02


# --------------------------------------------------------------------------------------------------
# The attention restriction


def test_official_bias_equals_paper_construction_on_2x2_grid() -> None:
    # 2×2 patch grid; patches 0 and 3 (top-left, bottom-right) are in the region; CLS always in.
    mask_crop = torch.tensor(
        [[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]
    )
    tokens = region_tokens(patch_region(mask_crop, 2))
    assert tokens.tolist() == [[True, True, False, False, True]]
    expected = torch.tensor(
        [
            [1.0, 1.0, 0.0, 0.0, 1.0],
            [1.0, 1.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 0.0, 0.0, 1.0],
        ]
    )
    assert torch.equal(attention_bias(tokens, "official")[0], expected)
    inf = -math.inf
    hard_row = [0.0, 0.0, inf, inf, 0.0]
    assert attention_bias(tokens, "hard")[0].tolist() == [hard_row] * 5
    with pytest.raises(OIRInputError, match="attention_mode"):
        attention_bias(tokens, "soft")  # type: ignore[arg-type]


def test_patch_region_small_object_falls_back_to_best_patch() -> None:
    mask_crop = torch.zeros(1, 32, 32)
    mask_crop[0, 1:4, 26:30] = 1.0  # smaller than a patch and off every patch centre
    region = patch_region(mask_crop, 4)
    assert region.tolist() == [[i == 3 for i in range(16)]]


@pytest.mark.parametrize("geometry", ["official", "centered"])
@pytest.mark.parametrize("mode", ["hard", "official"])
def test_all_ones_mask_equals_library_features(model: ClipModel, mode: str, geometry: str) -> None:
    """Our manual block-by-block forward reproduces the library's image features.

    With every token in the region the hard bias is 0 and the official bias adds +1 to every logit,
    which softmax ignores: both must equal the library's own forward.
    """
    for h, w in [(32, 32), (40, 56)]:
        images = _images(3, h, w, seed=h)
        scorer = ClipScorer(model, attention_mode=mode, mask_geometry=geometry)  # type: ignore[arg-type]
        ours = scorer.masked_image_embeddings(images, torch.ones(h, w))
        prepare = preprocess_images_official if geometry == "official" else preprocess_images
        library = model.encode_image(prepare(images, model.preprocess))
        assert torch.allclose(ours, library, atol=1e-5, rtol=1e-5)


def test_region_changes_the_embedding(model: ClipModel) -> None:
    images = _images(2, 32, 32)
    part = _block_mask(32, 32, slice(8, 24), slice(0, 16))
    for mode in ("hard", "official"):
        scorer = ClipScorer(model, attention_mode=mode)  # type: ignore[arg-type]
        full = scorer.masked_image_embeddings(images, torch.ones(32, 32))
        masked = scorer.masked_image_embeddings(images, part)
        assert torch.isfinite(masked).all()
        assert (full - masked).abs().max() > 1e-3


def test_hard_mode_ignores_outside_pixels_official_does_not(model: ClipModel) -> None:
    # Images at the crop size (no resampling) and a patch-aligned mask: outside pixels are exactly
    # the out-of-region patches.
    base = _images(1, 32, 32, seed=3)
    mask = _block_mask(32, 32, slice(8, 24), slice(0, 16))
    inside = mask.bool()
    outside_changed = base.clone()
    outside_changed[:, ~inside] = torch.rand(int((~inside).sum()), 3)
    inside_changed = base.clone()
    inside_changed[:, inside] = torch.rand(int(inside.sum()), 3)
    batch = torch.cat([base, outside_changed, inside_changed])

    hard = ClipScorer(model, attention_mode="hard").editing_scores(batch, mask, "a red cat")
    assert abs(hard[1] - hard[0]) < 1e-6
    assert abs(hard[2] - hard[0]) > 1e-4
    official = ClipScorer(model, attention_mode="official").editing_scores(batch, mask, "a red cat")
    assert abs(official[1] - official[0]) > 1e-4
    assert abs(official[2] - official[0]) > 1e-4


def test_hard_mode_single_patch_region_has_no_nan(model: ClipModel) -> None:
    mask = _block_mask(32, 32, slice(0, 8), slice(24, 32))
    scores = ClipScorer(model, attention_mode="hard").editing_scores(_images(2, 32, 32), mask, "cat")
    assert torch.isfinite(scores).all()


def test_cropped_away_pixels_do_not_matter(model: ClipModel) -> None:
    """Pixels outside CLIP's centre crop change neither S_e nor official S_ne; pixels-space S_ne sees them."""
    base = _images(1, 64, 128, seed=5)
    mask = _block_mask(64, 128, slice(16, 48), slice(48, 80))
    changed = base.clone()
    changed[:, :, :12] = 1.0 - changed[:, :, :12]  # the crop starts at column 32
    batch = torch.cat([base, changed])
    for mode in ("hard", "official"):
        editing = ClipScorer(model, attention_mode=mode).editing_scores(batch, mask, "dog")  # type: ignore[arg-type]
        assert abs(editing[1] - editing[0]) < 1e-6
    official = ClipScorer(model, fidelity_space="official").fidelity_scores(batch, base[0], mask)
    assert official.tolist() == [0.0, 0.0]
    pixels = ClipScorer(model, fidelity_space="pixels").fidelity_scores(batch, base[0], mask)
    assert pixels[0] == 0 and pixels[1] < -1e-3


def test_per_image_masks_equal_separate_calls(model: ClipModel) -> None:
    images = _images(2, 40, 40, seed=9)
    masks = torch.stack(
        [_block_mask(40, 40, slice(0, 20), slice(0, 40)), _block_mask(40, 40, slice(10, 30), slice(10, 30))]
    )
    scorer = ClipScorer(model, attention_mode="hard")
    together = scorer.masked_image_embeddings(images, masks)
    apart = torch.cat([scorer.masked_image_embeddings(images[i : i + 1], masks[i]) for i in range(2)])
    assert torch.allclose(together, apart, atol=1e-5)
    with pytest.raises(OIRInputError, match="masks for"):
        scorer.masked_image_embeddings(_images(3, 40, 40), masks)


# --------------------------------------------------------------------------------------------------
# Fidelity and the full scorer


@pytest.mark.parametrize("space", ["official", "pixels"])
def test_fidelity_ignores_inside_and_sees_outside(models: dict[str, ClipModel], space: str) -> None:
    scorer = ClipScorer(models["open_clip"], fidelity_space=space)  # type: ignore[arg-type]
    original = _images(1, 32, 32, seed=11)[0]
    mask = _block_mask(32, 32, slice(4, 20), slice(6, 30))
    inside = mask.bool()
    in_changed = original.clone()
    in_changed[inside] = 1.0 - in_changed[inside]
    out_changed = original.clone()
    out_changed[~inside] = 1.0 - out_changed[~inside]
    scores = scorer.fidelity_scores(torch.stack([original, in_changed, out_changed]), original, mask)
    assert scores[0] == 0 and scores[1] == 0
    assert scores[2] < -1e-3


def test_fidelity_reductions(models: dict[str, ClipModel]) -> None:
    original = torch.full((32, 32, 3), 0.5)
    candidate = original.clone()
    candidate[:, :8] += 0.2  # outside the mask; mask covers columns 16..31
    mask = _block_mask(32, 32, slice(0, 32), slice(16, 32))
    pixels = ClipScorer(models["open_clip"], fidelity_space="pixels").fidelity_scores(
        candidate[None], original, mask
    )
    # 1/2 of the outside elements carry error 0.2²
    assert pixels.item() == pytest.approx(-(0.2**2) / 2, rel=1e-5)
    official = ClipScorer(models["open_clip"], fidelity_space="official")
    got = official.fidelity_scores(candidate[None], original, mask)
    # CLIP-normalized error (0.2/std_c)², on 1/4 of all 3·32² elements (zeros included in the mean)
    expected = sum((0.2 / s) ** 2 for s in CLIP_STD) / 3 / 4
    assert got.item() == pytest.approx(-expected, rel=1e-5)
    everything = torch.ones(32, 32)
    assert ClipScorer(models["open_clip"], fidelity_space="pixels").fidelity_scores(
        candidate[None], original, everything
    ).tolist() == [0.0]


def test_batched_scoring_equals_one_by_one(model: ClipModel) -> None:
    candidates = _images(5, 48, 40, seed=21)
    original = _images(1, 48, 40, seed=22)[0]
    mask = _block_mask(48, 40, slice(10, 40), slice(5, 30))
    scorer = ClipScorer(model, attention_mode="official")
    editing, fidelity = scorer.score(candidates, original, mask, "a cake")
    singles = [scorer.score(candidates[i : i + 1], original, mask, "a cake") for i in range(5)]
    assert torch.allclose(editing, torch.cat([s[0] for s in singles]), atol=1e-6)
    assert torch.allclose(fidelity, torch.cat([s[1] for s in singles]), atol=1e-6)
    steps = [2, 4, 6, 8, 10]
    whole = search_scores(scorer, steps, candidates, original, mask, "a cake", chunk_size=5)
    chunked = search_scores(scorer, steps, candidates, original, mask, "a cake", chunk_size=2)
    assert whole.editing == pytest.approx(chunked.editing, abs=1e-6)
    assert whole.chosen_step == chunked.chosen_step
    assert whole.editing == pytest.approx(editing.tolist(), abs=1e-6)


def test_editing_score_is_cosine_with_target_text(model: ClipModel) -> None:
    images = _images(2, 32, 32, seed=4)
    mask = _block_mask(32, 32, slice(0, 16), slice(0, 32))
    scorer = ClipScorer(model, attention_mode="hard")
    scores = scorer.editing_scores(images, mask, "a cat")
    text = model.encode_text(["a cat"])[0]
    embeddings = scorer.masked_image_embeddings(images, mask)
    manual = (embeddings @ text) / (embeddings.norm(dim=-1) * text.norm())
    assert torch.allclose(scores, manual, atol=1e-6)
    assert scores.abs().max() <= 1.0
    assert not torch.allclose(scores, scorer.editing_scores(images, mask, "a dog"))


def test_scorer_input_errors(models: dict[str, ClipModel]) -> None:
    scorer = ClipScorer(models["open_clip"])
    images = _images(2, 64, 128)
    with pytest.raises(OIRInputError, match="empty"):
        scorer.score(images, images[0], torch.zeros(64, 128), "cat")
    with pytest.raises(OIRInputError, match="centre square"):
        ClipScorer(models["open_clip"], mask_geometry="centered").score(
            images, images[0], _block_mask(64, 128, slice(0, 64), slice(0, 16)), "cat"
        )
    with pytest.raises(OIRInputError, match="one mask"):
        scorer.score(images, images[0], torch.ones(2, 64, 128), "cat")
    with pytest.raises(OIRInputError, match="target_text"):
        scorer.score(images, images[0], torch.ones(64, 128), " ")
    with pytest.raises(OIRInputError, match="attention_mode"):
        ClipScorer(models["open_clip"], attention_mode="soft")  # type: ignore[arg-type]
    with pytest.raises(OIRInputError, match="fidelity_space"):
        ClipScorer(models["open_clip"], fidelity_space="latent")  # type: ignore[arg-type]
    with pytest.raises(OIRInputError, match="mask_geometry"):
        ClipScorer(models["open_clip"], mask_geometry="aligned")  # type: ignore[arg-type]


def test_load_clip_scorer(files: dict[str, Path], models: dict[str, ClipModel]) -> None:
    scorer = load_clip_scorer(
        str(files["transformers"]), device="cpu", attention_mode="hard", fidelity_space="pixels"
    )
    same = models["transformers"]
    assert scorer.model.path == same.path and scorer.model.backend == "transformers"
    images, mask = torch.rand(2, 32, 32, 3), torch.ones(32, 32)
    assert torch.equal(
        scorer.masked_image_embeddings(images, mask),
        ClipScorer(same, "hard").masked_image_embeddings(images, mask),
    )
    assert (scorer.attention_mode, scorer.fidelity_space) == ("hard", "pixels")


@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_scores_track_float32(
    files: dict[str, Path], models: dict[str, ClipModel], backend: str
) -> None:
    """fp16 weights (the GPU setting): the -inf hard bias and the +1 official bias stay NaN-free."""
    half = load_clip(files[backend], backend=backend, device="cpu", dtype=torch.float16)
    images = _images(3, 48, 40, seed=31)
    mask = _block_mask(48, 40, slice(10, 30), slice(5, 25))
    for mode in ("hard", "official"):
        full = ClipScorer(models[backend], attention_mode=mode).score(images, images[0], mask, "a cat")[0]
        reduced = ClipScorer(half, attention_mode=mode).score(images, images[0], mask, "a cat")[0]
        assert torch.isfinite(reduced).all()
        assert torch.allclose(full, reduced, atol=5e-3)


@pytest.mark.parametrize(
    ("geometry", "space"),
    [("official", "official"), ("official", "pixels"), ("centered", "official"), ("centered", "pixels")],
)
def test_candidates_kept_as_8_bit_leave_the_metric_unchanged(
    models: dict[str, ClipModel], geometry: str, space: str
) -> None:
    """The search keeps its candidates as uint8 (a quarter of float32's memory); every metric mode
    reads 8-bit images (as the official code's candidates are), so the scores are identical."""
    scorer = ClipScorer(models["transformers"], mask_geometry=geometry, fidelity_space=space)  # type: ignore[arg-type]
    images = _images(6, 48, 80, seed=3)
    original = _images(1, 48, 80, seed=4)[0]
    mask = _block_mask(48, 80, slice(5, 31), slice(9, 57))
    stored = quantize_images(images)
    assert stored.dtype == torch.uint8 and stored.element_size() * 4 == images.element_size()
    editing, fidelity = scorer.score(images, original, mask, "a cat")
    editing_8, fidelity_8 = scorer.score(stored.float() / 255.0, original, mask, "a cat")
    assert torch.equal(editing, editing_8) and torch.equal(fidelity, fidelity_8)
