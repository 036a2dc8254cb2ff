"""Pool files: candidate pools computed once per dataset (``tools/make_pools.py``), read back by
:class:`~reseg.models.mask_sources.pool.proposers.precomputed.PrecomputedProposer`.

Format ``reseg-pools`` version 1, JSON lines (``docs/proposers.md``)::

    {"format": "reseg-pools", "version": 1, "key": "image_id", "proposer": {...}, "dataset": {...}, ...}
    {"image_id": 42, "size": [H, W], "masks": [{"size": [H, W], "counts": "..."}, ...], "scores": [0.9, ...]}
    ...

The first line is the header; every following line is one image, named by the value of its
``Sample.meta[key]`` under the field ``key`` (``image_id`` by default), with its pool as compressed
COCO RLE (:mod:`reseg.masks.rle`) in pool order and one score per mask.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from reseg.masks.rle import decode_rle, encode_rles, rle_size

PathLike = Union[str, "os.PathLike[str]"]

#: ``format`` and ``version`` of the pool files this module reads and writes.
POOL_FORMAT = "reseg-pools"
POOL_VERSION = 1


class PoolFileError(ValueError):
    """A pool file is malformed, or does not have what was asked of it."""


def key_str(value: Any) -> str:
    """The index form of a key value: ``42`` and ``"42"`` name the same image."""
    if isinstance(value, (bool, float)) or value is None or isinstance(value, (list, dict)):
        raise PoolFileError(f"a pool key value must be a string or an integer, got {value!r}")
    if isinstance(value, np.integer):
        value = int(value)
    return str(value)


def _json_key(value: Any) -> int | str:
    """A key value as written in the file (ints stay ints)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return value
    raise PoolFileError(f"a pool key value must be a string or an integer, got {value!r} "
                        f"({type(value).__name__}); pick another key (e.g. file_name)")


def decode_pool(rles: Sequence[Mapping[str, Any]], size: Sequence[int], where: str) -> np.ndarray:
    """``[N, H, W] bool`` from one line's COCO RLEs, which must all have the line's ``size``; a
    malformed mask is a :class:`PoolFileError` naming ``where`` and the mask (``masks[k]``)."""
    h, w = int(size[0]), int(size[1])
    masks = np.zeros((len(rles), h, w), dtype=bool)
    for k, rle in enumerate(rles):
        at = f"{where}: masks[{k}]"
        if rle_size(rle, at, PoolFileError) != (h, w):
            raise PoolFileError(f"{at} has size {list(rle['size'])} but the line's size is {[h, w]}")
        masks[k] = decode_rle(rle, at, PoolFileError)
    return masks


def pool_line(key: str, key_value: Any, masks: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
    """One image's line of a pool file: ``{key: value, "size": [H, W], "masks": [RLE], "scores": [...]}``."""
    m = np.asarray(masks, dtype=bool)
    line: dict[str, Any] = {key: _json_key(key_value), "size": [int(m.shape[1]), int(m.shape[2])],
                            "masks": encode_rles(m)}
    if scores is not None:
        line["scores"] = [float(v) for v in np.asarray(scores, dtype=np.float64).reshape(-1)]
    return line


def read_pool_header(path: PathLike) -> dict[str, Any]:
    """The header (first line) of a pool file, checked for ``format``/``version``."""
    from reseg.paths import missing_hint

    p = Path(path)
    if not p.is_file():
        hint = missing_hint(p) or " Write one with tools/make_pools.py (docs/proposers.md)."
        raise FileNotFoundError(f"pool file not found: {str(p)!r}.{hint}")
    with open(p, "rb") as f:
        first = f.readline()
    return _parse_header(first, p)


def _parse_header(line: bytes, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != POOL_FORMAT:
        raise PoolFileError(f"{path}, line 1: not a pool file header (expected a JSON object with "
                            f"\"format\": \"{POOL_FORMAT}\"; files come from tools/make_pools.py)")
    if header.get("version") != POOL_VERSION:
        raise PoolFileError(f"{path}: pool file version {header.get('version')!r}, this reseg reads version "
                            f"{POOL_VERSION}")
    if not isinstance(header.get("key"), str):
        raise PoolFileError(f"{path}, line 1: the header has no \"key\" (the Sample.meta field naming each image)")
    return header


class PoolFileWriter:
    """Write a pool file atomically: lines go to a temporary file, the header comes first at the end.

    Use as a context manager; the file appears at ``path`` only when the block ends without an
    error (temporary file + ``os.replace``), so an interrupted run leaves no half file and never
    touches an existing one. ``header`` may be updated until then (e.g. with the oracle scores).

    Args:
        path: the ``.jsonl`` to write.
        key: the ``Sample.meta`` field naming each image (written as every line's first field).
        header: header fields besides ``format``, ``version`` and ``key``.
        overwrite: replace an existing file; False (default) refuses before anything is computed.
    """

    def __init__(self, path: PathLike, key: str = "image_id", header: Mapping[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"pool file {str(self.path)!r} exists; pass --overwrite (overwrite=True) to "
                                  "replace it")
        self.key = key
        self.overwrite = overwrite
        self.header: dict[str, Any] = dict(header or {})
        self._offsets: dict[str, int] = {}
        self._body: Any | None = None
        self._body_path: str | None = None

    def __enter__(self) -> PoolFileWriter:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, self._body_path = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".body.tmp", dir=folder)
        self._body = os.fdopen(fd, "w+b")
        return self

    def __contains__(self, key_value: Any) -> bool:
        return key_str(key_value) in self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def add(self, key_value: Any, masks: np.ndarray, scores: np.ndarray | None) -> None:
        """Append one image's pool (``[N, H, W] bool`` at its original size, ``[N]`` scores)."""
        k = key_str(key_value)
        if k in self._offsets:
            raise PoolFileError(f"{self.path}: {self.key} {key_value!r} written twice")
        assert self._body is not None, "use PoolFileWriter as a context manager"
        self._body.seek(0, os.SEEK_END)
        self._offsets[k] = self._body.tell()
        line = pool_line(self.key, key_value, masks, scores)
        self._body.write(json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n")

    def get(self, key_value: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """Read back a pool already added (masks, scores)."""
        assert self._body is not None
        off = self._offsets[key_str(key_value)]
        self._body.flush()
        self._body.seek(off)
        line = json.loads(self._body.readline())
        masks = decode_pool(line["masks"], line["size"], f"{self._body_path}")
        scores = line.get("scores")
        return masks, None if scores is None else np.asarray(scores, dtype=np.float32)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._body is not None and self._body_path is not None
        final_tmp = None
        try:
            if exc_type is not None:
                return
            if self.path.exists() and not self.overwrite:  # appeared while we were computing
                raise FileExistsError(f"pool file {str(self.path)!r} appeared while the pool was computed; "
                                      "pass --overwrite to replace it (the new pool was not written)")
            header = {"format": POOL_FORMAT, "version": POOL_VERSION, "key": self.key, **self.header}
            fd, final_tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(header, default=str).encode("utf-8") + b"\n")
                self._body.flush()
                self._body.seek(0)
                while True:
                    chunk = self._body.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(final_tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the pools from other users
            os.replace(final_tmp, self.path)
            final_tmp = None
        finally:
            self._body.close()
            os.unlink(self._body_path)
            if final_tmp is not None and os.path.exists(final_tmp):
                os.unlink(final_tmp)
