"""What fine-tuning did to a model's weights: the per-matrix change against the pre-trained
weights, how much of its energy lies in its top singular directions, how far it moved, and
what the training state costs in memory (for LoRA/QLoRA against full fine-tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def load_run_model(run_dir: str | Path, *, merge: bool = True) -> nn.Module:
    """A run's final model (its adapter merged into dense weights when ``merge``)."""
    from splice.evaluation.from_run import load_splice_model

    model, _, _ = load_splice_model(run_dir)
    if merge and any("lora" in n for n, _ in model.named_parameters()):
        from splice_lora import merge_and_unload

        model = merge_and_unload(model)
    return model


def block_matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """The 2-D weights inside the transformer blocks (attention and FFN projections)."""
    return {
        n: p.detach().float()
        for n, p in model.named_parameters()
        if p.ndim == 2 and ".blocks." in f".{n}"
    }


def weight_deltas(base: nn.Module, tuned: nn.Module) -> dict[str, torch.Tensor]:
    """``W_tuned - W_base`` for every block matrix of ``base``.

    Raises:
        KeyError: a base matrix is missing from ``tuned`` (names it).
    """
    b, t = block_matrices(base), block_matrices(tuned)
    missing = sorted(set(b) - set(t))
    if missing:
        raise KeyError(f"tuned model lacks {missing[:3]} (merge its adapter first)")
    return {n: t[n] - w for n, w in b.items()}


def energy_in_top(deltas: dict[str, torch.Tensor], max_rank: int) -> list[float]:
    """``e[r-1]`` = share of squared singular values in the top ``r`` directions, averaged
    over the matrices, for ``r = 1 .. max_rank`` (capped by each matrix's rank)."""
    curves = []
    for d in deltas.values():
        s2 = torch.linalg.svdvals(d.double()) ** 2
        cum = torch.cumsum(s2, 0) / s2.sum().clamp_min(1e-30)
        idx = torch.arange(max_rank).clamp_max(len(cum) - 1)
        curves.append(cum[idx])
    return torch.stack(curves).mean(0).tolist()


def random_energy_in_top(deltas: dict[str, torch.Tensor], max_rank: int, seed: int) -> list[float]:
    """``energy_in_top`` of Gaussian matrices of the same shapes: what "not low rank" gives."""
    g = torch.Generator().manual_seed(seed)
    rand = {n: torch.randn(d.shape, generator=g, dtype=torch.float64) for n, d in deltas.items()}
    return energy_in_top(rand, max_rank)


def relative_change(deltas: dict[str, torch.Tensor], base: nn.Module) -> float:
    """``||dW|| / ||W||`` over all block matrices (Frobenius norms)."""
    b = block_matrices(base)
    num = sum(float(d.pow(2).sum()) for d in deltas.values())
    den = sum(float(b[n].pow(2).sum()) for n in deltas)
    return (num / max(den, 1e-30)) ** 0.5


def memory_figures(model: nn.Module) -> dict[str, Any]:
    """Bytes of the model's weights (quantized storage as stored), the bytes per element of
    its block linear weights, and the training state: weights + gradients + AdamW's two
    moments of the trainable parameters (float32). On CPU this stands in for peak memory
    (activations are the same for every arm of a study)."""
    from splice.quantization import quantization_report

    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    weight_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    q = quantization_report(model)
    return {
        "weight_bytes": float(weight_bytes),
        "bytes_per_param": q.bytes_per_param if q.layers else 4.0,
        "training_state_bytes": float(weight_bytes + 3 * trainable),
    }
