"""Checkpoints that load under torch's ``weights_only=True`` and survive a kill while being written.

mmengine pickles non-tensor objects into its checkpoints (``HistoryBuffer`` instances in the message
hub, holding numpy arrays), so ``torch.load`` under torch >= 2.6's default ``weights_only=True``
refuses them. Instead of torch's environment override (which disables the check for every load)
:class:`PlainCheckpointHook` rewrites the checkpoint into plain containers, scalars and tensors just
before it is written, and restores the objects right after it is read; a checkpoint from anywhere
else is still loaded with the safe unpickler and refused if it holds code.
"""
from __future__ import annotations

import ast
import os
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging.history_buffer import HistoryBuffer

from reseg.fileio import atomic_write_bytes
from reseg.registry import HOOKS

_TAG = "__reseg_plain__"


def to_plain(obj: Any) -> Any:
    """Recursively replace mmengine/numpy objects with tagged dicts of tensors and scalars."""
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {_TAG: "HistoryBuffer", "log": torch.from_numpy(np.asarray(log, dtype=np.float64)),
                "count": torch.from_numpy(np.asarray(count, dtype=np.float64)), "max_length": int(obj.max_length)}
    if isinstance(obj, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(obj)) if obj.dtype != object else obj.tolist()
        return {_TAG: "ndarray", "data": data}
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


def _unreadable(path: str, err: BaseException) -> RuntimeError:
    """The error for a checkpoint torch cannot read at all: cut short, damaged, or not a checkpoint."""
    first = str(err).strip().split(". ")[0].splitlines()[0] if str(err).strip() else "unexpected end of file"
    return RuntimeError(
        f"checkpoint {path!r} is corrupt or truncated ({os.path.getsize(path)} bytes; torch: "
        f"{type(err).__name__}: {first}). Copy or save it again: a checkpoint reseg writes is complete or "
        "absent, never cut short.")


def load_checkpoint_file(path: str, map_location: str = "cpu") -> dict:
    """Load a reseg/mmengine checkpoint safely (``weights_only=True``) and restore its objects."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise _unreadable(path, e) from None
        # the file asks for a global (a class or function) beyond tensors and plain values
        why = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line),
                   "it references objects beyond tensors and plain values")
        why = why.split(" Please use ")[0].removeprefix("WeightsUnpickler error: ").rstrip(".")
        raise RuntimeError(
            f"refusing to load {path!r}: it is not a plain tensor checkpoint ({why}). reseg only loads "
            "checkpoints with torch's weights_only unpickler, which never runs code from the file."
        ) from None
    except Exception as e:  # a cut-off zip archive, an empty file, another format
        raise _unreadable(path, e) from None
    if isinstance(ckpt, dict):
        for key in ("message_hub", "meta"):
            if key in ckpt:
                ckpt[key] = from_plain(ckpt[key])
    return ckpt


# ---------------------------------------------------------------------------- atomic checkpoints

#: mmengine file backend name of :class:`AtomicLocalBackend`.
ATOMIC_BACKEND = "reseg_atomic_local"
_STEP = re.compile(r"^(?:iter|epoch)_(\d+)\.pth$")


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic :meth:`put` / :meth:`put_text` (see :func:`atomic_write_bytes`)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(filepath, obj)

    def put_text(self, obj: str, filepath, encoding: str = "utf-8") -> None:
        atomic_write_bytes(filepath, obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def checkpoint_step(path: str) -> int | None:
    """The iteration/epoch of an ``iter_N.pth`` / ``epoch_N.pth`` file name, else None."""
    m = _STEP.match(os.path.basename(path))
    return int(m.group(1)) if m else None


def latest_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``--resume`` continues from: the newest complete one in ``work_dir``.

    Checkpoints are written atomically (:class:`SafeCheckpointHook`), so every ``iter_N.pth`` present
    is complete; the one with the largest N wins. ``last_checkpoint`` (mmengine's pointer, written
    after the checkpoint) is used when it names an existing file at least as new, so a run whose
    pointer is missing, empty, stale or names a deleted file still resumes from its newest checkpoint.
    Returns None when there is nothing to resume.
    """
    if not os.path.isdir(work_dir):
        return None
    found = [(checkpoint_step(n), os.path.join(work_dir, n)) for n in os.listdir(work_dir)]
    found = [(s, p) for s, p in found if s is not None and os.path.exists(p)]  # DeepSpeed: directories
    newest = max(found)[1] if found else None
    pointer = os.path.join(work_dir, "last_checkpoint")
    if os.path.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        if named and os.path.exists(named):
            s = checkpoint_step(named)
            if newest is None or (s is not None and s >= checkpoint_step(newest)):
                return named
    return newest


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with checkpoints that survive a kill at any moment.

    Differences (everything else, arguments included, is mmengine's):

    * checkpoints and ``last_checkpoint`` are written atomically (:class:`AtomicLocalBackend`) when
      they go to a local directory: a kill while saving leaves the previous checkpoint as it was;
    * ``max_keep_ckpts`` prunes old checkpoints only *after* the new one is complete (mmengine
      deletes the oldest first, so ``max_keep_ckpts=1`` and a kill while saving left nothing).

    ``reseg.engine.runner`` puts it in place of ``CheckpointHook`` in every config.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, backend_args: dict | None = None,
                 out_dir: str | None = None, **kwargs) -> None:
        local = out_dir is None or "://" not in str(out_dir)
        if backend_args is None and local and not kwargs.get("file_client_args"):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, max_keep_ckpts=-1, backend_args=backend_args, out_dir=out_dir, **kwargs)
        self.keep_last = int(max_keep_ckpts)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        super()._save_checkpoint_with_step(runner, step, meta)
        if not is_main_process():
            return
        atomic_write_bytes(os.path.join(runner.work_dir, "last_checkpoint"), str(self.last_ckpt).encode())
        if self.keep_last > 0 and isinstance(self.out_dir, str) and os.path.isdir(self.out_dir):
            steps = sorted((s, n) for n in os.listdir(self.out_dir) if (s := checkpoint_step(n)) is not None)
            for _, name in steps[: -self.keep_last]:
                path = os.path.join(self.out_dir, name)
                if path != self.last_ckpt:
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)  # DeepSpeed saves directories


# ---------------------------------------------------------------------------- what a checkpoint was saved from
#: safetensors metadata key holding :func:`model_types` of the model the weights came from (``reseg weights``)
MODEL_TYPES_KEY = "reseg_model_types"


def _literal(node: ast.AST) -> Any:
    """The value of a config-text expression made of literals, lists, tuples, dicts and ``dict(...)``
    calls; anything else (a name, another call) is ``None``. Nothing is evaluated."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    return None


def recorded_model(cfg_text: Any) -> dict | None:
    """The ``model`` dict of the config a checkpoint records (mmengine's ``meta['cfg']``, the config's
    text), read with :mod:`ast` without running it; None when there is none."""
    if not isinstance(cfg_text, str):
        return None
    try:
        tree = ast.parse(cfg_text)
    except SyntaxError:
        return None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "model" for t in stmt.targets):
            model = _literal(stmt.value)
            return model if isinstance(model, dict) else None
    return None


def model_types(model_cfg: Any) -> dict[str, str]:
    """``{"model.type": "ReasoningSegmentor", "model.head.type": "LISAHead", ...}``: the registered type
    of a model config and of each of its parts (backbone, mask source, head), the scope (``reseg.``)
    dropped. Deeper types (a proposer, an encoder) hold no weights of the checkpoint and are left out."""
    out: dict[str, str] = {}
    if not isinstance(model_cfg, Mapping):
        return out
    if isinstance(model_cfg.get("type"), str):
        out["model.type"] = model_cfg["type"].rsplit(".", 1)[-1]
    for key, part in model_cfg.items():
        if isinstance(part, Mapping) and isinstance(part.get("type"), str):
            out[f"model.{key}.type"] = part["type"].rsplit(".", 1)[-1]
    return out


def model_differences(recorded: Mapping[str, str], expected: Mapping[str, str]) -> list[str]:
    """One line per part whose registered type differs between the model a checkpoint records and
    the config's (parts that only one of them names are not compared)."""
    return [f"{key}={recorded[key]!r} in the checkpoint, {expected[key]!r} in the config"
            for key in sorted(set(recorded) & set(expected)) if recorded[key] != expected[key]]


# ---------------------------------------------------------------------------- model weights
def read_checkpoint(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """``(state dict, model types)`` of a reseg/mmengine checkpoint (``.pth``, read with
    ``weights_only=True``) or a ``.safetensors`` file (tensors only by construction). The model types
    (:func:`model_types`) are those of the config the checkpoint records, or None when it records none."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    if path.endswith(".safetensors"):
        import json

        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        try:
            types = json.loads(meta[MODEL_TYPES_KEY]) if MODEL_TYPES_KEY in meta else None
        except ValueError:
            types = None
        return load_file(path), types if isinstance(types, dict) else None
    ckpt = load_checkpoint_file(path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path!r} holds no state dict of tensors (expected mmengine's {{'state_dict': ...}} "
                         "or a plain {name: tensor} dict)")
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    model = recorded_model(meta.get("cfg"))
    return sd, (model_types(model) if model is not None else None)


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The model weights of a reseg/mmengine checkpoint (``.pth``, read with ``weights_only=True``) or of
    a ``.safetensors`` file (which holds tensors only by construction)."""
    return read_checkpoint(path)[0]


def load_model_weights(model: torch.nn.Module, path: str, strict: bool = True,
                       model_cfg: Mapping | None = None) -> dict[str, list[str]]:
    """Load ``path`` into ``model``; a checkpoint of another architecture is an error naming the keys.

    ``strict=False`` loads the keys whose names and shapes match and returns the rest
    (``missing``, ``unexpected``, ``resized``) for the caller to report (fine-tuning from a partial
    checkpoint). mmengine's own ``load_from`` loads non-strictly with a warning, which would score a
    half-loaded model; ``tools/test.py`` uses this instead.

    With ``model_cfg`` (the config's ``model``) the result also holds ``model_differences``: the
    registered types (head, backbone, mask source, ...) on which the model the checkpoint records
    differs from it (:func:`model_differences`; empty when the checkpoint records none). Another
    head's checkpoint can fit the keys exactly (READ's and LISA's do), so the caller warns or refuses.
    """
    sd, recorded = read_checkpoint(path)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    resized = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if strict and (missing or unexpected or resized):
        shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in resized[:3]]
        raise ValueError(
            f"checkpoint {path!r} does not fit this model (was it saved from another config or "
            f"architecture?): {len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:3]}, {len(resized)} of another shape {shapes}")
    skip = set(resized)
    model.load_state_dict({k: v for k, v in sd.items() if k in own and k not in skip}, strict=False)
    report = dict(missing=missing, unexpected=unexpected, resized=resized)
    if model_cfg is not None:
        report["model_differences"] = model_differences(recorded or {}, model_types(model_cfg))
    return report


def describe_model_differences(path: str, differences: Sequence[str]) -> str:
    """One message for :func:`load_model_weights`'s ``model_differences``."""
    return (f"checkpoint {path!r} was saved from another model than the config builds: "
            + "; ".join(differences))


def save_model_weights(state_dict_or_model: Any, path: str, types: Mapping[str, str] | None = None) -> str:
    """Write model weights as ``.safetensors`` (tensors only, loadable without any unpickling).

    Shared storage (tied weights) is written once per tensor as a contiguous copy. ``types``
    (:func:`model_types` of the model they come from) is kept in the file's metadata, so
    :func:`load_model_weights` can tell another head's weights.
    """
    if not path.endswith(".safetensors"):
        raise ValueError(f"save_model_weights writes .safetensors files, got {path!r}")
    import json

    from safetensors.torch import save

    sd = state_dict_or_model.state_dict() if isinstance(state_dict_or_model, torch.nn.Module) else state_dict_or_model
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in sd.items()}
    metadata = {"format": "pt", "producer": "reseg"}
    if types:
        metadata[MODEL_TYPES_KEY] = json.dumps(dict(types), sort_keys=True)
    atomic_write_bytes(path, save(flat, metadata=metadata))
    return path
