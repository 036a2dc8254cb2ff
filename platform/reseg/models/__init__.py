"""Models: the segmentor, LMM backbones, mask sources, shared losses and the head base class.

Imports are lazy so that plugins importing :class:`BaseHead` do not pull in transformers/peft.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseHead": "reseg.models.heads",
    "Conversation": "reseg.models.heads",
    "HeadBatch": "reseg.models.heads",
    "MaskSlot": "reseg.models.heads",
    "SegTokenHead": "reseg.models.heads",
    "ReasoningSegmentor": "reseg.models.segmentor",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'reseg.models' has no attribute {name!r}")
