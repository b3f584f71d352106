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
        prog="splice",
        description="Build and post-train transformers.",
        epilog="Add --debug anywhere to see the traceback of an error.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"splice.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; an uncaught error becomes one ``splice <cmd>: error: ...`` line
    (exit status 1), with the traceback only under ``--debug``."""
    from splice.cli.bytecode import ensure_bytecode
    from splice.cli.errors import report, wants_debug

    ensure_bytecode()  # a no-op unless PYTHONDONTWRITEBYTECODE is set (see its module)
    argv, debug = wants_debug(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        return report(args.command, exc, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
