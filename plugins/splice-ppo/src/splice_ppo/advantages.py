"""Deprecated: GAE and the masked statistics moved to ``splice.rl`` (removed in splice-ppo 0.3.0).

``gae`` is ``splice.rl.advantages.gae`` (PPO builds it as the registered ``gae`` advantage
estimator, ``splice.rl.estimators``); ``explained_variance``, ``masked_mean``, ``masked_var``
and ``whiten`` are ``splice.rl.stats``'s. Each name still imports from here, with a
``DeprecationWarning`` naming its new home.
"""

from __future__ import annotations

from splice.deprecation import deprecated_attribute


def _from(module: str, name: str) -> tuple[str, object]:
    def get() -> object:
        import importlib

        return getattr(importlib.import_module(module), name)

    return f"{module}.{name}", get


__getattr__ = deprecated_attribute(
    "splice_ppo.advantages",
    {
        "gae": _from("splice.rl.advantages", "gae"),
        "explained_variance": _from("splice.rl.stats", "explained_variance"),
        "masked_mean": _from("splice.rl.stats", "masked_mean"),
        "masked_var": _from("splice.rl.stats", "masked_var"),
        "whiten": _from("splice.rl.stats", "whiten"),
    },
    removed_in="splice-ppo 0.3.0",
)
