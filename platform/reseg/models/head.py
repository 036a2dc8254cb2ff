"""Where the head contract lived before v2: it is now :mod:`reseg.models.heads` (also ``reseg.plugin_api``).

``BaseHead`` and ``Conversation`` are re-exported here; ``BatchContext`` (the v1 batch a head walked
itself) is gone: v2 heads receive a :class:`~reseg.models.heads.HeadBatch` whose slots the core has
already read (docs/write_a_head_plugin.md, docs/changelog.md).
"""
from __future__ import annotations

from typing import Any

from reseg.models.heads.base import BaseHead, Conversation

__all__ = ["BaseHead", "Conversation"]


def __getattr__(name: str) -> Any:
    if name == "BatchContext":
        raise ImportError(
            "reseg.models.head.BatchContext was the head contract v1; v2 heads implement forward(batch: HeadBatch), "
            "loss_by_feat and predict_by_feat (from reseg.plugin_api import BaseHead, HeadBatch); "
            "see docs/write_a_head_plugin.md")
    raise AttributeError(f"module 'reseg.models.head' has no attribute {name!r}")
