"""The CLIP search scorer: OIR's ``S_e`` and ``S_ne`` (paper §"search metric"; ARCHITECTURE.md §4.4).

- ``S_e(t) = cos(text(target phrase), masked_image(c_t, M_k))``: CLIP's image embedding of the
  candidate with ViT attention restricted to the mask region (no ×100 logit scale).
- ``S_ne(t) = -MSE(c_t, original)`` outside ``M_k``.

Mask geometry (how images and masks reach CLIP's ``S×S`` input and ``(S/p)²`` patch grid):

- ``official`` (the OIR code): images become 8-bit the way the official decode writes them
  (``(x·255).astype(uint8)``, see :func:`to_uint8`), go through CLIP's processor as
  transformers' PIL ``CLIPImageProcessor`` does (bicubic resize of the shortest side, centred
  crop, rescale, normalize). The mask is
  read like the official mask files (any value ≥ 1/255 is inside), then resized *straight* to the
  patch grid with ``F.interpolate(mode="nearest")`` (each patch takes its top-left pixel), ignoring
  the processor's resize and crop; the fidelity mask likewise goes ``nearest`` straight to ``S×S``,
  so a non-square image's mask is squashed onto the crop.
- ``centered`` (this pack's): the mask follows the image's resize and centre crop (nearest,
  centre-sampled) so it stays aligned with the pixels CLIP sees, and is sampled at each patch's
  centre, thresholded at 0.5; images are resized in float (bicubic, antialiased, clamped to 0..1).
  It differs from ``official`` only where mask edges fall off the patch grid or the image is not
  square; there it keeps the region on the object instead of shifting it up-left by up to a patch.

CLS always counts as inside.

Attention modes (the bias is added to the attention logits of every layer and head):

- ``official``: the paper's code. ``A[i,j] = 1`` iff tokens ``i`` and ``j`` are both in the region,
  else 0, added to the logits: a soft +1 bias (in-region pairs get about e ≈ 2.7× weight). Pixels
  outside the region still influence the embedding.
- ``hard``: keys outside the region get ``-inf``: no token attends to outside tokens, so the CLS
  embedding depends on in-region patches only. Out-of-region *query* rows still see CLS, so no row
  is all ``-inf`` (no NaN); their outputs never reach CLS.

Fidelity spaces:

- ``official``: both images CLIP-preprocessed to normalized ``S×S`` tensors, multiplied by
  ``1 - mask`` (same geometry, > 0.5), mean over *all* ``3·S²`` elements, zeros included.
- ``pixels``: the full-resolution 0..1 images; squared error summed over pixels outside the mask
  (mask nearest-resized to the image, > 0.5) divided by their count. If the mask covers the whole
  image, every candidate gets 0 (nothing to preserve; the metric's all-equal guard then lets ``S_e``
  decide).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .clip_backends import Backend, ClipModel, ClipPreprocess, load_clip
from .errors import OIRInputError
from .masks import MaskGeometry, official_mask
from .metric import as_mask_batch, check_candidates, masked_mse, resize_mask_nearest
from .options import ATTENTION_MODES, FIDELITY_SPACES, MASK_GEOMETRIES

__all__ = [
    "ATTENTION_MODES",
    "FIDELITY_SPACES",
    "MASK_GEOMETRIES",
    "ClipScorer",
    "attention_bias",
    "crop_geometry",
    "load_clip_scorer",
    "official_mask",
    "official_patch_region",
    "patch_region",
    "preprocess_images",
    "preprocess_images_official",
    "preprocess_mask",
    "quantize_images",
    "region_tokens",
]

AttentionMode = Literal["official", "hard"]
FidelitySpace = Literal["official", "pixels"]


# --------------------------------------------------------------------------------------------------
# Geometry


def crop_geometry(height: int, width: int, prep: ClipPreprocess) -> tuple[int, int, int, int]:
    """Where CLIP's preprocessing takes its square from an ``height × width`` image.

    Returns:
        ``(resized_h, resized_w, top, left)``: the shortest side becomes ``resize_size`` and the long
        side ``int(resize_size · long / short)`` (as CLIP's processors compute it); the crop is the
        ``crop_size²`` square at ``(top, left)`` of the resized image, floor-centred like
        transformers' ``center_crop``.
    """
    short, long = (height, width) if height <= width else (width, height)
    new_short, new_long = prep.resize_size, int(prep.resize_size * long / short)
    new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
    return new_h, new_w, (new_h - prep.crop_size) // 2, (new_w - prep.crop_size) // 2


def preprocess_images(
    images: Tensor, prep: ClipPreprocess, device: torch.device | str | None = None
) -> Tensor:
    """CLIP preprocessing in torch: ``images: [N,H,W,3]`` float 0..1 → ``[N,3,S,S]`` normalized float32."""
    x = images.to(device=images.device if device is None else device, dtype=torch.float32).permute(0, 3, 1, 2)
    new_h, new_w, top, left = crop_geometry(x.shape[-2], x.shape[-1], prep)
    if (new_h, new_w) != tuple(x.shape[-2:]):
        # Clamp: CLIP's processors resize 8-bit images, which cannot overshoot 0..1 as bicubic does.
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp(0.0, 1.0)
    x = x[..., top : top + prep.crop_size, left : left + prep.crop_size]
    mean = torch.tensor(prep.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess_mask(mask: Tensor, image_hw: tuple[int, int], prep: ClipPreprocess) -> Tensor:
    """The image's resize + crop applied to a mask.

    Args:
        mask: ``[B,h,w]`` 0..1 at any resolution, covering the whole ``image_hw`` image.
        image_hw: ``(H, W)`` of the images the mask belongs to.
        prep: the model's preprocessing.

    Returns:
        ``[B,S,S]`` float mask values (not thresholded), aligned with :func:`preprocess_images`.
    """
    new_h, new_w, top, left = crop_geometry(image_hw[0], image_hw[1], prep)
    resized = resize_mask_nearest(mask.float(), (new_h, new_w))
    return resized[..., top : top + prep.crop_size, left : left + prep.crop_size]


def patch_region(mask_crop: Tensor, grid: int) -> Tensor:
    """``[B,S,S]`` cropped mask → ``[B, grid²]`` bool, patch centre sampled and ``> 0.5``, row-major.

    A mask that touches the crop but covers no patch centre (an object smaller than a patch) falls
    back to its best-covered patch(es), so the region is never just CLS.
    """
    binary = (mask_crop > 0.5).float()
    region = resize_mask_nearest(binary, (grid, grid)) > 0.5
    empty = ~region.flatten(1).any(dim=1)
    if bool(empty.any()):
        coverage = F.adaptive_avg_pool2d(binary.unsqueeze(1), grid).squeeze(1)
        best = coverage.flatten(1).amax(dim=1).view(-1, 1, 1)
        fallback = (coverage >= best) & (best > 0)
        region = torch.where(empty.view(-1, 1, 1), fallback, region)
    return region.flatten(1)


def quantize_images(images: Tensor) -> Tensor:
    """``[N,H,W,3]`` float 0..1 -> ``[N,H,W,3]`` uint8 as the official code writes its images.

    ``(x * 255).astype(np.uint8)`` truncates; a 1e-3 margin keeps a value that already is a whole
    8-bit level (an image loaded from a file, ``k/255`` in float) on its level instead of one below.
    Candidates are kept this way between the search and the scorer: a quarter of float32's memory,
    and exactly the images the official metric reads.
    """
    scaled = images.detach().float().clamp(0.0, 1.0) * 255.0
    return torch.floor(scaled + 1e-3).to(torch.uint8)


def to_uint8(images: Tensor) -> np.ndarray:
    """:func:`quantize_images` as a numpy array (uint8 tensors pass through unchanged)."""
    quantized = images if images.dtype == torch.uint8 else quantize_images(images)
    return quantized.cpu().numpy()


def preprocess_images_official(
    images: Tensor, prep: ClipPreprocess, device: torch.device | str | None = None
) -> Tensor:
    """CLIP preprocessing as transformers' (slow, PIL) ``CLIPImageProcessor`` does it.

    ``images: [N,H,W,3]`` float 0..1 -> 8-bit (:func:`to_uint8`), shortest side to ``resize_size``
    with PIL bicubic, floor-centred ``S×S`` crop, ``/255`` and per-channel normalization (computed in
    float64 like the processor, returned as ``[N,3,S,S]`` float32).
    """
    new_h, new_w, top, left = crop_geometry(images.shape[1], images.shape[2], prep)
    size = prep.crop_size
    out = []
    for array in to_uint8(images):
        picture = Image.fromarray(array)
        if picture.size != (new_w, new_h):
            picture = picture.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
        pixels = np.asarray(picture, dtype=np.float64)[top : top + size, left : left + size] / 255.0
        pixels = (pixels - np.asarray(prep.mean)) / np.asarray(prep.std)
        out.append(torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1))
    stacked = torch.stack(out)
    return stacked if device is None else stacked.to(device)


def official_patch_region(mask: Tensor, grid: int) -> Tensor:
    """``[B,h,w]`` full-image mask -> ``[B, grid²]`` bool: ``nearest`` straight to the patch grid, > 0.5.

    This is the official ``change_mask_to_attention_mask``: each patch takes the mask pixel at its
    top-left corner of the *uncropped* image (the processor's resize and centre crop are ignored).
    """
    region = F.interpolate(official_mask(mask).unsqueeze(1), size=(grid, grid), mode="nearest") > 0.5
    return region.squeeze(1).flatten(1)


def official_fidelity_keep(mask: Tensor, size: int) -> Tensor:
    """``[B,h,w]`` -> ``[B,S,S]`` 0/1 kept (non-edited) region: ``nearest(1 - M)`` straight to ``S×S``."""
    keep = F.interpolate((1.0 - official_mask(mask)).unsqueeze(1), size=(size, size), mode="nearest")
    return (keep.squeeze(1) > 0.5).float()


def region_tokens(patches: Tensor) -> Tensor:
    """``[B, P]`` in-region patches → ``[B, 1+P]`` in-region tokens, CLS (token 0) always in."""
    cls = torch.ones(patches.shape[0], 1, dtype=torch.bool, device=patches.device)
    return torch.cat([cls, patches.bool()], dim=1)


def attention_bias(tokens: Tensor, mode: AttentionMode, dtype: torch.dtype = torch.float32) -> Tensor:
    """The additive attention bias ``[B, L, L]`` for in-region ``tokens: [B, L]`` (bool).

    - ``official``: ``A = m mᵀ`` (outer product of the 0/1 token mask): 1 where query ``i`` and key
      ``j`` are both in the region, else 0.
    - ``hard``: 0 for in-region keys, ``-inf`` for out-of-region keys, for every query row.
    """
    if mode == "official":
        m = tokens.to(dtype)
        return m.unsqueeze(2) * m.unsqueeze(1)
    if mode == "hard":
        length = tokens.shape[1]
        blocked = torch.zeros(tokens.shape, dtype=dtype, device=tokens.device)
        blocked = blocked.masked_fill(~tokens.bool(), float("-inf"))
        return blocked.unsqueeze(1).expand(-1, length, -1)
    raise OIRInputError("attention_mode", mode, "unknown attention mode", f"use one of {ATTENTION_MODES}")


# --------------------------------------------------------------------------------------------------
# Scorer


class ClipScorer:
    """OIR's search scorer with a loaded CLIP; implements :class:`oir_core.metric.CandidateScorer`.

    Args:
        model: a :class:`ClipModel` from :func:`load_clip`.
        attention_mode: ``"official"`` (paper's soft +1 bias) or ``"hard"`` (block outside tokens).
        fidelity_space: ``"official"`` (CLIP tensors, mean over all) or ``"pixels"`` (full resolution,
            mean outside the mask).
        mask_geometry: ``"official"`` or ``"centered"`` (see the module docstring).
    """

    def __init__(
        self,
        model: ClipModel,
        attention_mode: AttentionMode = "official",
        fidelity_space: FidelitySpace = "official",
        mask_geometry: MaskGeometry = "official",
    ) -> None:
        if attention_mode not in ATTENTION_MODES:
            raise OIRInputError(
                "attention_mode", attention_mode, "unknown attention mode", f"use one of {ATTENTION_MODES}"
            )
        if fidelity_space not in FIDELITY_SPACES:
            raise OIRInputError(
                "fidelity_space", fidelity_space, "unknown fidelity space", f"use one of {FIDELITY_SPACES}"
            )
        if mask_geometry not in MASK_GEOMETRIES:
            raise OIRInputError(
                "mask_geometry", mask_geometry, "unknown mask geometry", f"use one of {MASK_GEOMETRIES}"
            )
        self.model = model
        self.attention_mode: AttentionMode = attention_mode
        self.fidelity_space: FidelitySpace = fidelity_space
        self.mask_geometry: MaskGeometry = mask_geometry
        self._text_cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        """Where the CLIP's weights are now (call :meth:`ClipModel.ready` first to load them)."""
        return self.model.device

    def text_embedding(self, text: str) -> Tensor:
        """``[D]`` float32 CLIP text features of ``text`` (cached per string)."""
        if not isinstance(text, str) or not text.strip():
            raise OIRInputError("target_text", text, "is empty", "give the pair's target phrase")
        if text not in self._text_cache:
            self.model.ready()
            self._text_cache[text] = self.model.encode_text([text])[0]
        return self._text_cache[text]

    def _cropped_masks(self, mask: Tensor, n: int, image_hw: tuple[int, int]) -> Tensor:
        """``[n,S,S]`` masks after CLIP's geometry, one per candidate."""
        cropped = preprocess_mask(self._mask_batch(mask, n), image_hw, self.model.preprocess)
        if not bool((cropped > 0.5).any(dim=(1, 2)).all()):
            raise OIRInputError(
                "mask",
                tuple(mask.shape),
                "lies entirely outside the centre square CLIP looks at",
                "crop the image closer to square around the edited objects",
            )
        return cropped

    def masked_image_embeddings(self, images: Tensor, mask: Tensor) -> Tensor:
        """``[N, D]`` float32 region embeddings of ``images: [N,H,W,3]``.

        ``mask`` is ``[H',W']`` / ``[1,H',W']`` (shared) or ``[N,H',W']`` (per image), 0..1, any
        resolution covering the image.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise OIRInputError("images", tuple(images.shape), "must be [N,H,W,3]", "pass a ComfyUI IMAGE")
        prep, grid = self.model.preprocess, self.model.grid_size
        self.model.ready()
        if self.mask_geometry == "official":
            pixels = preprocess_images_official(images, prep, self.device)
            masks = self._mask_batch(mask, images.shape[0])
            patches = official_patch_region(masks, grid)
        else:
            pixels = preprocess_images(images, prep, self.device)
            cropped = self._cropped_masks(mask, images.shape[0], (images.shape[1], images.shape[2]))
            patches = patch_region(cropped, grid)
        bias = attention_bias(region_tokens(patches), self.attention_mode, torch.float32)
        return self.model.encode_image_masked(pixels, bias)

    def _mask_batch(self, mask: Tensor, n: int) -> Tensor:
        """``[n,h,w]`` masks, one per image, refusing empty ones."""
        m = as_mask_batch(mask).to(self.device)
        if m.shape[0] not in (1, n):
            raise OIRInputError(
                "mask",
                tuple(mask.shape),
                f"holds {m.shape[0]} masks for {n} images",
                "give one mask, or one per image",
            )
        if not bool((m > 0.5).any(dim=(1, 2)).all()):
            raise OIRInputError("mask", tuple(mask.shape), "is empty", "paint the object to edit")
        return m.expand(n, -1, -1)

    def editing_scores(self, candidates: Tensor, mask: Tensor, target_text: str) -> Tensor:
        """``[N]`` raw ``S_e``: cosine of each region embedding with the target phrase's embedding."""
        text = self.text_embedding(target_text)
        images = self.masked_image_embeddings(candidates, mask)
        return F.cosine_similarity(images, text.unsqueeze(0), dim=-1)

    def fidelity_scores(self, candidates: Tensor, original: Tensor, mask: Tensor) -> Tensor:
        """``[N]`` raw ``S_ne = -MSE`` outside the mask, in :attr:`fidelity_space`."""
        self.model.ready()
        m = as_mask_batch(mask).to(self.device)
        if m.shape[0] != 1:
            raise OIRInputError("mask", tuple(mask.shape), "must be one mask", "pass this pair's mask")
        height, width = candidates.shape[1], candidates.shape[2]
        if self.fidelity_space == "official":
            prep = self.model.preprocess
            if self.mask_geometry == "official":
                cand = preprocess_images_official(candidates, prep, self.device)
                orig = preprocess_images_official(original.unsqueeze(0), prep, self.device)
                keep = official_fidelity_keep(m, prep.crop_size)  # [1,S,S]
            else:
                cand = preprocess_images(candidates, prep, self.device)
                orig = preprocess_images(original.unsqueeze(0), prep, self.device)
                keep = 1.0 - (preprocess_mask(m, (height, width), prep) > 0.5).float()  # [1,S,S]
            return -masked_mse(cand, orig, keep.unsqueeze(1), reduction="all")
        keep = 1.0 - (resize_mask_nearest(m, (height, width)) > 0.5).float()  # [1,H,W]
        cand = candidates.to(self.device, torch.float32)
        orig = original.to(self.device, torch.float32)
        return -masked_mse(cand, orig, keep.unsqueeze(-1), reduction="kept")

    def score(
        self, candidates: Tensor, original: Tensor, mask: Tensor, target_text: str
    ) -> tuple[Tensor, Tensor]:
        """``(S_e [N], S_ne [N])`` for one pair's ``candidates: [N,H,W,3]`` against ``original: [H,W,3]``.

        Both are read as 8-bit images (:func:`quantize_images`). ``mask: [H',W']`` or ``[1,H',W']`` is
        the pair's edited region (0..1, any resolution).
        """
        check_candidates(candidates, original)
        m = as_mask_batch(mask)
        if m.shape[0] != 1:
            raise OIRInputError("mask", tuple(mask.shape), "must be one mask", "pass this pair's mask")
        # Every mode scores the 8-bit images a person would save (the official code's candidates are
        # 8-bit too), so candidates kept as uint8 between the nodes score exactly the same.
        candidates = quantize_images(candidates).float() / 255.0
        original = quantize_images(original[None])[0].float() / 255.0
        editing = self.editing_scores(candidates, m, target_text)
        fidelity = self.fidelity_scores(candidates, original, m)
        return editing.float().cpu(), fidelity.float().cpu()


def load_clip_scorer(
    path: str,
    backend: Backend = "auto",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    architecture: str | None = None,
    attention_mode: AttentionMode = "official",
    fidelity_space: FidelitySpace = "official",
    mask_geometry: MaskGeometry = "official",
) -> ClipScorer:
    """:func:`oir_core.clip_backends.load_clip` wrapped in a :class:`ClipScorer`."""
    model = load_clip(path, backend=backend, device=device, dtype=dtype, architecture=architecture)
    return ClipScorer(model, attention_mode, fidelity_space, mask_geometry)
