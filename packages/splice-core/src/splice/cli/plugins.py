"""``splice plugins``: each plugin distribution, its version, what it registered, load errors."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splice.registry import get_registry

    reg = get_registry()
    for info in sorted(reg.plugins.values(), key=lambda i: (i.name != "core", i.name)):
        head = f"{info.distribution} {info.version} (entry point {info.name!r})"
        if info.error:
            print(f"{head}: FAILED to load: {info.error}")
            continue
        print(head)
        for kind, tags in sorted(info.registered.items()):
            print(f"  {kind}: {', '.join(sorted(tags))}")
    return 0
