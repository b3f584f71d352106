"""Built-in synthetic vision data: scenes of coloured shapes drawn in code.

Each scene holds ``count`` (1..3) copies of one ``shape`` (circle, square, triangle) in one
``colour`` (red, green, blue, yellow), stacked in the ``side`` (left or right) half of a
black ``image_size`` square, with a little seeded jitter and pixel noise. Every scene has:

* a caption: ``"2 red circles on the left"``;
* four questions whose answers are checkable strings: ``"color?" -> "red"``,
  ``"shape?" -> "circle"``, ``"count?" -> "2"``, ``"side?" -> "left"``.

Generation is deterministic: scene ``i`` of a split depends only on (seed, split, i).
The ``train`` and ``held_out`` splits draw from disjoint seed streams. No downloads.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor

from splice_vision.configs import ShapesTaskConfig

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.9, 0.1),
    "blue": (0.15, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.1),
}
SIDES = ("left", "right")
QUESTIONS = ("color", "shape", "count", "side")
Split = Literal["train", "held_out"]
T = TypeVar("T")


def first_distinct(
    item: Callable[[int], T], n: int, key: Callable[[T], Hashable], *, start: int = 0
) -> list[T]:
    """The first ``n`` of ``item(start), item(start + 1), ...`` with pairwise different
    ``key``: contrastive batches without a duplicate positive, or scored sets in which
    every example counts once. The stream must hold ``n`` distinct keys (else it never ends).
    """
    out: list[T] = []
    seen: set[Hashable] = set()
    i = start
    while len(out) < n:
        x = item(i)
        i += 1
        k = key(x)
        if k not in seen:
            seen.add(k)
            out.append(x)
    return out


@dataclass(frozen=True)
class Scene:
    """One generated image and what is in it."""

    image: Tensor  # (3, H, W) float in [0, 1] (plus noise)
    shape: str
    colour: str
    count: int
    side: str

    @property
    def caption(self) -> str:
        plural = "s" if self.count > 1 else ""
        return f"{self.count} {self.colour} {self.shape}{plural} on the {self.side}"

    @property
    def label(self) -> str:
        """The zero-shot class: ``"red circle"``."""
        return f"{self.colour} {self.shape}"

    def answer(self, question: str) -> str:
        """The answer to ``"color"``, ``"shape"``, ``"count"`` or ``"side"``."""
        return {
            "color": self.colour,
            "shape": self.shape,
            "count": str(self.count),
            "side": self.side,
        }[question]


def _mask(shape: str, size: int, cx: float, cy: float, r: float) -> Tensor:
    """``(size, size)`` bool mask of one shape centred at ``(cx, cy)`` with half-size ``r``."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float32) + 0.5,
        torch.arange(size, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
    # triangle, apex up: inside when below the two slanted edges and above the base
    return (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.55)


def draw_scene(
    shape: str, colour: str, count: int, side: str, *, size: int, rng: random.Random, noise: float
) -> Scene:
    """Render one scene (see the module docstring); ``rng`` gives jitter and noise seed."""
    if shape not in SHAPES or colour not in COLOURS or side not in SIDES or not 1 <= count <= 3:
        raise ValueError(f"bad scene ({shape}, {colour}, {count}, {side})")
    image = torch.zeros(3, size, size)
    slot = size / 3  # three vertical slots in one half
    r = slot * 0.38  # shapes in neighbouring slots never touch, even with jitter
    x0 = size * (0.25 if side == "left" else 0.75)
    rows = rng.sample(range(3), count)
    for row in rows:
        cx = x0 + rng.uniform(-0.12, 0.12) * size
        cy = slot * (row + 0.5) + rng.uniform(-0.03, 0.03) * size
        m = _mask(shape, size, cx, cy, r)
        image[:, m] = torch.tensor(COLOURS[colour]).unsqueeze(1)
    if noise > 0:
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        image = image + noise * torch.randn(image.shape, generator=g)
    return Scene(image, shape, colour, count, side)


class ShapesTask:
    """The ``shapes`` task: deterministic streams of ``Scene`` per split."""

    def __init__(self, config: ShapesTaskConfig | None = None) -> None:
        self.config = config or ShapesTaskConfig()

    def scene(self, split: Split, index: int, *, seed: int = 0) -> Scene:
        """Scene ``index`` of ``split``; attributes uniform over all combinations."""
        if split not in ("train", "held_out"):
            raise ValueError(f"split must be 'train' or 'held_out', got {split!r}")
        rng = random.Random(f"shapes-{seed}-{split}-{index}")
        return draw_scene(
            rng.choice(SHAPES),
            rng.choice(list(COLOURS)),
            rng.randint(1, self.config.max_count),
            rng.choice(SIDES),
            size=self.config.image_size,
            rng=rng,
            noise=self.config.noise,
        )

    def scenes(self, split: Split, *, seed: int = 0) -> Iterator[Scene]:
        """The endless stream ``scene(split, 0), scene(split, 1), ...``."""
        i = 0
        while True:
            yield self.scene(split, i, seed=seed)
            i += 1

    def sample(self, split: Split, n: int, *, seed: int = 0) -> list[Scene]:
        return [self.scene(split, i, seed=seed) for i in range(n)]

    def distinct_captions(
        self, split: Split, n: int, *, seed: int = 0, start: int = 0
    ) -> list[Scene]:
        """``n`` scenes with pairwise different captions (contrastive batches without
        duplicate positives), scanning the stream from ``start``."""
        return first_distinct(
            lambda i: self.scene(split, i, seed=seed), n, lambda s: s.caption, start=start
        )


def all_labels() -> list[str]:
    """Every zero-shot class ``"<colour> <shape>"``, in a fixed order."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def build_shapes(config: ShapesTaskConfig, ctx: object = None) -> ShapesTask:
    return ShapesTask(config)


__all__ = [
    "COLOURS",
    "QUESTIONS",
    "SHAPES",
    "SIDES",
    "Scene",
    "ShapesTask",
    "all_labels",
    "build_shapes",
    "draw_scene",
    "first_distinct",
]
