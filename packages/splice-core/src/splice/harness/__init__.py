"""splice models in EleutherAI's lm-evaluation-harness (``pip install 'splice-core[harness]'``).

- ``splice.harness.model.SpliceLM``: an lm-eval ``TemplateLM`` over a splice run folder, one of
  its checkpoints, or a Hugging Face folder loaded by ``splice.hf`` (adapters included: a run
  rebuilds them from its config). ``loglikelihood``, ``loglikelihood_rolling`` and
  ``generate_until`` run splice's batched forward and KV-cache ``generate``, batched by length.
- ``register()``: makes ``--model splice`` resolve in lm-eval's model registry.
- ``splice.harness.evaluate.evaluate_harness``: what ``splice eval --harness`` calls.

How ``lm_eval --model splice`` finds it: lm-eval after 0.4.13 reads the ``lm_eval.models``
entry-point group, which splice-core declares. lm-eval 0.4.13 and older read no entry points,
so splice-core's wheel ships ``splice_lm_eval.pth``, which installs ``splice.harness.autoload``:
a one-shot import hook that registers ``splice`` the moment lm-eval's registry module loads
(and costs nothing in processes that never import lm-eval).

This module stays import-light (no torch, no lm-eval) because the ``.pth`` line imports its
package at interpreter start.
"""

from __future__ import annotations

MODEL_NAME = "splice"
TARGET = "splice.harness.model:SpliceLM"


def register() -> None:
    """Register ``SpliceLM`` as lm-eval's ``splice`` model (idempotent).

    Raises:
        ImportError: lm-eval is not installed (``pip install 'splice-core[harness]'``).
    """
    try:
        from lm_eval.api.registry import model_registry
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "lm-eval is not installed; install splice's harness extra: "
            "pip install 'splice-core[harness]'"
        ) from exc
    import lm_eval.models  # noqa: F401  the built-in placeholders (hf, vllm, ...) first

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


__all__ = ["MODEL_NAME", "TARGET", "register"]
