"""Config drift on resume: a resumed run must train the config it was started with.

``config_changes(saved, new)`` lists every changed field by its full dotted path
(``train.optimizer.lr``, ``data.task.op``) with both values; ``check_resume_config``
refuses a resume whose config differs from the run's saved ``config.json`` in any field
the user did not name (``--allow-config-change``, a field or one of its parents). Fields
that never change what was trained so far (the run's name and folder, its length
``train.steps``, the progress bar, the thread count) are free to differ.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import Any

from splice.training.run_folder import RunFolderError

#: Fields a resume may change without naming them: they never change what was trained so
#: far (``train.steps``: resuming to train longer is what resume is for; the schedule then
#: follows the new length).
FREE_ON_RESUME = frozenset(
    {"name", "output_dir", "train.steps", "train.progress", "train.num_threads"}
)
_ABSENT = object()


class ConfigDriftError(RunFolderError):
    """A resume asked for a config other than the run's (names each changed field)."""


def config_changes(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``{dotted path: (old, new)}`` for every leaf that differs (a list counts as a leaf)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(old) | set(new)):
            out.update(
                config_changes(old.get(key, _ABSENT), new.get(key, _ABSENT), f"{prefix}{key}.")
            )
        return out
    return {} if old == new else {prefix.rstrip("."): (old, new)}


def _allowed(path: str, allowed: Set[str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:i]) in allowed for i in range(1, len(parts) + 1))


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def check_resume_config(
    saved_path: Path, new: Mapping[str, Any], allow: Iterable[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume whose config differs from ``saved_path`` in a field not in ``allow``.

    Returns:
        the allowed changes (empty when the configs agree, or nothing was saved).

    Raises:
        ConfigDriftError: naming each unallowed field with its saved and new value.
    """
    if not saved_path.is_file():
        return {}
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    allowed = {a.strip() for a in allow if a.strip()}
    changes = {
        k: v for k, v in config_changes(saved, new).items() if not _allowed(k, FREE_ON_RESUME)
    }
    refused = {k: v for k, v in changes.items() if not _allowed(k, allowed)}
    if refused:
        shown = ", ".join(f"{k} ({_show(a)} -> {_show(b)})" for k, (a, b) in refused.items())
        raise ConfigDriftError(
            f"resume refused: the config differs from the run's {saved_path} in {shown}. "
            "Resume with the run's config, give a new run another --output-dir, or name "
            f"the changes: --allow-config-change {','.join(refused)}"
        )
    return changes


__all__ = ["FREE_ON_RESUME", "ConfigDriftError", "check_resume_config", "config_changes"]
