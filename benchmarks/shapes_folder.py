"""An image folder of drawn shapes (not digits): the second data set of the README's NetAdapt timings.

    python benchmarks/shapes_folder.py OUT [--train 1600] [--val 400] [--size 96] [--seed 0]

writes OUT/train/<class>/*.png and OUT/val/<class>/*.png, the layout ``mbv3 --data`` takes. Four classes
(circle, square, triangle, ring) of random size (20-60% of the side), place, colour and rotation on a
noisy two-colour gradient, so that colour and position tell nothing and the outline must be learned.
"""

import argparse
import math
import os

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "ring")


def background(rng, size):
    corners = rng.uniform(0, 255, (2, 3))
    ramp = np.linspace(0, 1, size)[:, None, None] * np.ones((1, size, 1))
    image = corners[0] * (1 - ramp) + corners[1] * ramp
    return np.clip(image + rng.normal(0, 12, (size, size, 3)), 0, 255).astype("uint8")


def draw(rng, shape, size):
    image = Image.fromarray(background(rng, size))
    pen = ImageDraw.Draw(image)
    radius = rng.uniform(0.1, 0.3) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    angle = rng.uniform(0, 2 * math.pi)
    corners = {"square": 4, "triangle": 3}.get(shape)
    if corners:
        points = [(cx + radius * math.cos(angle + 2 * math.pi * k / corners),
                   cy + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]  # fmt: skip
        pen.polygon(points, fill=colour)
    else:
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        pen.ellipse(box, fill=None if shape == "ring" else colour, outline=colour,
                    width=max(2, int(radius / 4)) if shape == "ring" else 1)  # fmt: skip
    return image


def write(out, train=1600, val=400, size=96, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            shape = CLASSES[index % len(CLASSES)]
            folder = os.path.join(out, split, shape)
            os.makedirs(folder, exist_ok=True)
            draw(rng, shape, size).save(os.path.join(folder, f"{index:05d}.png"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=1600)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write(args.out, args.train, args.val, args.size, args.seed)
