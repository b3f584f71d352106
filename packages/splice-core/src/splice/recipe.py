"""A recipe: a named, runnable experiment whose config is built in Python.

Plugins register recipes with ``register(name, "module:attr")`` where the
attribute is a ``Recipe``. ``splice config NAME`` prints ``recipe.config()`` as
JSON; ``splice run NAME --set a.b=v`` validates the overridden config and calls
``recipe.run(config)``, which returns a report dict (the figures it printed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class Recipe:
    """``config()`` builds the default config; ``run(config)`` executes it and returns a report.

    When ``run`` is None the recipe's config must be an ``ExperimentConfig`` and the
    standard trainer runs it (``splice.training.experiment.run_experiment``). A ``run``
    that also takes a ``resume`` keyword supports ``splice run --resume``.
    """

    name: str
    description: str
    config: Callable[[], BaseModel]
    run: Callable[[Any], dict[str, Any]] | None = None
