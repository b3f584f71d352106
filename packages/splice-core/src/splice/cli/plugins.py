"""``splice plugins``: each plugin distribution, its version, what it registered, load errors.

A plugin that failed to import is shown on one line with its error; the others
are listed as usual. Only entry-point modules are imported (they register lazy
``"module:attr"`` factories), so this command does not import torch.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splice.registry import PluginError, get_registry

    try:
        reg = get_registry()
    except PluginError as exc:  # strict mode, or two plugins claiming one tag
        cause = exc.__cause__
        if cause is not None:  # strict mode: the plugin's own traceback is what helps
            import traceback

            traceback.print_exception(cause, file=sys.stderr)
        print(f"splice plugins: error: {exc}", file=sys.stderr)
        return 1
    infos = sorted(reg.plugins.values(), key=lambda i: (i.name != "core", i.name))
    if getattr(args, "json", False):
        rows = [
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.version,
                "registered": {k: sorted(v) for k, v in sorted(i.registered.items())},
                "error": i.error,
            }
            for i in infos
        ]
        print(json.dumps({"plugins": rows, "disabled": reg.disabled}, indent=2))
        return 0
    for info in infos:
        head = f"{info.distribution} {info.version} (entry point {info.name!r})"
        if info.error:
            print(f"{head}: FAILED to load: {info.error}")
            continue
        print(head)
        for kind, tags in sorted(info.registered.items()):
            print(f"  {kind}: {', '.join(sorted(tags))}")
    if reg.disabled:
        print(f"disabled by SPLICE_DISABLE_PLUGINS: {', '.join(reg.disabled)}")
    return 0
