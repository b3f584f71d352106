"""Grid scenes: several small coloured shapes, one per cell of a 4x4 grid, and questions
that need fine detail, counting and spatial relations (the ``vlm-compare`` task).

A scene is a black ``32 x 32`` image cut into 16 cells of ``8 x 8`` pixels (one ViT patch
each). It holds 2-4 objects in distinct cells, each of a distinct colour (red, green, blue,
yellow) and one of three shapes (circle, square, triangle) about 6 pixels wide, with a
pixel of jitter and Gaussian pixel noise. Every question names objects by colour, so
answering binds a colour to a place or to a shape:

* ``count?`` -> ``"2"``, ``"3"`` or ``"4"`` (counting);
* ``red shape?`` -> ``"circle"`` (fine detail: the shape inside one patch);
* ``red left of blue?`` / ``red above blue?`` -> ``"yes"`` / ``"no"`` (spatial relation).

Splits are disjoint by construction: a scene's **layout** (which colour and shape sit in
which cell) is hashed, and the hash alone decides whether the layout belongs to ``train``,
``dev`` or ``held_out``. Images differ by jitter and noise, but no held-out layout is ever
trained on; ``check_disjoint`` asserts it. Scene ``i`` of a split depends only on
(seed, split, i). Everything is generated in code.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from splice_vision.data import first_distinct
from torch import Tensor

GRID = 4  # cells per side
CELL = 8  # pixels per cell (the ViT's patch size)
IMAGE_SIZE = GRID * CELL
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.9, 0.1),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.1),
}
KINDS = ("count", "shape", "relation")  # the question kinds, asked once each per scene
Split = Literal["train", "dev", "held_out"]
SPLIT_OF_BUCKET: dict[int, Split] = {0: "held_out", 1: "dev"}  # buckets 2..9: train

# (cell index 0..15 in reading order, colour, shape) per object, sorted by cell
Layout = tuple[tuple[int, str, str], ...]

# pixel centres (row y, column x), built once: drawing is on the data path of every step
PIXEL_Y, PIXEL_X = torch.meshgrid(
    torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5,
    torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5,
    indexing="ij",
)


def layout_split(layout: Layout) -> Split:
    """Which split a layout belongs to: a tenth each to held-out and dev, the rest to train."""
    digest = hashlib.sha1(repr(layout).encode()).digest()
    return SPLIT_OF_BUCKET.get(digest[0] % 10, "train")


@dataclass(frozen=True)
class GridScene:
    """One image, its layout and its three questions with their answers."""

    image: Tensor  # (3, 32, 32)
    layout: Layout
    questions: tuple[str, ...]  # one per kind of ``KINDS``
    answers: tuple[str, ...]

    def answer(self, question: str) -> str:
        return self.answers[self.questions.index(question)]

    @property
    def caption(self) -> str:
        """Every object in reading order: ``"red circle, blue square"``."""
        return ", ".join(f"{c} {s}" for _, c, s in self.layout)


def shape_mask(shape: str, cx: float, cy: float, r: float) -> Tensor:
    """``(32, 32)`` bool mask of one shape centred at ``(cx, cy)`` with half-size ``r``."""
    dx, dy = PIXEL_X - cx, PIXEL_Y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (dx.abs() <= r * 0.8) & (dy.abs() <= r * 0.8)
    if shape == "triangle":  # apex up
        return (dy <= r * 0.9) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def draw(layout: Layout, rng: random.Random, noise: float) -> Tensor:
    """Render ``layout``: each object near its cell's centre (jitter from ``rng``)."""
    image = torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE)
    for cell, colour, shape in layout:
        row, col = divmod(cell, GRID)
        cx = (col + 0.5) * CELL + rng.uniform(-0.75, 0.75)
        cy = (row + 0.5) * CELL + rng.uniform(-0.75, 0.75)
        image[:, shape_mask(shape, cx, cy, 3.2)] = torch.tensor(COLOURS[colour]).unsqueeze(1)
    if noise > 0:
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        image = image + noise * torch.randn(image.shape, generator=g)
    return image


def ask(layout: Layout, rng: random.Random) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """One question of each kind about ``layout``, with its answer."""
    colour_of = {c: (cell, s) for cell, c, s in layout}
    names = list(colour_of)
    target = rng.choice(names)
    a, b = rng.sample(names, 2)
    (ra, ca), (rb, cb) = divmod(colour_of[a][0], GRID), divmod(colour_of[b][0], GRID)
    # Distinct cells differ in column or row (or both): ask about an axis where they differ.
    axes = [ax for ax, differs in (("left of", ca != cb), ("above", ra != rb)) if differs]
    axis = rng.choice(axes)
    truth = ca < cb if axis == "left of" else ra < rb
    questions = ("count", f"{target} shape", f"{a} {axis} {b}")
    answers = (str(len(layout)), colour_of[target][1], "yes" if truth else "no")
    return questions, answers


def random_layout(rng: random.Random) -> Layout:
    n = rng.randint(2, len(COLOURS))
    cells = rng.sample(range(GRID * GRID), n)
    colours = rng.sample(list(COLOURS), n)
    return tuple(sorted((cell, c, rng.choice(SHAPES)) for cell, c in zip(cells, colours)))


class GridTask:
    """Deterministic streams of ``GridScene`` per split (see the module docstring)."""

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = noise

    def scene(self, split: Split, index: int, *, seed: int = 0) -> GridScene:
        """Scene ``index`` of ``split``: layouts are drawn until one of ``split`` comes up."""
        if split not in ("train", "dev", "held_out"):
            raise ValueError(f"split must be 'train', 'dev' or 'held_out', got {split!r}")
        rng = random.Random(f"grid-{seed}-{split}-{index}")
        layout = random_layout(rng)
        while layout_split(layout) != split:
            layout = random_layout(rng)
        questions, answers = ask(layout, rng)
        return GridScene(draw(layout, rng, self.noise), layout, questions, answers)

    def distinct(self, split: Split, n: int, *, seed: int = 0) -> list[GridScene]:
        """The first ``n`` scenes of ``split`` with pairwise different layouts, so every
        scored (layout, question) pair is distinct."""
        return first_distinct(lambda i: self.scene(split, i, seed=seed), n, lambda s: s.layout)


def check_disjoint(trained: Iterable[Layout], scored: Iterable[Layout]) -> None:
    """Raise when a scored layout was trained on (names how many and one of them)."""
    leaked = set(trained).intersection(scored)
    if leaked:
        raise ValueError(f"{len(leaked)} scored layouts were trained on, e.g. {sorted(leaked)[0]}")


__all__ = [
    "COLOURS",
    "KINDS",
    "SHAPES",
    "GridScene",
    "GridTask",
    "Layout",
    "check_disjoint",
    "layout_split",
    "shape_mask",
]
