"""The synthetic shapes data: deterministic, and every caption/answer is true of its pixels."""

from __future__ import annotations

import pytest
import torch
from splice.registry import get_registry
from splice_vision.configs import ShapesTaskConfig
from splice_vision.data import COLOURS, QUESTIONS, ShapesTask, all_labels, first_distinct


def test_registered_and_deterministic() -> None:
    task = get_registry().build("task", ShapesTaskConfig())
    assert isinstance(task, ShapesTask)
    a, b = task.sample("train", 5), ShapesTask().sample("train", 5)
    assert all(torch.equal(x.image, y.image) and x.caption == y.caption for x, y in zip(a, b))
    held = task.sample("held_out", 5)
    assert not any(torch.equal(x.image, y.image) for x, y in zip(a, held))
    assert a[0].image.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="split must be"):
        task.scene("test", 0)  # type: ignore[arg-type]


def _components(mask: torch.Tensor) -> int:
    """Number of 4-connected components of a bool (H, W) mask."""
    seen = torch.zeros_like(mask)
    h, w = mask.shape
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not seen[y, x]:
                n += 1
                stack = [(y, x)]
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            stack.append((ny, nx))
    return n


def test_answers_are_true_of_the_pixels() -> None:
    task = ShapesTask(ShapesTaskConfig(noise=0.0))
    for scene in task.sample("train", 24):
        lit = scene.image.amax(0) > 0.05  # (H, W) drawn pixels
        colour = scene.image[:, lit].mean(1)
        torch.testing.assert_close(colour, torch.tensor(COLOURS[scene.colour]))
        cols = lit.nonzero()[:, 1].float()
        assert (cols.mean() < 16) == (scene.side == "left")
        assert _components(lit) == scene.count
        assert scene.answer("count") == str(scene.count)
        assert scene.caption.startswith(f"{scene.count} {scene.colour} {scene.shape}")
        assert {scene.answer(q) for q in QUESTIONS} <= {
            *scene.caption.replace("s ", " ").split(),
            scene.shape,
        }


def test_shapes_differ_in_area_and_labels_cover_every_class() -> None:
    import random

    from splice_vision.data import draw_scene

    areas = {
        s: int(
            (
                draw_scene(s, "red", 1, "left", size=32, rng=random.Random(0), noise=0).image.amax(
                    0
                )
                > 0
            ).sum()
        )
        for s in ("circle", "square", "triangle")
    }
    assert len(set(areas.values())) == 3
    assert len(all_labels()) == 12
    distinct = ShapesTask().distinct_captions("train", 40)
    assert len({s.caption for s in distinct}) == 40


def test_first_distinct_keeps_the_first_of_each_key_in_stream_order() -> None:
    stream = [3, 1, 3, 4, 1, 5, 9, 2, 6]
    got = first_distinct(lambda i: stream[i], 4, lambda x: x)
    assert got == [3, 1, 4, 5]
    # from ``start``; the key decides what counts as a repeat (here the parity)
    assert first_distinct(lambda i: stream[i], 2, lambda x: x % 2, start=3) == [4, 1]
