"""``splice run NAME|file.py [--set a.b=v ...] [--resume [auto] | --overwrite] [--output-dir DIR]``.

A recipe is a registered name (kind ``"recipe"``, a ``splice.recipe.Recipe``) or a
Python file defining ``recipe`` (a ``Recipe``) or ``config()`` (returning a config).
Its config is overridden, validated, saved in the run folder and run: by the
recipe's own ``run`` if it has one, else by the standard trainer (``run_experiment``).

A run folder belongs to one run: a fresh run into a folder holding another run's
checkpoints is refused unless ``--overwrite``; ``--resume`` needs a checkpoint to resume,
``--resume auto`` resumes when there is one (see ``splice.training.run_folder``). A
multi-stage recipe (its ``run`` takes no ``resume``) has its root folder claimed here for
all of its stages (``claim_study_folder``); ``--overwrite`` deletes an earlier run's stages.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from pydantic import BaseModel

from splice.recipe import Recipe

if TYPE_CHECKING:
    from splice.training.run_folder import ResumeMode


def load_recipe(target: str) -> Recipe:
    """The recipe named ``target`` in the registry, or defined by the file ``target``.

    Raises:
        FileNotFoundError: ``target`` looks like a path (ends in ``.py``) but does not exist.
        ValueError: an unknown recipe name (lists the registered ones), or a file with
            neither ``recipe`` nor ``config``.
    """
    if target.endswith(".py") or Path(target).is_file():
        return _recipe_from_file(Path(target))
    from splice.registry import UnknownTagError, get_registry

    try:
        reg = get_registry().get("recipe", target)
    except UnknownTagError as exc:
        raise ValueError(f"{exc} (or give a path to a .py file)") from None
    recipe = reg.resolve_factory()
    where = f"recipe {target!r} of plugin {reg.plugin!r} ({reg.distribution}, {reg.factory!r})"
    if not isinstance(recipe, Recipe):
        raise ValueError(f"{where} is {type(recipe).__name__}, not a Recipe")
    return checked_config(recipe, where)


def checked_config(recipe: Recipe, where: str) -> Recipe:
    """``recipe`` whose ``config()`` is checked to return a pydantic config.

    A dict from a recipe without its own ``run`` is validated as an ``ExperimentConfig``
    (what the standard trainer runs); anything else that is not a pydantic model raises a
    ``ValueError`` naming the recipe, its plugin and module, instead of failing later with
    ``'dict' object has no attribute 'model_dump'``.
    """
    build = recipe.config

    def config() -> Any:
        made = build()
        if isinstance(made, BaseModel):
            return made
        if isinstance(made, dict) and recipe.run is None:
            from splice.training.configs import ExperimentConfig

            return ExperimentConfig.model_validate(made)
        raise ValueError(
            f"{where}: config() returned {type(made).__name__}, expected a pydantic config "
            "(a recipe with its own run() must return its config class; "
            "e.g. MyConfig.model_validate(the_dict))"
        )

    return dataclasses.replace(recipe, config=config)


def _recipe_from_file(path: Path) -> Recipe:
    if not path.is_file():
        raise FileNotFoundError(f"recipe file not found: {path}")
    module_name = f"splice_recipe_file_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # so pickling-free introspection and dataclasses work
    spec.loader.exec_module(module)
    recipe = getattr(module, "recipe", None)
    if isinstance(recipe, Recipe):
        return checked_config(recipe, f"recipe file {path}")
    config_fn = getattr(module, "config", None)
    if callable(config_fn):
        doc = (module.__doc__ or "").strip().splitlines()
        made = Recipe(name=path.stem, description=doc[0] if doc else "", config=config_fn)
        return checked_config(made, f"recipe file {path}")
    raise ValueError(f"{path} defines neither `recipe` (a splice.recipe.Recipe) nor `config()`")


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The ``recipe`` positional and repeatable ``--set KEY=VALUE`` (shared with ``config``)."""
    p.add_argument("recipe", help="a registered recipe name or a path to a .py recipe file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field by dotted path (value parsed as JSON, else a string)",
    )


FILE_CONTRACT = """\
what a recipe file (splice run path/to/file.py) must define, one of:
  config()   a function returning an ExperimentConfig (splice.training.configs);
             splice run applies --set overrides, validates it, and trains it with
             the standard trainer (run_experiment)
  recipe     a splice.recipe.Recipe: its config() as above, plus an optional
             run(config) that replaces the standard trainer (multi-stage recipes)
The file is executed as Python: it is your own code. Every field is listed in
docs/config-reference.md; --set a.b=value overrides one (values parsed as JSON)."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run a recipe (train, evaluate, report)",
        description="Run a recipe: a registered name (see `splice plugins`, kind recipe) or a "
        "Python file. Train, evaluate, and write the run folder (config.json, metrics.jsonl, "
        "checkpoints/, curves.png, report.md).",
        epilog=FILE_CONTRACT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_recipe_arguments(p)
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        choices=["auto"],
        help="continue from the latest intact checkpoint in the run folder (an error if there "
        "is none); '--resume auto': resume if there is one, else start fresh",
    )
    how.add_argument(
        "--overwrite",
        action="store_true",
        help="start fresh even if the run folder holds another run's checkpoints (deletes them)",
    )
    p.add_argument(
        "--allow-config-change",
        action="append",
        default=[],
        metavar="FIELD[,FIELD]",
        help="with --resume: the dotted config fields (e.g. train.steps) the resumed run may "
        "change; any other difference from the run's config.json refuses the resume",
    )
    p.add_argument("--output-dir", help="the run folder (default: the config's, else runs/<name>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from splice.overrides import apply_overrides

    try:
        recipe = load_recipe(args.recipe)
        overrides = list(args.overrides)
        if args.output_dir:
            overrides.append(f"output_dir={json.dumps(args.output_dir)}")
        config = apply_overrides(recipe.config(), overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        print(f"splice run: error: {exc}", file=sys.stderr)
        return 2
    allow = [f for item in args.allow_config_change for f in item.split(",") if f.strip()]
    if allow and not args.resume:
        print("splice run: error: --allow-config-change applies to --resume only", file=sys.stderr)
        return 2
    return execute(
        recipe, config, resume=args.resume, overwrite=args.overwrite, allow_config_change=allow
    )


class _FlexibleRun(Protocol):
    def __call__(self, config: Any, **flags: Any) -> dict[str, Any]: ...


def _takes(fn: Callable[[Any], dict[str, Any]], flag: str) -> TypeGuard[_FlexibleRun]:
    """Whether a recipe's ``run`` accepts the keyword ``flag`` (``resume``, ``overwrite``)."""
    return flag in inspect.signature(fn).parameters


def execute(
    recipe: Recipe,
    config: Any,
    *,
    resume: ResumeMode = False,
    overwrite: bool = False,
    allow_config_change: list[str] | None = None,
) -> int:
    """Run ``recipe`` on a validated ``config``; print the report.

    Errors raised by the run propagate (``splice.cli.main`` prints them as one line).
    """
    run_fn = recipe.run
    if run_fn is not None:
        given = (
            ("resume", resume),
            ("overwrite", overwrite),
            ("allow_config_change", allow_config_change),
        )
        flags = {k: v for k, v in given if v}
        staged = not _takes(run_fn, "resume")  # a multi-stage recipe: its root is claimed here
        for flag in flags:
            if not _takes(run_fn, flag) and not (staged and flag == "overwrite"):
                print(
                    f"splice run: error: recipe {recipe.name!r} cannot {flag} (its run() takes "
                    f"no `{flag}` argument)",
                    file=sys.stderr,
                )
                return 2
        if not _takes(run_fn, "overwrite"):
            flags.pop("overwrite", None)
        root = _root_of(config)
        if staged and root is not None:
            from splice.training.run_folder import claim_study_folder

            # One lock over every stage; an earlier run's stages are refused or (--overwrite)
            # deleted before any stage starts, so a stage's own overwrite=True replaces only
            # this run's work.
            with claim_study_folder(root, overwrite=overwrite):
                report = run_fn(config, **flags) if flags else run_fn(config)
        else:
            report = run_fn(config, **flags) if flags else run_fn(config)
    else:
        from splice.training.experiment import run_experiment

        report = run_experiment(
            config,
            resume=resume,
            overwrite=overwrite,
            allow_config_change=allow_config_change or (),
        )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the job
        print(format_report(report))
    return 0


def _root_of(config: Any) -> Path | None:
    """The folder a recipe's config writes to (``run_dir()``, else ``output_dir``), if any."""
    run_dir = getattr(config, "run_dir", None)
    if callable(run_dir):
        return Path(run_dir())
    out = getattr(config, "output_dir", None)
    return Path(out) if out else None


def format_report(report: dict[str, Any]) -> str:
    """The run's closing lines: where it went, how long it took, the final evaluation."""
    lines = [f"== {report.get('name', 'run')} =="]
    for key in ("run_dir", "steps", "train_time_s", "tokens_per_s", "final_train_loss"):
        if key in report:
            lines.append(f"{key}: {_fmt(report[key])}")
    if "trainable_params" in report and "total_params" in report:
        pct = report.get("trainable_percent")
        lines.append(
            f"trainable_params: {report['trainable_params']:,} of {report['total_params']:,}"
            + (f" ({pct:.2f}%)" if isinstance(pct, float) else "")
        )
    for key, value in (report.get("eval") or {}).items():
        lines.append(f"{key}: {_fmt(value)}")
    extra = {
        k: v
        for k, v in report.items()
        if k
        not in {
            "name",
            "eval",
            "run_dir",
            "steps",
            "train_time_s",
            "tokens_per_s",
            "final_train_loss",
            "checkpoint",
            "tokens_seen",
            "resumed",
            "trainable_params",
            "total_params",
            "trainable_percent",
        }
    }
    lines += [f"{k}: {_fmt(v)}" for k, v in extra.items()]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
