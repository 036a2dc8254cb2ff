"""Checkpoints that load under torch's ``weights_only=True`` without turning the safety check off.

mmengine pickles non-tensor objects into its checkpoints (``HistoryBuffer`` instances in the message
hub, holding numpy arrays), so ``torch.load`` under torch >= 2.6's default ``weights_only=True``
refuses them (``specs/environment.md``). Instead of torch's environment override (which
disables the check for every load) :class:`PlainCheckpointHook` rewrites the checkpoint into plain
containers, scalars and tensors just before it is written, and restores the objects right after it
is read; a checkpoint from anywhere else is still loaded with the safe unpickler and refused if it
holds code.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer

from reseg.registry import HOOKS

_TAG = "__reseg_plain__"


def to_plain(obj: Any) -> Any:
    """Recursively replace mmengine/numpy objects with tagged dicts of tensors and scalars."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_TAG: "HistoryBuffer", "log": torch.from_numpy(np.asarray(log, dtype=np.float64)),
                "count": torch.from_numpy(np.asarray(count, dtype=np.float64)), "max_length": int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        return {_TAG: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(obj)) if obj.dtype != object else obj.tolist()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = {k: to_plain(v) for k, v in obj.items()}
        return out if type(obj) is dict else type(obj)(out)
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain`."""
    if isinstance(obj, dict):
        tag = obj.get(_TAG)
        if tag == "HistoryBuffer":
            return HistoryBuffer(obj["log"].numpy().tolist(), obj["count"].numpy().tolist(), obj["max_length"])
        if tag == "ndarray":
            d = obj["data"]
            return d.numpy() if isinstance(d, torch.Tensor) else np.asarray(d)
        out = {k: from_plain(v) for k, v in obj.items()}
        return out if type(obj) is dict else type(obj)(out)
    if isinstance(obj, list):
        return [from_plain(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(from_plain(v) for v in obj)
    return obj


@HOOKS.register_module()
class PlainCheckpointHook(Hook):
    """Keep every checkpoint loadable with ``torch.load(..., weights_only=True)``.

    ``tools/train.py`` adds it to every run; it has the highest priority so that other hooks see the
    restored objects after loading and it converts last before saving.
    """

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ("message_hub", "meta"):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ("message_hub", "meta"):
            if key in checkpoint:
                checkpoint[key] = from_plain(checkpoint[key])


def load_checkpoint_file(path: str, map_location: str = "cpu") -> dict:
    """Load a reseg/mmengine checkpoint safely (``weights_only=True``) and restore its objects."""
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends
        raise RuntimeError(
            f"refusing to load {path!r}: it is not a plain tensor checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}). reseg only loads checkpoints with torch's weights_only "
            "unpickler, which never runs code from the file."
        ) from None
    if isinstance(ckpt, dict):
        for key in ("message_hub", "meta"):
            if key in ckpt:
                ckpt[key] = from_plain(ckpt[key])
    return ckpt
