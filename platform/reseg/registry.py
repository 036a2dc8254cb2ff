"""reseg's registries: children of mmengine's root registries, all in the one scope ``reseg``.

Every kind of part a config can name has a registry here. Lookups of an unknown type fail with an
:class:`UnknownTypeError` that says which kind was asked for, the name, what *is* registered, the
closest registered name and every plugin that failed to import (the usual real cause of
"X is not registered"; see ``specs/platform_research.md`` §A8).

Plugins add to these registries through the hooks in :mod:`reseg.hookspecs`; they never import this
module's internals beyond the registry objects exposed in :mod:`reseg.plugin_api`.
"""
from __future__ import annotations

import difflib
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


class Registry(_MMRegistry):
    """An mmengine ``Registry`` whose failed lookups explain themselves.

    Before the first lookup the plugins are loaded (:func:`reseg.plugins.load_plugins`), so a type
    registered by any installed plugin is found without the user importing anything.
    """

    def get(self, key: str) -> Any:
        if isinstance(key, str):
            from reseg.plugins import load_plugins

            load_plugins()
            if "." not in key:
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
        m = re.search(rf"\b{re.escape(str(name))}\.__init__\(\) got an unexpected keyword argument '(\w+)'", msg)
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
        from reseg.plugins import failed_plugins

        own = sorted(self.module_dict)
        lines = [f"Unknown {self.name} type {key!r} (registry '{self.scope}::{self.name}')."]
        by_lower = {n.lower(): n for n in self.registered_names()}
        close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
        if close:
            lines.append(f"Did you mean {by_lower[close[0]]!r}?")
        lines.append(
            f"Registered {self.name} types in reseg: {', '.join(own) if own else '(none)'}."
        )
        failed = failed_plugins()
        if failed:
            lines.append("These plugins failed to load and may be the ones that provide it:")
            for f in failed:
                origin = f", {f.dist} {f.version}" if getattr(f, "dist", None) else ""
                stage = getattr(f, "stage", "import")
                when = {"import": "on import", "validate": "validation"}.get(stage, f"in {stage}")
                lines.append(f"  - {f.name} ({f.value}{origin}) failed {when}: {f.error}")
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
PROPOSERS = _child("proposer", None, ["reseg.models.mask_sources"])
MASK_ENCODERS = _child("mask_encoder", None, ["reseg.models.mask_sources"])
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
