"""Held-out batches follow the model's device (meta device stands in for a GPU here)."""

from __future__ import annotations

import torch
from splice.data.device import batch_to


def test_batch_to_moves_tensors_and_keeps_the_rest() -> None:
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "name": "x"}
    assert batch_to(batch, torch.device("cpu")) is batch  # nothing to move: no copy
    moved = batch_to(batch, torch.device("meta"))
    assert moved["input_ids"].device.type == "meta"
    assert moved["input_ids"].shape == (2, 3)
    assert moved["name"] == "x"
