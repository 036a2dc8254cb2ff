"""Discover, load and activate reseg plugins (one pluggy ``PluginManager("reseg")``).

A plugin is any module named by an entry point in the group ``reseg.plugins`` (see
:mod:`reseg.hookspecs` for the hooks it may implement). The built-in methods are plugins declared in
reseg's own ``setup.cfg`` and go through exactly the same path as third-party ones.

:func:`load_plugins` is the one point where plugins load, once per process. The tools,
:func:`reseg.api.load_model`, the ``reseg`` command and :func:`reseg.engine.runner.build_runner` call
it; code that builds from the registries itself calls it once first (``reseg.load_plugins()``, as
mmdet's ``register_all_modules()``). Registry lookups never load plugins; an unknown type looked up
before this ran says so and names this function. Loading:

1. every entry point of the group is visited in name order; each is imported in its own
   ``try``: a plugin that raises on import (or whose hooks do not match the specs) is recorded in
   :func:`failed_plugins`, logged with its entry point and error, and the others still load;
2. each plugin's ``register_*`` hooks are called one plugin at a time with a ``register`` callback
   bound to that plugin, so every registration is attributed (:func:`loaded_plugins`) and a plugin
   whose hook raises (e.g. a name clash) is reported without affecting the others.

Environment variables (comma-separated entry-point names, read when plugins are first loaded):

``RESEG_PLUGINS=a,b``
    Allow-list: load only these entry points (built-in ones included, e.g. ``lisa``). Set but empty
    (``RESEG_PLUGINS=``) loads no plugin at all. Unset: load every installed plugin.
``RESEG_DISABLED_PLUGINS=a,b``
    Block-list: never load these entry points (``PluginManager.set_blocked``); it wins over the
    allow-list. Use it to work around a broken third-party plugin.

Skipped entry points are listed by :func:`skipped_plugins` and ``reseg plugins``.

Importing this module installs its reporter on :mod:`reseg.registry` (:func:`explain_unknown_type`),
so an unknown-type message names every plugin that failed, every installed one these variables kept
out and every allow-listed name that is not installed, while the registry never imports this module.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from reseg import hookspecs
from reseg.registry import PLUGINS_NOT_LOADED, REGISTRIES, set_plugin_reporter

__all__ = [
    "ALLOW_ENV",
    "BLOCK_ENV",
    "ENTRY_POINT_GROUP",
    "DuplicateTypeError",
    "FailedPlugin",
    "PluginLoadError",
    "PluginRecord",
    "SkippedPlugin",
    "explain_unknown_type",
    "failed_plugins",
    "get_plugin_manager",
    "load_plugins",
    "loaded_plugins",
    "register_plugin",
    "registered_by",
    "skipped_plugins",
    "unregister_plugin",
]

#: Entry-point group plugins are declared in.
ENTRY_POINT_GROUP = "reseg.plugins"
#: Allow-list environment variable (comma-separated entry-point names).
ALLOW_ENV = "RESEG_PLUGINS"
#: Block-list environment variable (comma-separated entry-point names).
BLOCK_ENV = "RESEG_DISABLED_PLUGINS"

logger = logging.getLogger("reseg")


@dataclass(frozen=True)
class PluginRecord:
    """A plugin that loaded, where it came from and what it registered.

    Attributes:
        name: Entry-point name (also its name in the plugin manager).
        dist: Name of the distribution that declares the entry point (None if unknown).
        version: That distribution's version.
        module: Import path of the plugin module (the entry point's value).
        path: File the plugin module was loaded from.
        registered: Registry kind (``heads``, ``datasets``, ...) -> names it registered, in order.
    """

    name: str
    dist: str | None
    version: str | None
    module: str
    path: str | None
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {
            "name": self.name,
            "dist": self.dist,
            "version": self.version,
            "module": self.module,
            "path": self.path,
            "registered": {kind: list(names) for kind, names in self.registered.items()},
        }


@dataclass(frozen=True)
class FailedPlugin:
    """A plugin that failed to import, to validate, or in one of its register hooks.

    Attributes:
        name: Entry-point name.
        value: Entry-point value (``module`` or ``module:attr``).
        dist: Distribution declaring it (None if unknown).
        version: That distribution's version.
        stage: ``"import"``, ``"validate"`` (hooks do not match :mod:`reseg.hookspecs`) or the name
            of the hook that raised (e.g. ``"register_heads"``).
        error: The exception as one line, type included (``"ImportError: No module named 'x'"``).
        traceback: The full traceback text.
    """

    name: str
    value: str
    dist: str | None
    version: str | None
    stage: str
    error: str
    traceback: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy (without the traceback)."""
        return {
            "name": self.name,
            "value": self.value,
            "dist": self.dist,
            "version": self.version,
            "stage": self.stage,
            "error": self.error,
        }


@dataclass(frozen=True)
class SkippedPlugin:
    """An installed entry point that was not loaded on purpose (allow-/block-list)."""

    name: str
    value: str
    dist: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {"name": self.name, "value": self.value, "dist": self.dist, "reason": self.reason}


class DuplicateTypeError(KeyError):
    """A plugin registered a name its registry already holds (without ``force=True``)."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0]) if self.args else ""


class PluginLoadError(RuntimeError):
    """Raised by :func:`register_plugin` when an explicitly registered plugin fails."""


# ---------------------------------------------------------------------------------------------
# Process-wide state. Guarded by _LOCK (re-entrant: a plugin module or hook that calls
# register_plugin() or loaded_plugins() while loading comes back in on the loading thread).
_LOCK = threading.RLock()
_STATE = "unloaded"  # -> "loading" -> "loaded"
_PM: pluggy.PluginManager | None = None
_LOADED: dict[str, PluginRecord] = {}
_FAILED: list[FailedPlugin] = []
_SKIPPED: list[SkippedPlugin] = []
_ORIGINS: dict[tuple[str, str], str] = {}  # (kind, registered name) -> plugin name
#: The environment's plugin selection as loading saw it: variable -> its value (set variables only),
#: and the allow-listed names that no installed entry point has.
_SELECTION: dict[str, str] = {}
_NOT_INSTALLED: list[str] = []
_INSTALLED: list[str] = []


def _manager() -> pluggy.PluginManager:
    global _PM
    with _LOCK:
        if _PM is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
            _PM = pm
        return _PM


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's pluggy ``PluginManager("reseg")``, with the plugins loaded."""
    load_plugins()
    return _manager()


def _env_names(var: str) -> list[str] | None:
    """Comma-separated names from ``var``; None when it is unset."""
    raw = os.environ.get(var)
    if raw is None:
        return None
    return [n.strip() for n in raw.split(",") if n.strip()]


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    try:
        return dist.name, dist.version
    except Exception:  # malformed metadata must not stop plugin loading
        return None, None


def _format_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _record_failure(
    name: str,
    value: str,
    dist: str | None,
    version: str | None,
    stage: str,
    exc: BaseException,
    log: bool = True,
) -> FailedPlugin:
    rec = FailedPlugin(
        name=name,
        value=value,
        dist=dist,
        version=version,
        stage=stage,
        error=_format_error(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    )
    _FAILED.append(rec)
    if not log:
        return rec
    where = {
        "import": "failed to import and was skipped",
        "validate": "failed validation and was skipped",
    }.get(stage, f"raised in {stage} (what it registered before stays registered)")
    logger.warning(
        "reseg plugin %r (entry point %s = %s%s) %s: %s",
        name,
        name,
        value,
        f", from {dist} {version}" if dist else "",
        where,
        rec.error,
    )
    logger.debug("traceback of plugin %r:\n%s", name, rec.traceback)
    return rec


def _make_register(
    plugin_name: str, kind: str, registered: dict[str, list[str]]
) -> Callable[..., Any]:
    """The ``register`` callback a plugin's ``register_<kind>`` hook receives."""
    registry = REGISTRIES[kind]

    def register(obj: Any, name: str | list[str] | None = None, force: bool = False) -> Any:
        names = [getattr(obj, "__name__", repr(obj))] if name is None else (
            [name] if isinstance(name, str) else list(name)
        )
        if not force:
            for n in names:
                if n in registry.module_dict:
                    owner = _ORIGINS.get((kind, n))
                    by = f"plugin {owner!r}" if owner else registry.module_dict[n].__module__
                    raise DuplicateTypeError(
                        f"{registry.name} type {n!r} is already registered (by {by}); "
                        "pick another name or pass force=True"
                    )
        registry.register_module(name=name, force=force, module=obj)
        for n in names:
            registered.setdefault(kind, []).append(n)
            _ORIGINS[(kind, n)] = plugin_name
        return obj

    register.__qualname__ = f"register[{plugin_name}:{kind}]"
    return register


def _unknown_hooks(pm: pluggy.PluginManager, plugin: object) -> list[str]:
    """Hooks the plugin implements that no spec declares (typos), unless marked optional."""
    unknown = []
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin and not impl.optionalhook:
                unknown.append(caller.name)
    return unknown


def _admit(
    pm: pluggy.PluginManager,
    plugin: object,
    name: str,
    value: str,
    dist: str | None,
    version: str | None,
    log: bool = True,
) -> FailedPlugin | None:
    """Register an imported plugin object in ``pm`` and validate its hooks."""
    try:
        pm.register(plugin, name=name)
    except Exception as exc:
        return _record_failure(name, value, dist, version, "validate", exc, log)
    unknown = _unknown_hooks(pm, plugin)
    if unknown:
        pm.unregister(plugin=plugin, name=name)
        valid = ", ".join(hookspecs.REGISTER_HOOKS)
        exc = pluggy.PluginValidationError(
            plugin,
            f"unknown hook(s) {', '.join(repr(u) for u in unknown)}; the hooks of plugin API "
            f"{'.'.join(map(str, hookspecs.PLUGIN_API_VERSION))} are: {valid}",
        )
        return _record_failure(name, value, dist, version, "validate", exc, log)
    return None


def _activate(
    pm: pluggy.PluginManager,
    plugin: object,
    name: str,
    value: str,
    dist: str | None,
    version: str | None,
    log: bool = True,
) -> tuple[PluginRecord, list[FailedPlugin]]:
    """Call the plugin's register hooks, each with its own attributed ``register`` callback."""
    registered: dict[str, list[str]] = {}
    module = value.split(":", 1)[0]
    mod = sys.modules.get(module)
    record = PluginRecord(
        name=name,
        dist=dist,
        version=version,
        module=module,
        path=getattr(mod, "__file__", None),
        registered=registered,
    )
    _LOADED[name] = record
    failures = []
    for hook_name, kind in hookspecs.REGISTER_HOOKS.items():
        caller = getattr(pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin is not plugin:
                continue
            try:
                if impl.wrapper or impl.hookwrapper:
                    raise pluggy.PluginValidationError(
                        plugin, f"{hook_name} cannot be a wrapper hook implementation"
                    )
                available = {"register": _make_register(name, kind, registered)}
                impl.function(*[available[arg] for arg in impl.argnames])
            except Exception as exc:
                failures.append(_record_failure(name, value, dist, version, hook_name, exc, log))
    return record, failures


def _load_all() -> None:
    pm = _manager()
    allow = _env_names(ALLOW_ENV)
    for blocked in _env_names(BLOCK_ENV) or []:
        pm.set_blocked(blocked)
    _SELECTION.update({var: os.environ[var] for var in (ALLOW_ENV, BLOCK_ENV) if var in os.environ})

    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    _INSTALLED[:] = [ep.name for ep in eps]
    admitted: list[tuple[object, str, str, str | None, str | None]] = []
    for ep in eps:
        dist, version = _dist_of(ep)
        if pm.is_blocked(ep.name):
            _SKIPPED.append(SkippedPlugin(ep.name, ep.value, dist, f"blocked by {BLOCK_ENV}"))
            continue
        if allow is not None and ep.name not in allow:
            _SKIPPED.append(SkippedPlugin(ep.name, ep.value, dist, f"not in {ALLOW_ENV}"))
            continue
        if pm.has_plugin(ep.name):
            owner = _LOADED.get(ep.name)
            exc = ValueError(
                f"another plugin named {ep.name!r} is already loaded"
                + (f" (from {owner.dist} {owner.version}, {owner.module})" if owner else "")
            )
            _record_failure(ep.name, ep.value, dist, version, "import", exc)
            continue
        try:
            plugin = ep.load()
        except (Exception, SystemExit) as exc:
            _record_failure(ep.name, ep.value, dist, version, "import", exc)
            continue
        if _admit(pm, plugin, ep.name, ep.value, dist, version) is None:
            admitted.append((plugin, ep.name, ep.value, dist, version))

    if allow is not None:
        missing = sorted(set(allow) - {ep.name for ep in eps})
        _NOT_INSTALLED[:] = missing
        if missing:
            logger.warning(
                "%s names plugin(s) that are not installed: %s (installed: %s)",
                ALLOW_ENV,
                ", ".join(missing),
                ", ".join(ep.name for ep in eps) or "none",
            )

    # Every remaining impl matches a spec (unknown hooks were rejected per plugin above).
    pm.check_pending()
    for plugin, name, value, dist, version in admitted:
        _activate(pm, plugin, name, value, dist, version)


def load_plugins() -> None:
    """Load every ``reseg.plugins`` entry point and run their register hooks, once per process.

    Idempotent and cheap after the first call; safe to call from several threads (others wait
    for the first) and re-entrantly while loading (the inner call returns at once). Never raises
    because of a plugin: failures are recorded in :func:`failed_plugins` and logged.
    """
    global _STATE
    if _STATE == "loaded":
        return
    with _LOCK:
        if _STATE != "unloaded":  # loaded meanwhile by another thread, or a re-entrant call
            return
        _STATE = "loading"
        try:
            _load_all()
        finally:
            _STATE = "loaded"


def loaded_plugins() -> list[PluginRecord]:
    """Plugins that loaded (in load order), with their distribution and what they registered.

    A plugin with a failing register hook is listed here with what it did register, and in
    :func:`failed_plugins` with the error.
    """
    load_plugins()
    with _LOCK:
        return list(_LOADED.values())


def failed_plugins() -> list[FailedPlugin]:
    """Plugins that failed to import, to validate or in a register hook, with their error."""
    load_plugins()
    with _LOCK:
        return list(_FAILED)


def skipped_plugins() -> list[SkippedPlugin]:
    """Installed entry points not loaded because of ``RESEG_PLUGINS``/``RESEG_DISABLED_PLUGINS``."""
    load_plugins()
    with _LOCK:
        return list(_SKIPPED)


def registered_by(kind: str, name: str) -> str | None:
    """Name of the plugin that registered ``name`` in registry ``kind`` (None: not a plugin)."""
    load_plugins()
    return _ORIGINS.get((kind, name))


def register_plugin(plugin: object, name: str | None = None) -> PluginRecord:
    """Register a plugin object (module, class or instance with hookimpls) without an entry point.

    For notebooks, scripts and tests. Unlike entry-point plugins, an error here is raised:

    Raises:
        PluginLoadError: The plugin's hooks do not match the specs, or one of them raised (what it
            registered before the error stays registered).
    """
    load_plugins()
    with _LOCK:
        pm = _manager()
        value = getattr(plugin, "__name__", None) or type(plugin).__name__
        name = name or value
        before = len(_FAILED)
        failure = _admit(pm, plugin, name, value, None, None, log=False)
        if failure is None:
            record, failures = _activate(pm, plugin, name, value, None, None, log=False)
            if not failures:
                return record
        new = _FAILED[before:]
        del _FAILED[before:]  # raised to the caller instead of reported later
        raise PluginLoadError(
            "; ".join(f"plugin {f.name!r} failed at {f.stage}: {f.error}" for f in new)
        )


def unregister_plugin(name: str) -> PluginRecord | None:
    """Remove a loaded plugin and every type it registered (e.g. to re-register an edited one).

    Returns:
        The plugin's record, or None if no loaded plugin has that name. Its failure records, if
        any, are dropped too.
    """
    load_plugins()
    with _LOCK:
        pm = _manager()
        record = _LOADED.pop(name, None)
        if pm.has_plugin(name):
            pm.unregister(name=name)
        _FAILED[:] = [f for f in _FAILED if f.name != name]
        if record is None:
            return None
        for kind, names in record.registered.items():
            for n in names:
                if _ORIGINS.get((kind, n)) == name:
                    del _ORIGINS[(kind, n)]
                    REGISTRIES[kind].module_dict.pop(n, None)
        return record


def _setting(var: str) -> str:
    """``RESEG_PLUGINS=a,b`` as loading saw it."""
    return f"{var}={_SELECTION.get(var, '')}"


def explain_unknown_type(kind: str, key: str) -> list[str]:
    """What an unknown-type message of registry ``kind`` says about plugins, for the name ``key``.

    Installed on :mod:`reseg.registry` when this module is imported. Before :func:`load_plugins` ran:
    that plugins are not loaded and what to call. After: every plugin that failed (with its error),
    every installed plugin ``RESEG_PLUGINS`` / ``RESEG_DISABLED_PLUGINS`` kept out (and the one whose
    entry-point name is part of ``key``, e.g. ``lisa`` for ``LISAHead``), and every allow-listed name
    that is not installed.
    """
    if _STATE == "unloaded":
        return [PLUGINS_NOT_LOADED]
    lines: list[str] = []
    failed = failed_plugins()
    if failed:
        lines.append("These plugins failed to load and may be the ones that provide it:")
        for f in failed:
            origin = f", {f.dist} {f.version}" if f.dist else ""
            when = {"import": "on import", "validate": "validation"}.get(f.stage, f"in {f.stage}")
            lines.append(f"  - {f.name} ({f.value}{origin}) failed {when}: {f.error}")
    skipped = skipped_plugins()
    if skipped:
        named = [p.name for p in skipped if p.name.lower() in key.lower()]
        guess = f" (by its name, {key!r} probably comes from plugin {max(named, key=len)!r})" if named else ""
        lines.append(f"These installed plugins were not loaded, so nothing they provide is registered{guess}:")
        for p in skipped:
            var = BLOCK_ENV if p.reason.startswith("blocked") else ALLOW_ENV
            lines.append(f"  - {p.name} ({p.value}{', ' + p.dist if p.dist else ''}): {p.reason} "
                         f"({_setting(var)})")
        lines.append(f"  To load one, add its name to {ALLOW_ENV} (or unset it) and take it out of {BLOCK_ENV}.")
    if _NOT_INSTALLED:
        lines.append(f"{_setting(ALLOW_ENV)} names plugins that are not installed: {', '.join(_NOT_INSTALLED)} "
                     f"(installed: {', '.join(_INSTALLED) or 'none'}).")
    return lines


set_plugin_reporter(explain_unknown_type)
