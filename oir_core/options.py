"""The choices every OIR setting offers, in one torch-free place.

The engine modules validate against these, the nodes offer them as combo options, and the
``oir-edit`` client (:mod:`oir_cli`) checks specs against them without importing torch.
"""

from __future__ import annotations

SEARCH_MODES: tuple[str, ...] = ("exhaustive", "coarse_to_fine", "custom")
"""Which inversion steps the search computes (:mod:`oir_core.steps`, :mod:`oir_core.search`)."""

INVERSION_CONVENTIONS: tuple[str, ...] = ("official", "official_x0", "euler")
"""How the DDIM inversion steps (:mod:`oir_core.sampling`); ``auto`` picks one per model family."""

CONVENTIONS: tuple[str, ...] = ("auto", *INVERSION_CONVENTIONS)
"""The OIR DDIM Inversion node's ``convention`` choices."""

ATTENTION_MODES: tuple[str, ...] = ("official", "hard")
"""How the CLIP scorer restricts attention to a mask (:mod:`oir_core.clip_scorer`)."""

FIDELITY_SPACES: tuple[str, ...] = ("official", "pixels")
"""Where the background MSE is measured (:mod:`oir_core.metric`)."""

OVERLAP_RULES: tuple[str, ...] = ("later_wins", "error")
"""What overlapping masks of several pairs mean (:func:`oir_core.masks.region_masks`)."""

MASK_GEOMETRIES: tuple[str, ...] = ("official", "centered")
"""How a mask is read and brought to a coarser grid (see :data:`oir_core.masks.MaskGeometry`)."""

BACKGROUND_MODES: tuple[str, ...] = ("official", "preserve")
"""What the reassembly's last levels do outside the edited regions (:mod:`oir_core.reassembly`):
``official`` denoises the whole latent (paper §3.3); ``preserve`` keeps the inversion's own latent
there at every level."""

MAX_FEATHER = 32
"""Widest ``preserve`` boundary ramp, in latent cells (256 px for an 8x VAE)."""

SCORER_BACKENDS: tuple[str, ...] = ("auto", "transformers", "open_clip")
"""Which library loads the scorer CLIP (:mod:`oir_core.clip_backends`)."""

SCORER_DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
"""Where the scorer CLIP runs (the OIR Mask Metric Scorer node)."""

SCORER_PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
"""The scorer CLIP's precision."""

LATENT_FACTOR = 8
"""Pixels per latent cell of every supported VAE."""

MIN_IMAGE_SIDE = 32
"""Smallest image side OIR accepts: 4 latent cells. Below it an object's mask and its surroundings
can hardly both exist on the latent grid reassembly works on (the VAE itself fails below 8 px)."""

ASPECT_TOLERANCE = 0.02
"""Relative aspect-ratio difference accepted between a mask and the image it belongs to: masks
painted on the same image but saved at another resolution are fine, a mask of another image is not."""
