"""Rebuild the template inputs in this folder (a developer tool; the pack never runs it).

The photographs come from scikit-image's bundled sample data (``pip download scikit-image``, then
pass the wheel): public-domain or CC0 pictures, see ``LICENSE.md``. The masks and the depth map are
drawn here by hand-placed shapes, so they are approximate by design: they only have to mark each
object so a newcomer can press Run.

Run: ``python example_inputs/build_example_inputs.py path/to/scikit_image-*.whl`` (everything), or
without an argument to redraw only the template cards (``example_workflows/<template>.jpg``) from the
inputs already here; ``tests/core/test_template_cards.py`` checks that the shipped cards are current.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
PREFIX = "oir_example_"


def photo(wheel: zipfile.ZipFile, name: str) -> Image.Image:
    return Image.open(io.BytesIO(wheel.read(f"skimage/data/{name}"))).convert("RGB")


def mask(
    size: tuple[int, int], *shapes: tuple[str, list[tuple[float, float]] | tuple[float, ...]]
) -> Image.Image:
    """White shapes (``("polygon", points)`` or ``("ellipse", (x0, y0, x1, y1))``) on black."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for kind, geometry in shapes:
        getattr(draw, kind)(geometry, fill=255)
    return canvas


def save(image: Image.Image, name: str) -> None:
    image.save(HERE / f"{PREFIX}{name}.png", optimize=True)


TEMPLATES = {
    # template -> (photo, [(mask, "source -> target")])
    "oir_two_object_edit": ("coffee", [("coffee_cup", "cup -> glass"), ("coffee_spoon", "spoon -> fork")]),
    "oir_single_object_search": ("rocket", [("rocket_rocket", "rocket -> lighthouse")]),
    "oir_lora_controlnet_edit": (
        "astronaut",
        [("astronaut_helmet", "helmet -> globe"), ("astronaut_flag", "flag -> painting")],
    ),
    "oir_sdxl_two_object_edit": (
        "coffee",
        [("coffee_cup", "cup -> glass"), ("coffee_spoon", "spoon -> fork")],
    ),
    "oir_flux_two_object_edit": (
        "astronaut",
        [("astronaut_helmet", "helmet -> globe"), ("astronaut_flag", "flag -> painting")],
    ),
    "oir_phrase_mask_edit": ("coffee", [("coffee_cup", "cup -> glass"), ("coffee_spoon", "spoon -> fork")]),
}
UNPAINTED = {"oir_phrase_mask_edit"}
"""Templates whose masks come from the model: the card writes each phrase on its object instead of
painting the region."""
OUTLINED = {"oir_sdxl_two_object_edit"}
"""Templates whose card outlines each object instead of tinting it: the SDXL template makes the SD 1.5
template's edit, and the two cards must differ at a glance, not only by their badges."""
INSETS = {"oir_lora_controlnet_edit": "astronaut_depth"}
"""Templates whose card shows one more input in a corner (the ControlNet's depth map)."""
BADGES = {
    "oir_two_object_edit": "SD 1.5 · two objects",
    "oir_single_object_search": "SD 1.5 · one object",
    "oir_lora_controlnet_edit": "SD 1.5 + LoRA + ControlNet",
    "oir_sdxl_two_object_edit": "SDXL",
    "oir_flux_two_object_edit": "Flux-dev",
    "oir_phrase_mask_edit": "masks from words",
}
"""What each card says in its top-left corner: the model family and what sets the template apart
(several templates share a photo and an edit)."""
TINTS = ((255, 80, 60), (60, 160, 255), (90, 220, 90))
CARD_SIDE = 384
"""The picture's longer side on a card, in pixels (the frontend shows cards at about 300 px)."""
MODEL_CLASSES = {
    "CheckpointLoaderSimple": "ckpt_name",
    "LoraLoader": "lora_name",
    "ControlNetLoader": "control_net_name",
}


def model_files(template: str) -> list[str]:
    """The model files the template's API twin loads (checkpoint, LoRA, ControlNet), in node order."""
    api = json.loads((HERE.parent / "oir_cli" / "workflows" / f"{template}.api.json").read_text("utf-8"))
    return [
        node["inputs"][MODEL_CLASSES[node["class_type"]]]
        for node in api.values()
        if node["class_type"] in MODEL_CLASSES
    ]


def mask_centre(mask: Image.Image) -> tuple[float, float]:
    """The centroid of a mask's white pixels (where the card writes the phrase)."""
    weights = np.asarray(mask, dtype=np.float64)
    rows, columns = np.indices(weights.shape)
    total = weights.sum() or 1.0
    return float((columns * weights).sum() / total), float((rows * weights).sum() / total)


def card(template: str, badge: bool = True) -> Image.Image:
    """A template's card picture: the photo with each object tinted (or, for masks from words, each
    phrase written on its object), the extra input in a corner, the badge, and a bar with the edits
    and the model files. ``badge=False`` leaves the badge out (the test's reference)."""
    name, pairs = TEMPLATES[template]
    picture = Image.open(HERE / f"{PREFIX}{name}.png").convert("RGB")
    scale = CARD_SIDE / max(picture.size)
    masks = [Image.open(HERE / f"{PREFIX}{mask_name}.png").convert("L") for mask_name, _ in pairs]
    if template in OUTLINED:
        for region, tint in zip(masks, TINTS):
            ring = ImageChops.subtract(region.filter(ImageFilter.MaxFilter(15)), region)
            picture = Image.composite(Image.new("RGB", picture.size, tint), picture, ring)
    elif template not in UNPAINTED:
        for region, tint in zip(masks, TINTS):
            picture = Image.composite(
                Image.new("RGB", picture.size, tint), picture, region.point(lambda v: v * 0.45)
            )
    picture = picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(picture)
    if template in UNPAINTED:
        words = ImageFont.load_default(size=26)
        for region, (_, text), tint in zip(masks, pairs, TINTS):
            x, y = (value * scale for value in mask_centre(region))
            phrase = f'"{text.split(" -> ")[0]}"'
            draw.text(
                (x, y), phrase, fill=tint, font=words, anchor="mm", stroke_width=3, stroke_fill=(0, 0, 0)
            )
    if template in INSETS:
        inset = Image.open(HERE / f"{PREFIX}{INSETS[template]}.png").convert("RGB")
        inset.thumbnail((picture.width // 3, picture.height // 3))
        corner = (picture.width - inset.width - 6, 6)
        draw.rectangle((corner[0] - 2, 4, picture.width - 4, inset.height + 8), fill=(255, 255, 255))
        picture.paste(inset, corner)
    bar = 52
    canvas = Image.new("RGB", (picture.width, picture.height + bar), (24, 24, 24))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    if badge:
        font = ImageFont.load_default(size=20)
        box = draw.textbbox((10, 8), BADGES[template], font=font)
        draw.rectangle((box[0] - 6, box[1] - 4, box[2] + 6, box[3] + 4), fill=(24, 24, 24))
        draw.text((10, 8), BADGES[template], fill=(255, 255, 255), font=font)
    font = ImageFont.load_default(size=16)
    x = 8
    for (_, text), tint in zip(pairs, TINTS):
        draw.text((x, picture.height + 5), text, fill=tint, font=font)
        x += int(draw.textlength(text, font=font)) + 24
    files = " + ".join(Path(name).stem for name in model_files(template))
    size = 13
    while size > 8 and draw.textlength(files, font=ImageFont.load_default(size=size)) > picture.width - 16:
        size -= 1  # the LoRA + ControlNet card names three files
    draw.text((8, picture.height + 30), files, fill=(170, 170, 170), font=ImageFont.load_default(size=size))
    return canvas


def thumbnail(template: str) -> None:
    """``example_workflows/<template>.jpg``: :func:`card`, saved small (the pack ships six)."""
    card(template).save(HERE.parent / "example_workflows" / f"{template}.jpg", quality=85, optimize=True)


def thumbnails() -> None:
    """Every template's card picture (the photos and masks in this folder are enough)."""
    for template in TEMPLATES:
        thumbnail(template)


def main(wheel_path: str) -> None:
    with zipfile.ZipFile(wheel_path) as wheel:
        coffee = photo(wheel, "coffee.png")  # 600 x 400
        save(coffee, "coffee")
        save(
            mask(
                coffee.size,
                ("ellipse", (168, 8, 412, 275)),
                ("polygon", [(192, 220), (268, 220), (268, 308), (192, 308)]),
            ),
            "coffee_cup",
        )
        save(
            mask(
                coffee.size,
                ("polygon", [(398, 62), (428, 70), (398, 240), (378, 238)]),
                ("ellipse", (320, 232, 410, 328)),
            ),
            "coffee_spoon",
        )

        rocket = photo(wheel, "rocket.jpg")  # 640 x 427
        save(rocket, "rocket")
        save(
            mask(rocket.size, ("polygon", [(321, 112), (352, 150), (352, 408), (290, 408), (290, 150)])),
            "rocket_rocket",
        )

        astronaut = photo(wheel, "astronaut.png")  # 512 x 512
        save(astronaut, "astronaut")
        helmet = ("ellipse", (272, 340, 516, 540))
        flag = ("polygon", [(0, 0), (72, 0), (98, 120), (98, 232), (48, 300), (26, 512), (0, 512)])
        save(mask(astronaut.size, helmet), "astronaut_helmet")
        save(mask(astronaut.size, flag), "astronaut_flag")
        # A hand-made depth map (near = bright): backdrop, flag, shuttle model, the astronaut, the helmet.
        depth = Image.new("L", astronaut.size, 30)
        draw = ImageDraw.Draw(depth)
        draw.polygon(flag[1], fill=70)
        draw.polygon([(352, 0), (462, 0), (472, 285), (355, 285)], fill=95)
        draw.polygon(
            [(18, 512), (38, 300), (110, 245), (150, 175), (300, 175), (352, 255), (372, 512)], fill=170
        )
        draw.ellipse((148, 10, 302, 200), fill=160)
        draw.ellipse(helmet[1], fill=225)
        save(depth.filter(ImageFilter.GaussianBlur(6)), "astronaut_depth")
    thumbnails()


if __name__ == "__main__":
    # No wheel: only the cards are redrawn, from the inputs already in this folder.
    main(sys.argv[1]) if len(sys.argv) > 1 else thumbnails()
