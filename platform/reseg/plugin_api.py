"""The one public module for reseg plugin authors.

Everything a plugin needs is importable from here, and only what is listed in ``__all__`` is
covered by :data:`PLUGIN_API_VERSION` (the rest of reseg may change between minor versions)::

    from reseg.plugin_api import hookimpl

    @hookimpl
    def register_heads(register):
        from my_plugin.head import MyHead  # import heavy modules inside the hook
        register(MyHead)

Declare the plugin in your distribution's metadata and install it next to reseg::

    [options.entry_points]              # setup.cfg
    reseg.plugins =
        myhead = my_plugin.plugin

    [project.entry-points."reseg.plugins"]   # or pyproject.toml
    myhead = "my_plugin.plugin"

The hooks and what they register are documented in :mod:`reseg.hookspecs`; ``reseg plugins``
shows whether your plugin loaded and what it registered, ``reseg list heads`` what configs can name.
A plugin can check ``PLUGIN_API_VERSION[0]`` (2: the head contract v2, docs/write_a_head_plugin.md) at import.
"""
from __future__ import annotations

import importlib
from typing import Any

import pluggy

from reseg.hookspecs import PLUGIN_API_VERSION, PROJECT_NAME, RegisterFn
from reseg.registry import (
    CHECKPOINT_CONVERTERS,
    DATASETS,
    FUNCTIONS,
    HEADS,
    HOOKS,
    LMMS,
    MASK_ENCODERS,
    MASK_SOURCES,
    METRICS,
    MODELS,
    PROPOSERS,
    REGISTRIES,
    UnknownTypeError,
)

#: Marks a function of a plugin module as the implementation of a hook of :mod:`reseg.hookspecs`.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# Base classes and records plugin authors subclass or use, resolved lazily (PEP 562) so that
# importing this module (which every plugin module does while ``reseg plugins`` loads them) stays
# cheap and never imports torch; import them inside your hook or your own head module.
# Add an entry per public name: exported name -> "module:attribute".
_LAZY_EXPORTS: dict[str, str] = {
    # the head contract (docs/write_a_head_plugin.md)
    "BaseHead": "reseg.models.heads:BaseHead",
    "Conversation": "reseg.models.heads:Conversation",
    "MaskSlot": "reseg.models.heads:MaskSlot",
    "HeadBatch": "reseg.models.heads:HeadBatch",
    "SlotBatch": "reseg.models.heads:SlotBatch",
    "SlotTargets": "reseg.models.heads:SlotTargets",
    "HeadPredictions": "reseg.models.heads:HeadPredictions",
    # building blocks of the [SEG] family and of per-token maps
    "SegTokenHead": "reseg.models.heads:SegTokenHead",
    "SegProjection": "reseg.models.heads:SegProjection",
    "seg_token_states": "reseg.models.heads:seg_token_states",
    "ImageTokenFrame": "reseg.models.image_tokens:ImageTokenFrame",
    "mask_losses": "reseg.models.losses:mask_losses",
    # the records passed between parts (docs/architecture.md, "Sample")
    "Sample": "reseg.structures:Sample",
    "Query": "reseg.structures:Query",
    "QueryPrediction": "reseg.structures:QueryPrediction",
    # loaders (docs/own_data.md "write your own loader")
    "ResegDataset": "reseg.datasets.base:ResegDataset",
    # candidate pools (docs/proposers.md): proposers and mask encoders
    "BaseProposer": "reseg.models.mask_sources.pool.proposers.base:BaseProposer",
    "Proposals": "reseg.models.mask_sources.pool.proposers.base:Proposals",
    "MaskEncoder": "reseg.models.mask_sources.pool.tokenizer.encoders.base:MaskEncoder",
    # checkpoint import (docs/convert_checkpoint.md): the converter base and the [SEG] family's shared layout
    "CheckpointConverter": "reseg.convert:CheckpointConverter",
    "SEG_FAMILY_RULES": "reseg.convert:SEG_FAMILY_RULES",
    "SEG_FAMILY_KEY_SOURCES": "reseg.convert:SEG_FAMILY_KEY_SOURCES",
    "BUFFERS_IGNORED": "reseg.convert:BUFFERS_IGNORED",
}

__all__ = [
    "PLUGIN_API_VERSION",
    "hookimpl",
    "RegisterFn",
    "UnknownTypeError",
    "REGISTRIES",
    "HEADS",
    "LMMS",
    "MASK_SOURCES",
    "PROPOSERS",
    "MASK_ENCODERS",
    "DATASETS",
    "METRICS",
    "HOOKS",
    "MODELS",
    "FUNCTIONS",
    "CHECKPOINT_CONVERTERS",
    *_LAZY_EXPORTS,
]


def __getattr__(name: str) -> Any:
    """Import a lazily exported base class on first access (PEP 562)."""
    target = _LAZY_EXPORTS.get(name)
    if name == "BatchContext":
        raise AttributeError("reseg.plugin_api.BatchContext was the head contract v1; v2 heads receive a HeadBatch "
                             "(forward / loss_by_feat / predict_by_feat): see docs/write_a_head_plugin.md")
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
