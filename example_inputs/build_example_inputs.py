"""Rebuild the template inputs in this folder (a developer tool; the pack never runs it).

The photographs come from scikit-image's bundled sample data (``pip download scikit-image``, then
pass the wheel): public-domain or CC0 pictures, see ``LICENSE.md``. The masks and the depth map are
drawn here by hand-placed shapes, so they are approximate by design: they only have to mark each
object so a newcomer can press Run.

Run: ``python example_inputs/build_example_inputs.py path/to/scikit_image-*.whl``
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

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
"""Templates whose masks come from the model: the card shows the photo without painted regions."""
BADGES = {
    "oir_sdxl_two_object_edit": "SDXL",
    "oir_flux_two_object_edit": "Flux-dev",
    "oir_phrase_mask_edit": "masks from words",
}
"""Model family written on a card whose picture another template shares."""
TINTS = ((255, 80, 60), (60, 160, 255), (90, 220, 90))


def thumbnail(template: str) -> None:
    """``example_workflows/<template>.jpg``: the photo, each object tinted, the edit as a caption."""
    name, pairs = TEMPLATES[template]
    picture = Image.open(HERE / f"{PREFIX}{name}.png").convert("RGB")
    for (mask_name, _), tint in zip(pairs, TINTS):
        if template in UNPAINTED:
            break
        region = Image.open(HERE / f"{PREFIX}{mask_name}.png").convert("L").point(lambda v: v * 0.45)
        picture = Image.composite(Image.new("RGB", picture.size, tint), picture, region)
    picture.thumbnail((384, 384))
    bar = 30
    card = Image.new("RGB", (picture.width, picture.height + bar), (24, 24, 24))
    card.paste(picture, (0, 0))
    draw = ImageDraw.Draw(card)
    font = ImageFont.load_default(size=16)
    if template in BADGES:
        badge = ImageFont.load_default(size=22)
        box = draw.textbbox((10, 8), BADGES[template], font=badge)
        draw.rectangle((box[0] - 6, box[1] - 4, box[2] + 6, box[3] + 4), fill=(24, 24, 24))
        draw.text((10, 8), BADGES[template], fill=(255, 255, 255), font=badge)
    x = 8
    for (_, text), tint in zip(pairs, TINTS):
        draw.text((x, picture.height + 6), text, fill=tint, font=font)
        x += int(draw.textlength(text, font=font)) + 24
    card.save(HERE.parent / "example_workflows" / f"{template}.jpg", quality=88)


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
    for template in TEMPLATES:
        thumbnail(template)


if __name__ == "__main__":
    main(sys.argv[1])
