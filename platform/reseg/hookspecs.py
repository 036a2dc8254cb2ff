"""The hooks a reseg plugin may implement: this module's docstrings are the plugin API reference.

A plugin is a module named by an entry point in the group ``reseg.plugins``::

    # setup.cfg of the plugin's distribution
    [options.entry_points]
    reseg.plugins =
        myhead = reseg_myhead.plugin

    # reseg_myhead/plugin.py
    from reseg.plugin_api import hookimpl

    @hookimpl
    def register_heads(register):
        from reseg_myhead.head import MyHead
        register(MyHead)               # or register(MyHead, name="myhead")

Every hook here is a *register-callback* hook: reseg calls it with a ``register`` function bound to
one registry of :data:`reseg.registry.REGISTRIES` and to the calling plugin, so a plugin never
touches reseg's internals and ``reseg plugins`` can say which plugin registered what. The callback
has the signature of :class:`RegisterFn`: ``register(obj, name=None, force=False) -> obj``.

Plugin authors import only from :mod:`reseg.plugin_api` (``hookimpl``, ``PLUGIN_API_VERSION``, the
registries and the base classes), never from this module.

Compatibility rule: hooks only ever *gain* arguments. pluggy passes an implementation only the
arguments it names, so an implementation written for ``register_heads(register)`` keeps working if
a later version calls ``register_heads(register, config)``. Hooks are never renamed or removed
within one major :data:`PLUGIN_API_VERSION`; a hook being phased out is marked with
``warn_on_impl`` for a whole minor version first.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import pluggy

#: Version of the plugin API (hooks + :mod:`reseg.plugin_api`): (major, minor). The minor grows
#: when hooks or arguments are added; the major grows only for a removal or rename, so a plugin
#: written for (2, 0) runs on every (2, x). 2.0: the head contract v2 and the
#: register_checkpoint_converters hook (docs/changelog.md).
PLUGIN_API_VERSION: tuple[int, int] = (2, 0)

#: Project name shared by the hook markers and the plugin manager.
PROJECT_NAME = "reseg"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)

_Obj = TypeVar("_Obj", bound=Callable[..., Any])


class RegisterFn(Protocol):
    """The ``register`` callback every ``register_*`` hook receives."""

    def __call__(
        self, obj: _Obj, name: str | list[str] | None = None, force: bool = False
    ) -> _Obj:
        """Register ``obj`` (a class or a function) in the hook's registry and return it.

        Args:
            obj: The class or function a config names with ``type=...``.
            name: Name(s) configs use; defaults to ``obj.__name__``.
            force: Replace an existing entry of the same name instead of failing.

        Raises:
            KeyError: The name is already registered (by reseg or another plugin) and
                ``force`` is False. reseg reports the plugin as failed and keeps going.
        """


#: Hook name -> registry kind (a key of :data:`reseg.registry.REGISTRIES`) it registers into.
REGISTER_HOOKS: dict[str, str] = {
    "register_heads": "heads",
    "register_lmms": "lmms",
    "register_mask_sources": "mask_sources",
    "register_proposers": "proposers",
    "register_mask_encoders": "mask_encoders",
    "register_datasets": "datasets",
    "register_metrics": "metrics",
    "register_hooks": "hooks",
    "register_models": "models",
    "register_functions": "functions",
    "register_checkpoint_converters": "checkpoint_converters",
}


@hookspec
def register_heads(register: RegisterFn) -> None:
    """Register method heads (``HEADS``), the part that makes a method a method.

    A head owns its special tokens, its prompt/answer templates, how LMM hidden states become mask
    queries, how those drive the mask source, its losses and its prediction rule. Configs name it
    with ``head=dict(type='MyHead', ...)``.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``HEADS``.
    """


@hookspec
def register_lmms(register: RegisterFn) -> None:
    """Register LMM backbones (``LMMS``): tokenizer, ``add_tokens``, forward with hidden states,
    ``generate``.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``LMMS``.
    """


@hookspec
def register_mask_sources(register: RegisterFn) -> None:
    """Register mask sources (``MASK_SOURCES``): a SAM-style decoder or a candidate pool.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``MASK_SOURCES``.
    """


@hookspec
def register_proposers(register: RegisterFn) -> None:
    """Register mask proposers (``PROPOSERS``) that give N candidate masks per image
    (SAM automatic masks, a detector, precomputed RLE masks, ...).

    Args:
        register: ``register(cls, name=None, force=False)`` into ``PROPOSERS``.
    """


@hookspec
def register_mask_encoders(register: RegisterFn) -> None:
    """Register mask tokenizers (``MASK_ENCODERS``) that pool image features inside each candidate
    mask and project them into the LMM's embedding space.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``MASK_ENCODERS``.
    """


@hookspec
def register_datasets(register: RegisterFn) -> None:
    """Register datasets (``DATASETS``, a child of mmengine's ``DATASETS``) yielding reseg samples.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``DATASETS``.
    """


@hookspec
def register_metrics(register: RegisterFn) -> None:
    """Register evaluation metrics (``METRICS``, mmengine ``BaseMetric`` subclasses).

    Args:
        register: ``register(cls, name=None, force=False)`` into ``METRICS``.
    """


@hookspec
def register_hooks(register: RegisterFn) -> None:
    """Register runner hooks (``HOOKS``, mmengine ``Hook`` subclasses) such as visualisers.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``HOOKS``.
    """


@hookspec
def register_models(register: RegisterFn) -> None:
    """Register whole models or model pieces that are not heads, LMMs or mask sources (``MODELS``,
    a child of mmengine's ``MODELS``: segmentors, data preprocessors, losses).

    Args:
        register: ``register(cls, name=None, force=False)`` into ``MODELS``.
    """


@hookspec
def register_functions(register: RegisterFn) -> None:
    """Register plain functions configs refer to by name (``FUNCTIONS``, e.g. collate functions).

    Args:
        register: ``register(fn, name=None, force=False)`` into ``FUNCTIONS``.
    """


@hookspec
def register_checkpoint_converters(register: RegisterFn) -> None:
    """Register checkpoint converters (``CHECKPOINT_CONVERTERS``): how a method's official releases
    map to reseg's module names. ``tools/convert_checkpoint.py --from NAME`` uses the one registered
    as ``NAME``; reseg's converter knows no method itself.

    A converter is a subclass of :class:`reseg.plugin_api.CheckpointConverter` with class attributes
    ``rules`` (official regex -> reseg name, first match wins), ``ignored`` (official keys dropped
    and reported) and ``key_sources`` (the official files the names were read from). The ``[SEG]``
    family's shared layout (LLaVA fork, SAM, ``text_hidden_fcs``) is
    :data:`reseg.plugin_api.SEG_FAMILY_RULES`; put a method's own rules before it. Added in plugin
    API 1.1.

    Args:
        register: ``register(cls, name=None, force=False)`` into ``CHECKPOINT_CONVERTERS``; pass
            ``name="mymethod"``, the name users give to ``--from``.
    """
