"""reseg's registries: children of mmengine's root registries, all in the one scope ``reseg``.

Every kind of part a config can name has a registry here. Lookups of an unknown type fail with an
:class:`UnknownTypeError` that says which kind was asked for, the name, what *is* registered, the
closest registered name and what the plugin host knows about plugins that could provide it: every
plugin that failed to import (the usual real cause of "X is not registered"), every installed plugin
that ``RESEG_PLUGINS`` / ``RESEG_DISABLED_PLUGINS`` kept out, or that plugins were never loaded.

Plugins add to these registries through the hooks in :mod:`reseg.hookspecs`; they never import this
module's internals beyond the registry objects exposed in :mod:`reseg.plugin_api`. They are loaded at
one explicit point, :func:`reseg.plugins.load_plugins` (``reseg.load_plugins``), which the tools,
:func:`reseg.api.load_model`, the ``reseg`` command and :func:`reseg.engine.runner.build_runner`
call; code that builds from these registries itself calls it once first (as mmdet's
``register_all_modules()``). A lookup never loads plugins, and this module never imports
:mod:`reseg.plugins`: the plugin host depends on the registries, not the other way round. What an
unknown-type message says about plugins comes from the reporter the host installs on import
(:func:`set_plugin_reporter`).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry as _MMRegistry

SCOPE = "reseg"


class UnknownTypeError(KeyError):
    """A config named a type that no registry of that kind knows."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0]) if self.args else ""


#: What an unknown-type message says when no plugin host has reported (``reseg.plugins`` was never
#: imported, so plugins were never loaded in this process).
PLUGINS_NOT_LOADED = (
    "Plugins have not been loaded in this process, so no type a plugin provides (every head, among "
    "others) is registered: call reseg.plugins.load_plugins() once before building from the registries "
    "(tools/*.py, reseg.load_model, the `reseg` command and reseg.engine.runner.build_runner do it)."
)

#: Lines an unknown-type message adds about plugins; installed by :mod:`reseg.plugins`.
PluginReporter = Callable[[str, str], list[str]]
_plugin_reporter: PluginReporter | None = None


def set_plugin_reporter(reporter: PluginReporter | None) -> None:
    """Install the function that explains, in an unknown-type message, what plugins have to do with it.

    ``reporter(kind, key)`` gets the registry's name (``'head'``) and the name that was not found, and
    returns lines (failed plugins, plugins kept out by the environment, plugins not loaded yet).
    :mod:`reseg.plugins` installs its own when imported; None restores :data:`PLUGINS_NOT_LOADED`.
    """
    global _plugin_reporter
    _plugin_reporter = reporter


class Registry(_MMRegistry):
    """An mmengine ``Registry`` whose failed lookups explain themselves.

    Lookups never load plugins: types that plugins provide are found once
    :func:`reseg.plugins.load_plugins` has run (see the module docstring).
    """

    def get(self, key: str) -> Any:
        if isinstance(key, str) and "." not in key:
            # A bare name is a registered type or nothing. mmengine would fall back to
            # importing it as a module path, so `'json' in HEADS` was True (the module).
            registry: _MMRegistry | None = self
            while registry is not None:
                registry.import_from_location()  # lazy `locations` of reseg and of mmengine
                if key in registry.module_dict:
                    return registry.module_dict[key]
                registry = registry.parent
            raise UnknownTypeError(self.unknown_type_message(key))
        obj = super().get(key)
        if obj is None and isinstance(key, str):
            raise UnknownTypeError(self.unknown_type_message(key))
        return obj

    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """mmengine's build; a config key the type does not take fails naming the closest one."""
        try:
            return super().build(cfg, *args, **kwargs)
        except TypeError as err:
            raise self._explain_unknown_argument(cfg, err) from None

    def _explain_unknown_argument(self, cfg: Any, err: TypeError) -> TypeError:
        import inspect
        import re

        msg = str(err)
        typ = cfg.get("type") if hasattr(cfg, "get") else None
        cls = self.get(typ) if isinstance(typ, str) else typ
        name = getattr(cls, "__name__", None)
        # the class named in the message is the one that defines __init__ (a base class, for a subclass
        # that inherits it)
        m = re.search(r"\b\w+\.__init__\(\) got an unexpected keyword argument '(\w+)'", msg)
        if m is None or "accepted arguments:" in msg:
            return err
        try:
            params = [p for p, v in inspect.signature(cls).parameters.items()
                      if v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]
        except (TypeError, ValueError):
            return err
        bad = m.group(1)
        close = difflib.get_close_matches(bad, params, n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return TypeError(f"{msg}.{hint} {self.name} type {name!r}: accepted arguments: {', '.join(params)}")

    def __contains__(self, key: str) -> bool:
        try:
            return self.get(key) is not None
        except UnknownTypeError:
            return False

    def registered_names(self) -> list[str]:
        """Names registered here and in the parent (mmengine) registry, sorted."""
        names = set(self.module_dict)
        if self.parent is not None:
            names.update(self.parent.module_dict)
        return sorted(names)

    def unknown_type_message(self, key: str) -> str:
        own = sorted(self.module_dict)
        lines = [f"Unknown {self.name} type {key!r} (registry '{self.scope}::{self.name}')."]
        by_lower = {n.lower(): n for n in self.registered_names()}
        close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
        if close:
            lines.append(f"Did you mean {by_lower[close[0]]!r}?")
        lines.append(
            f"Registered {self.name} types in reseg: {', '.join(own) if own else '(none)'}."
        )
        lines.extend(_plugin_reporter(self.name, key) if _plugin_reporter is not None else [PLUGINS_NOT_LOADED])
        lines.append("Run `reseg plugins` to see every plugin and what it registered.")
        return "\n".join(lines)


def _child(name: str, parent: _MMRegistry | None, locations: list[str]) -> Registry:
    return Registry(name, parent=parent, scope=SCOPE, locations=locations)


# mmengine kinds: children of mmengine's roots, so the Runner finds them with default_scope='reseg'.
MODELS = _child("model", MMENGINE_MODELS, ["reseg.models.segmentor"])
DATASETS = _child("dataset", MMENGINE_DATASETS, ["reseg.datasets", "mmengine.dataset"])
METRICS = _child("metric", MMENGINE_METRICS, ["reseg.evaluation", "mmengine.evaluator"])
HOOKS = _child("hook", MMENGINE_HOOKS, ["reseg.engine", "reseg.evaluation", "mmengine.hooks"])
FUNCTIONS = _child("function", MMENGINE_FUNCTIONS, ["reseg.datasets", "mmengine.dataset"])

# The rest of mmengine's kinds get an (empty) child too, so the Runner's scope switch to 'reseg' finds
# a registry tree for every kind it builds instead of warning and falling back.
import mmengine.registry as _mmreg  # noqa: E402

_PASSTHROUGH = ("LOOPS", "DATA_SAMPLERS", "OPTIMIZERS", "OPTIM_WRAPPERS", "OPTIM_WRAPPER_CONSTRUCTORS",
                "PARAM_SCHEDULERS", "LOG_PROCESSORS", "VISUALIZERS", "VISBACKENDS", "RUNNERS",
                "RUNNER_CONSTRUCTORS", "MODEL_WRAPPERS", "WEIGHT_INITIALIZERS", "EVALUATOR", "TRANSFORMS",
                "TASK_UTILS", "INFERENCERS", "STRATEGIES")
for _kind in _PASSTHROUGH:
    _parent = getattr(_mmreg, _kind, None)
    if _parent is not None:
        _MMRegistry(_parent.name, parent=_parent, scope=SCOPE)

# reseg's own kinds (no mmengine parent): the three parts of a ReasoningSegmentor and their pieces.
LMMS = _child("lmm", None, ["reseg.models.lmm"])
MASK_SOURCES = _child("mask_source", None, ["reseg.models.mask_sources"])
PROPOSERS = _child("proposer", None, ["reseg.models.mask_sources.pool.proposers"])
MASK_ENCODERS = _child("mask_encoder", None, ["reseg.models.mask_sources.pool.tokenizer"])
HEADS = _child("head", None, [])
# Checkpoint importers (reseg.convert.CheckpointConverter subclasses), by the name `--from NAME` uses.
CHECKPOINT_CONVERTERS = _child("checkpoint_converter", None, [])

#: Every registry by the kind name used in hooks, the CLI and error messages.
REGISTRIES: dict[str, Registry] = {
    "models": MODELS,
    "datasets": DATASETS,
    "metrics": METRICS,
    "hooks": HOOKS,
    "functions": FUNCTIONS,
    "lmms": LMMS,
    "mask_sources": MASK_SOURCES,
    "proposers": PROPOSERS,
    "mask_encoders": MASK_ENCODERS,
    "heads": HEADS,
    "checkpoint_converters": CHECKPOINT_CONVERTERS,
}
