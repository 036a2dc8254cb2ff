"""The ``reseg`` command: what is installed and what configs can name.

    reseg plugins [--json] [--strict] [-v]    plugins, their distribution, what each registered,
                                              and every plugin that failed (with its error)
    reseg list [KIND] [PATTERN] [--all] [--json]
                                              registered type names per kind; PATTERN is an
                                              fnmatch pattern (``reseg list heads '*lisa*'``,
                                              ``reseg list '*Head'``)

Exit codes: 0 ok (``reseg plugins`` also when a plugin failed, unless ``--strict``: then 1);
2 usage error (unknown kind, bad arguments).
"""
from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from reseg import plugins as _plugins
from reseg.hookspecs import PLUGIN_API_VERSION
from reseg.registry import REGISTRIES

_GLOB_CHARS = set("*?[")


def _kind_aliases() -> dict[str, str]:
    """Every accepted spelling of a kind -> its key in REGISTRIES (``head``, ``mask-sources``)."""
    aliases: dict[str, str] = {}
    for kind, registry in REGISTRIES.items():
        for alias in (kind, registry.name):
            aliases[alias] = kind
            aliases[alias.replace("_", "-")] = kind
    return aliases


def _resolve_kind(word: str) -> str | None:
    return _kind_aliases().get(word.lower())


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines = [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)


def _registered_text(registered: dict[str, list[str]]) -> str:
    if not registered:
        return "(nothing)"
    return "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items())


def _failure_stage(stage: str) -> str:
    return {"import": "on import", "validate": "validation"}.get(stage, f"in {stage}")


def cmd_plugins(args: argparse.Namespace) -> int:
    """``reseg plugins``: loaded, failed and skipped plugins."""
    loaded = _plugins.loaded_plugins()
    failed = _plugins.failed_plugins()
    skipped = _plugins.skipped_plugins()
    if args.json:
        payload = {
            "plugin_api_version": list(PLUGIN_API_VERSION),
            "plugins": [p.as_dict() for p in loaded],
            "failed": [f.as_dict() for f in failed],
            "skipped": [s.as_dict() for s in skipped],
        }
        print(json.dumps(payload, indent=2))
    else:
        header = ["NAME", "DISTRIBUTION", "VERSION", "MODULE", "REGISTERED"]
        if args.verbose:
            header.insert(4, "PATH")
        rows = []
        for p in loaded:
            row = [p.name, p.dist or "?", p.version or "?", p.module]
            row.append(_registered_text(p.registered))
            if args.verbose:
                row.insert(4, p.path or "?")
            rows.append(row)
        api = ".".join(map(str, PLUGIN_API_VERSION))
        print(f"reseg plugins (entry-point group '{_plugins.ENTRY_POINT_GROUP}', plugin API {api})")
        print(_table(rows, header) if rows else "(no plugin loaded)")
        if failed:
            print(f"\nFAILED plugins ({len(failed)}): types they provide are missing")
            for f in failed:
                origin = f", {f.dist} {f.version}" if f.dist else ""
                print(f"  {f.name} ({f.value}{origin}) failed {_failure_stage(f.stage)}: {f.error}")
                if args.verbose and f.traceback:
                    print("    " + f.traceback.rstrip().replace("\n", "\n    "))
            print(f"  (disable one with {_plugins.BLOCK_ENV}=name; -v shows tracebacks)")
        if skipped:
            print(f"\nNot loaded on purpose ({len(skipped)}):")
            for s in skipped:
                print(f"  {s.name} ({s.value}): {s.reason}")
    return 1 if (args.strict and failed) else 0


def _provider(kind: str, name: str, obj: Any) -> str:
    plugin = _plugins.registered_by(kind, name)
    if plugin is not None:
        return f"plugin {plugin}"
    return getattr(obj, "__module__", None) or "?"


def cmd_list(args: argparse.Namespace) -> int:
    """``reseg list``: registered type names per kind, optionally filtered."""
    kind_word, pattern = args.kind, args.pattern
    kinds = list(REGISTRIES)
    if kind_word is not None:
        kind = _resolve_kind(kind_word)
        if kind is not None:
            kinds = [kind]
        elif pattern is None and _GLOB_CHARS & set(kind_word):
            pattern = kind_word  # `reseg list '*vit*'`: a pattern over every kind
        else:
            close = difflib.get_close_matches(kind_word.lower(), list(_kind_aliases()), n=1)
            hint = f" Did you mean {_resolve_kind(close[0])!r}?" if close else ""
            print(
                f"reseg list: unknown kind {kind_word!r}.{hint} Kinds are: "
                f"{', '.join(REGISTRIES)} (a pattern alone needs a wildcard, e.g. '*lisa*').",
                file=sys.stderr,
            )
            return 2
    _plugins.load_plugins()
    result: dict[str, list[dict[str, str]]] = {}
    for kind in kinds:
        registry = REGISTRIES[kind]
        registry.import_from_location()  # the core's own types live in lazy `locations`
        entries = dict(registry.module_dict)
        if args.all and registry.parent is not None:
            for name, obj in registry.parent.module_dict.items():
                entries.setdefault(name, obj)
        names = sorted(entries)
        if pattern is not None:
            names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
        result[kind] = [
            {"name": n, "provider": _provider(kind, n, entries[n])} for n in names
        ]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    shown = [k for k in kinds if result[k] or pattern is None]
    if not shown:
        print(f"no registered type matches {pattern!r}")
    for kind in shown:
        items = result[kind]
        print(f"{kind} ({len(items)}):")
        if not items:
            print("  (none)")
            continue
        width = max(len(i["name"]) for i in items)
        for item in items:
            print(f"  {item['name']:<{width}}  {item['provider']}")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    """``reseg weights CHECKPOINT OUT.safetensors``: the model weights of a checkpoint as safetensors."""
    from reseg.engine.checkpoint import read_checkpoint, save_model_weights

    if os.path.exists(args.out) and not args.overwrite:
        print(f"reseg weights: {args.out!r} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    sd, types = read_checkpoint(args.checkpoint)
    save_model_weights(sd, args.out, types=types)  # the model it was saved from goes along (tools/test.py checks it)
    print(f"wrote {len(sd)} tensors to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``reseg`` command."""
    parser = argparse.ArgumentParser(
        prog="reseg", description="reseg: reasoning segmentation, one core and methods as plugins."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "plugins",
        help="list plugins, where they come from and what they registered",
        description="List loaded plugins (name, distribution, version, module, what each "
        "registered), failed plugins with their error, and plugins skipped because of "
        f"{_plugins.ALLOW_ENV} / {_plugins.BLOCK_ENV}.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--strict", action="store_true", help="exit 1 if any plugin failed")
    p.add_argument("-v", "--verbose", action="store_true", help="show paths and tracebacks")
    p.set_defaults(func=cmd_plugins)

    kinds = ", ".join(REGISTRIES)
    p = sub.add_parser(
        "list",
        help="list registered type names (what a config's type= can name)",
        description=f"List registered type names. KIND is one of: {kinds} (singular accepted). "
        "PATTERN is an fnmatch pattern, case-insensitive; a lone argument with a wildcard is a "
        "pattern over every kind.",
    )
    p.add_argument("kind", nargs="?", metavar="KIND", help="registry kind, e.g. heads")
    p.add_argument("pattern", nargs="?", metavar="PATTERN", help="fnmatch pattern, e.g. '*lisa*'")
    p.add_argument(
        "--all", action="store_true", help="include names from mmengine's parent registries"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "weights",
        help="write a checkpoint's model weights as .safetensors",
        description="Read CHECKPOINT (reseg/mmengine .pth, loaded with weights_only=True) and write its "
        "model weights to OUT (.safetensors), which tools/test.py and load_model_weights read back.",
    )
    p.add_argument("checkpoint")
    p.add_argument("out", help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=cmd_weights)
    return parser


def _setup_logging() -> None:
    """Warnings of the ``reseg`` logger (e.g. a plugin failed) go to stderr, never to stdout."""
    log = logging.getLogger("reseg")
    if not log.hasHandlers():  # leave logging alone when an application/pytest configured it
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("reseg: %(levelname)s: %(message)s"))
        log.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reseg`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    _setup_logging()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
