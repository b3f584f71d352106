"""Hatch build hook: ship ``splice_lm_eval.pth`` at the wheel's root (regular and editable).

The ``.pth`` line imports ``splice.harness.autoload``, which registers ``--model splice`` with
lm-eval versions that read no entry points (see that module). Hatchling copies extra files
into editable wheels only when a hook names them in ``force_include_editable``.
"""

from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

PTH = "splice_lm_eval.pth"


class LmEvalPthHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        key = "force_include_editable" if version == "editable" else "force_include"
        build_data.setdefault(key, {})[f"src/{PTH}"] = PTH
