"""``splice import PATH``: print the splice config derived from a Hugging Face checkpoint."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "import", help="print the splice model config of a Hugging Face checkpoint directory"
    )
    p.add_argument("path", help="directory with config.json and model.safetensors (or an index)")
    p.add_argument(
        "--check-weights",
        action="store_true",
        help="also validate every tensor's name and shape and load the weights",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splice.hf import CheckpointError, load_config, load_model

    try:
        arch, config = load_config(args.path)
        if args.check_weights:
            load_model(args.path)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"splice import: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(config.model_dump(mode="json"), indent=2))
    print(f"# from model_type={arch.model_type!r} ({arch.hf_class})", file=sys.stderr)
    return 0
