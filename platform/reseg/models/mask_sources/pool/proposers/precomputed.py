"""The pools of pool files (``tools/make_pools.py``) as a proposer, looked up by ``Sample.meta[key]``."""
from __future__ import annotations

import difflib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reseg.paths import resolve_path
from reseg.registry import PROPOSERS

from .base import BaseProposer
from .pool_file import PoolFileError, decode_pool, key_str, read_pool_header


@PROPOSERS.register_module()
class PrecomputedProposer(BaseProposer):
    """The pools of a pool file (``tools/make_pools.py``), looked up by ``Sample.meta[key]``.

    The file is indexed once (byte offset per image) at construction; each :meth:`propose` reads
    and decodes one line. By default the pools are returned as stored (no filtering, given order):
    they were post-processed when the file was written.

    Args:
        pool_file: the ``.jsonl`` pool file, or a list of them (e.g. one per split: a model has one
            proposer for training and validation); an image may appear in only one of them.
        key: the ``Sample.meta`` field naming images; None = the one the files were written with
            (their headers' ``key``). A different key is an error (the lines are named by the header's).
        min_area, nms_iou, max_candidates, order: :class:`BaseProposer` (defaults: pass-through).
    """

    def __init__(
        self,
        pool_file: str | Sequence[str],
        key: str | None = None,
        min_area: int = 0,
        nms_iou: float | None = None,
        max_candidates: int | None = None,
        order: str = "given",
    ) -> None:
        super().__init__(min_area=min_area, nms_iou=nms_iou, max_candidates=max_candidates, order=order)
        files = [pool_file] if isinstance(pool_file, (str, os.PathLike)) else list(pool_file)
        if not files:
            raise PoolFileError("PrecomputedProposer: pool_file is an empty list; give at least one pool file")
        self.pool_files = [resolve_path(f) for f in files]  # a relative path is under the reseg root
        self.pool_file = self.pool_files[0] if len(self.pool_files) == 1 else self.pool_files
        self.headers = [read_pool_header(f) for f in self.pool_files]
        self.header = self.headers[0]
        self.key = None
        #: key -> (file, byte offset, line number)
        self._offsets: dict[str, tuple[Path, int, int]] = {}
        for path, header in zip(self.pool_files, self.headers):
            file_key = header["key"]
            if key is not None and key != file_key:
                raise PoolFileError(f"{path}: the pool file names images by {file_key!r} (its header's "
                                    f"\"key\"), not {key!r}; drop key= or rewrite the pools with --key {key}")
            if self.key is not None and file_key != self.key:
                raise PoolFileError(f"{path}: names images by {file_key!r} but {self.pool_files[0]} by "
                                    f"{self.key!r}; the pool files of one proposer must use one key")
            self.key = file_key
            self._index(path)

    def _index(self, path: Path) -> None:
        with open(path, "rb") as f:
            f.readline()
            line_no = 1
            while True:
                offset = f.tell()
                raw = f.readline()
                if not raw:
                    break
                line_no += 1
                if not raw.strip():
                    continue
                where = f"{path}, line {line_no}"
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise PoolFileError(f"{where}: not valid JSON ({err.msg}); expected one image's pool") from None
                if not isinstance(rec, dict) or self.key not in rec or "size" not in rec or "masks" not in rec:
                    got = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                    raise PoolFileError(f"{where}: expected {{{self.key!r}, 'size', 'masks', 'scores'}}, got {got}")
                k = key_str(rec[self.key])
                if k in self._offsets:
                    other, _, other_line = self._offsets[k]
                    raise PoolFileError(f"{where}: {self.key} {rec[self.key]!r} also in {other}, line {other_line}")
                self._offsets[k] = (path, offset, line_no)

    def _files_str(self) -> str:
        return ", ".join(str(f) for f in self.pool_files)

    def __len__(self) -> int:
        return len(self._offsets)

    def keys(self) -> list[str]:
        """The key values of the file's images (as strings), in file order."""
        return list(self._offsets)

    def settings(self) -> dict[str, Any]:
        files = [str(f) for f in self.pool_files]
        return dict(pool_file=files[0] if len(files) == 1 else files, key=self.key,
                    source=self.header.get("proposer"))

    def _propose_raw(self, image: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
        if self.key not in meta:
            raise KeyError(f"PrecomputedProposer ({self._files_str()}): the sample's meta has no {self.key!r} to look "
                           f"the pool up by; meta keys: {sorted(meta)}")
        value = meta[self.key]
        k = key_str(value)
        if k not in self._offsets:
            close = difflib.get_close_matches(k, list(self._offsets), n=1)
            hint = f" (closest: {close[0]!r})" if close else ""
            raise KeyError(f"pool file(s) {self._files_str()} have no pool for {self.key} {value!r}{hint}; they hold "
                           f"{len(self._offsets)} images: were they written for another dataset or split?")
        path, offset, line_no = self._offsets[k]
        with open(path, "rb") as f:
            f.seek(offset)
            rec = json.loads(f.readline())
        where = f"{path}, line {line_no}"
        size = [int(v) for v in rec["size"]]
        h, w = image.shape[:2]
        if size != [h, w]:
            raise ValueError(f"{where}: the pool of {self.key} {value!r} is {size[0]}x{size[1]} (height x width) "
                             f"but the image is {h}x{w}; was the pool computed on other (resized) images?")
        masks = decode_pool(rec["masks"], size, where)
        scores = rec.get("scores")
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32)
            if scores.shape != (masks.shape[0],):
                raise PoolFileError(f"{where}: {scores.shape[0]} scores for {masks.shape[0]} masks")
        return masks, scores
