"""The module named by the ``splice`` entry point: it only registers, it builds nothing.

The factory is a ``"module:attribute"`` string, so ``splice plugins`` can list this
plugin without importing torch; ``splice_example_ffn.ffn`` is imported on first build.
"""

from __future__ import annotations

from typing import Any

from splice.hookspecs import hookimpl

from splice_example_ffn.configs import ReLU2Config


@hookimpl
def register_channel_mixers(register: Any) -> None:
    register(ReLU2Config, "splice_example_ffn.ffn:build_relu2")
