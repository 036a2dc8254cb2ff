"""``--cfg-options`` that also reach the paths a config derived from a top-level variable.

mmengine runs a config file once: after ``data_root = "data/own_data"`` and
``dataset=dict(data_root=data_root + "/refer_seg")`` the config holds the string
``"data/own_data/refer_seg"``, so ``--cfg-options data_root=/data/mine`` (``Config.merge_from_dict``)
changes the top-level key and nothing else: the datasets would still read ``data/own_data``.

:func:`merge_cfg_options` merges the options as mmengine does and, for every overridden **top-level
string** (a key without a dot, e.g. ``data_root``, ``dataset_dir``), also rewrites every string of the
config that equals its old value or starts with it followed by ``/``: ``"data/own_data/refer_seg"``
becomes ``"/data/mine/refer_seg"``. Keys given explicitly in the options win over rewritten ones.

A dict given (from Python: :func:`reseg.load_model`'s ``cfg_options``) for a key whose value is not a
dict, e.g. ``{"model.mask_source.proposer": dict(type=...)}`` onto ``proposer=None``, replaces it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmengine.config import DictAction


def _is_prefix_variable(value: Any) -> bool:
    """A value whose derived strings are rewritten: a string with more than slashes and dots."""
    return isinstance(value, str) and bool(value.strip("/."))


def _rewrite(node: Any, renames: list[tuple[str, str]], path: str, changed: dict[str, str]) -> Any:
    """``node`` with every derived string replaced (dicts and lists in place); records ``changed``."""
    if isinstance(node, str):
        for old, new in renames:
            if node == old or node.startswith(old + "/"):
                value = new + node[len(old):]
                changed[path] = value
                return value
        return node
    if isinstance(node, Mapping):
        for key in list(node.keys()):
            node[key] = _rewrite(node[key], renames, f"{path}.{key}" if path else str(key), changed)
        return node
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _rewrite(item, renames, f"{path}.{i}", changed)
        return node
    if isinstance(node, tuple):
        return tuple(_rewrite(item, renames, f"{path}.{i}", changed) for i, item in enumerate(node))
    return node


def _lookup(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if (isinstance(node, Mapping) or hasattr(node, "_cfg_dict")) and part in node:  # dicts, mmengine Config
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _replacing(cfg: Any, key: str, value: Any) -> Any:
    """A dict given for a key whose current value is not a dict (None, say) replaces it: mmengine
    refuses to merge a dict into a non-dict (``_delete_=True`` is added)."""
    if isinstance(value, Mapping) and not isinstance(_lookup(cfg, key), Mapping):
        return {**dict(value), "_delete_": True}
    return value


def merge_cfg_options(cfg: Any, options: Mapping[str, Any] | None) -> dict[str, str]:
    """``cfg.merge_from_dict(options)``, plus the strings derived from overridden top-level variables.

    Args:
        cfg: an mmengine ``Config`` (changed in place).
        options: ``--cfg-options`` as parsed by mmengine's ``DictAction`` (dotted keys), or None.

    Returns:
        ``{dotted key: new value}`` of every string rewritten because it was derived from an overridden
        top-level variable (the variable itself and explicitly given keys are not listed), for a log line.
    """
    if not options:
        return {}
    renames = []
    for key, new in options.items():
        old = cfg.get(key) if "." not in key else None
        if _is_prefix_variable(old) and isinstance(new, str) and new != old:
            renames.append((old, new.rstrip("/") or new))
    changed: dict[str, str] = {}
    if renames:
        renames.sort(key=lambda r: -len(r[0]))  # the longest old value first (nested variables)
        for key in list(cfg.keys()):
            if key in options:
                continue
            value = _rewrite(cfg[key], renames, key, changed)
            if isinstance(value, (str, tuple)):
                cfg[key] = value
    cfg.merge_from_dict({k: _replacing(cfg, k, v) for k, v in options.items()})
    return {k: v for k, v in changed.items() if not any(k == o or k.startswith(o + ".") for o in options)}


def describe_rewrites(changed: Mapping[str, str], limit: int = 6) -> str:
    """One log line naming the rewritten keys (``""`` when there are none)."""
    if not changed:
        return ""
    keys = list(changed)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ("--cfg-options: also set the paths derived from the overridden variable(s): "
            + ", ".join(f"{k}={changed[k]}" for k in keys[:limit]) + more)


class KeyValueAction(DictAction):
    """mmengine's ``DictAction`` (``--cfg-options k=v ...``) with a one-line error for an item without
    ``=`` (``--cfg-options train_cfg.max_iters 3``) instead of ``ValueError: not enough values to unpack``."""

    def __call__(self, parser, namespace, values, option_string=None):
        values = [values] if isinstance(values, str) else list(values or [])
        for i, item in enumerate(values):
            key, eq, _ = item.partition("=")
            if eq and key:
                continue
            if not eq and i + 1 < len(values) and "=" not in values[i + 1]:
                hint = f"; did you mean {item}={values[i + 1]}?"
            else:
                hint = ""
            what = "has no key before '='" if eq else "has no '='"
            parser.error(f"{option_string} {item!r} {what}: each item is KEY=VALUE (e.g. train_cfg.max_iters=100, "
                         f"no spaces around '='){hint}")
        super().__call__(parser, namespace, values, option_string)
