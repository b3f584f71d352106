"""pass@k: the chance that at least one of k samples is correct, estimated from n >= k samples.

Chen et al. (2021), "Evaluating Large Language Models Trained on Code": with ``n``
samples of which ``c`` are correct, the unbiased estimator is

    pass@k = 1 - C(n - c, k) / C(n, k)

i.e. one minus the probability that ``k`` samples drawn without replacement from the
``n`` are all wrong. Binomial coefficients overflow for large ``n``, so it is computed
as the product ``prod_{i = n-c+1}^{n} (1 - k / i)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from splice.data.examples import Example
from splice.evaluation.exact_match import completion_texts, is_exact, reference_answer
from splice.generation.sampling import SamplingConfig


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples with ``c`` correct.

    Raises:
        ValueError: unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must be in [0, n={n}], got {c}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def evaluate_pass_at_k(
    model: nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    sampling: SamplingConfig,
    ks: Sequence[int] = (1,),
    *,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Sample ``sampling.n`` completions per example and average pass@k over examples.

    A sample is correct when its final answer equals the answer (``is_exact``, as in
    ``exact_match``).
    Use ``temperature > 0``: greedy samples are all identical.

    Returns:
        ``{"pass@<k>": value for k in ks, "n_samples": n, "n": len(examples),
        "correct_per_example": [c_1, ...]}``.

    Raises:
        ValueError: a ``k`` larger than ``sampling.n``.
    """
    bad = [k for k in ks if not 1 <= k <= sampling.n]
    if bad:
        raise ValueError(f"ks {bad} must be in [1, sampling.n={sampling.n}]")
    texts = completion_texts(
        model, tokenizer, [e.prompt for e in examples], sampling, batch_size=batch_size
    )
    correct = [
        sum(is_exact(t, reference_answer(e)) for t in samples)
        for samples, e in zip(texts, examples)
    ]
    result: dict[str, Any] = {
        f"pass@{k}": float(np.mean([pass_at_k(sampling.n, c, k) for c in correct]))
        if correct
        else 0.0
        for k in ks
    }
    result.update(n_samples=sampling.n, n=len(examples), correct_per_example=correct)
    return result


__all__ = ["evaluate_pass_at_k", "pass_at_k"]
