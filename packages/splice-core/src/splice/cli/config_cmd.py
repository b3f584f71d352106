"""``splice config NAME|file.py [--set a.b=v ...]``: print a recipe's validated config as JSON."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from splice.cli.run import add_recipe_arguments

    p = sub.add_parser("config", help="print a recipe's validated config as JSON")
    add_recipe_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from splice.cli.run import load_recipe
    from splice.overrides import apply_overrides

    try:
        recipe = load_recipe(args.recipe)
        config = apply_overrides(recipe.config(), args.overrides)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        print(f"splice config: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    return 0
