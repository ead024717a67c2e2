"""Write a folder of synthetic RGB pictures to train gantool on: circles, squares and triangles
of random colours, sizes and places on two-colour gradient backgrounds, one subfolder per shape
(so `model.conditional=true` can ask for a shape).

    python examples/shapes.py shapes --num 3000 --size 64
    gantool train dataset=images dataset.path=shapes

The pictures are drawn with Pillow from a seeded generator: the same arguments write the same
files. gantool's docs/images/shapes_*.png were trained on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def picture(rng: np.random.Generator, shape: str, size: int) -> Image.Image:
    """One picture: a vertical gradient between two random colours, and one filled shape of a
    third colour, its size between a quarter and a half of the picture's."""
    top, bottom, fill = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(3))
    ramp = np.linspace(0, 1, size)[:, None, None]
    background = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    pixels = np.broadcast_to(background, (size, size, 3)).round().astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    half = rng.uniform(size / 8, size / 4)
    cx, cy = rng.uniform(half, size - half, 2)
    draw = ImageDraw.Draw(image)
    box = [cx - half, cy - half, cx + half, cy + half]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=fill)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--num", type=int, default=3000, help="pictures in all (default 3000)")
    parser.add_argument("--size", type=int, default=64, help="pixels per side (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for shape in SHAPES:
        (args.folder / shape).mkdir(parents=True, exist_ok=True)
    for i in range(args.num):
        shape = SHAPES[i % len(SHAPES)]
        picture(rng, shape, args.size).save(args.folder / shape / f"{i:05d}.png")
    print(f"Wrote {args.num} pictures of {args.size} px to {args.folder}")


if __name__ == "__main__":
    main()
