"""The ``splice`` command line. Each subcommand lives in its own module here.

A subcommand module defines ``add_parser(subparsers) -> None`` which registers
its parser and sets ``func=<callable(args) -> int>``. Add new modules to
``SUBCOMMANDS``; imports inside them stay lazy so ``splice plugins`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = ["plugins", "config_cmd", "run", "hf_import", "generate", "eval"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="splice", description="Build and post-train transformers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"splice.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from splice.cli.bytecode import ensure_bytecode

    ensure_bytecode()  # a no-op unless PYTHONDONTWRITEBYTECODE is set (see its module)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
