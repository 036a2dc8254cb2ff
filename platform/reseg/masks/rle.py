"""COCO run-length encoding (RLE) of binary masks: the one codec behind every reseg file that stores masks.

An ``[H, W]`` mask is read column by column (COCO's Fortran order) as alternating runs of background
and foreground, starting with background (a first run of 0 when pixel (0, 0) is set), and stored as
``{"size": [H, W], "counts": ...}``. ``counts`` is COCO's compressed string (what reseg writes,
encoded by pycocotools) or a plain list of run lengths (COCO's "uncompressed" RLE, which annotation
files may hold). Where reseg uses it:

* pool files (``tools/make_pools.py``): each line's ``masks``;
* prediction dumps (``tools/test.py --dump-predictions``): ``mask_rle`` and ``first_mask_rle``;
* MaskGroups json (``mask_pool``, ``gt_mask_pool``, ``ref_mask``), COCO / REFER ``segmentation``,
  the ``rle`` of an own-data object;
* the web demo's answers (``mask_rle``).

Decoding checks the RLE first: its ``size``, the characters of a compressed string, and that the
runs are non-negative and cover exactly ``H * W`` pixels (pycocotools checks none of this and fills
the rest of the mask from uninitialised memory). Errors name ``where`` (a file, line or key the
caller passes) and are raised as the caller's ``error`` type, so a dataset loader reports a
``DatasetFormatError`` and a pool file a ``PoolFileError`` with the same text.
"""
from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

#: Characters of a compressed run hold 5 value bits each, so this many cover any 64-bit run.
_MAX_RUN_CHARS = 12


@contextmanager
def _quiet_pycocotools() -> Iterator[None]:
    """pycocotools 2.0.x passes numpy 2 a ``copy`` keyword it deprecates; the warning is not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
        yield


# -- encoding ----------------------------------------------------------------------------------------

def encode_rles(masks: Any) -> list[dict[str, Any]]:
    """The compressed COCO RLE of each mask of ``[N, H, W]`` (any dtype: nonzero is foreground).

    Returns:
        ``N`` JSON-ready dicts ``{"size": [H, W], "counts": str}`` (``[]`` when ``N == 0``).
    """
    m = np.asarray(masks, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"encode_rles expects [N, H, W] masks, got shape {m.shape}")
    if m.shape[0] == 0:
        return []
    from pycocotools import mask as mask_utils

    # pycocotools reads an [H, W, N] uint8 array in Fortran order: masks column by column.
    fortran = np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8))
    with _quiet_pycocotools():
        encoded = mask_utils.encode(fortran)
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
            for r in encoded]


def encode_rle(mask: Any) -> dict[str, Any]:
    """``{"size": [H, W], "counts": str}``: the compressed COCO RLE of an ``[H, W]`` mask (JSON-ready).

    Any dtype and memory layout (a view, C or Fortran order); nonzero pixels are foreground.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"encode_rle expects an [H, W] mask, got shape {m.shape}")
    return encode_rles(m[None])[0]


# -- decoding ----------------------------------------------------------------------------------------

def _is_count(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def rle_size(rle: Any, where: str, error: type[Exception] = ValueError) -> tuple[int, int]:
    """``(H, W)`` of a COCO RLE dict, checked; ``error`` naming ``where`` when it is not one."""
    if not isinstance(rle, Mapping):
        raise error(f"{where}: expected a COCO RLE dict {{size, counts}}, got {type(rle).__name__}")
    for key, expected in (("size", "[height, width]"), ("counts", "an RLE string or a list of run lengths")):
        if key not in rle:
            raise error(f"{where}: missing key {key!r} ({expected}); keys present: {sorted(map(str, rle))}")
    size = rle["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or not all(_is_count(v) and v > 0 for v in size):
        raise error(f"{where}: RLE 'size' must be [height, width] (positive ints), got {size!r}")
    return int(size[0]), int(size[1])


def _string_runs(counts: str) -> np.ndarray:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, re-derived).

    Each run is a little-endian base-32 number in characters offset by 48: 5 value bits per
    character, bit 0x20 = "more characters follow", bit 0x10 of the run's last character = the sign.
    From the fourth run on, the stored number is the difference to the run two places earlier.
    """
    if not counts:
        return np.zeros(0, dtype=np.int64)
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError("a non-ASCII character in the RLE string") from None
    c = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    outside = (c < 0) | (c >= 64)
    if outside.any():
        raise ValueError(f"character {counts[int(np.argmax(outside))]!r} outside the RLE alphabet")
    ends = np.flatnonzero((c & 0x20) == 0)  # the last character of each run
    if not len(ends) or ends[-1] != len(c) - 1:
        raise ValueError("truncated run (the string ends inside a run)")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_RUN_CHARS:
        raise ValueError(f"a run of {int(lengths.max())} characters (at most {_MAX_RUN_CHARS} fit 64 bits)")
    position = np.arange(len(c)) - np.repeat(starts, lengths)  # of each character within its run
    x = np.add.reduceat((c & 0x1F) << (5 * position), starts)
    x = np.where((c[ends] & 0x10) != 0, x - (np.int64(1) << (5 * lengths)), x)  # two's complement sign
    runs = x.copy()
    if len(x) > 3:  # runs 3, 5, ... and 4, 6, ... are stored as deltas along their chain
        runs[3::2] = x[1] + np.cumsum(x[3::2])
        runs[4::2] = x[2] + np.cumsum(x[4::2])
    return runs


def rle_runs(counts: Any) -> np.ndarray:
    """``[R] int64`` run lengths of ``counts``: a compressed string (or ASCII bytes) or a list of ints.

    Raises ``ValueError`` for a string that is not a compressed RLE or a list that is not numbers.
    The runs are not checked against a size here (:func:`decode_rle` does).
    """
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("a non-ASCII byte in the RLE string") from None
    if isinstance(counts, str):
        return _string_runs(counts)
    if isinstance(counts, (list, tuple)):
        try:
            return np.asarray([int(v) for v in counts], dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"a list of counts must hold integers, got {str(list(counts))[:60]}") from None
    raise ValueError(f"'counts' must be a string or a list, got {type(counts).__name__}")


def decode_rle(rle: Any, where: str, error: type[Exception] = ValueError) -> np.ndarray:
    """Decode one COCO RLE dict to an ``[H, W] bool`` mask (C order) at its own ``size``.

    ``counts`` may be a compressed string (or bytes) or a list of run lengths. The runs must be
    non-negative and add up to ``H * W``; a malformed RLE raises ``error`` naming ``where``.
    """
    h, w = rle_size(rle, where, error)
    counts = rle["counts"]
    try:
        runs = rle_runs(counts)
    except ValueError as err:
        raise error(f"{where}: malformed RLE counts ({err})") from None
    negative = bool((runs < 0).any())
    if negative or int(runs.sum()) != h * w:
        raise error(f"{where}: RLE runs add up to {int(runs.sum())} pixels (negative runs: {negative}), "
                    f"but 'size' {[h, w]} has {h * w}")
    from pycocotools import mask as mask_utils

    if isinstance(counts, (list, tuple)):
        coco = mask_utils.frPyObjects({"size": [h, w], "counts": [int(v) for v in runs]}, h, w)
    else:
        coco = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with _quiet_pycocotools():
        mask = mask_utils.decode(coco)
    return np.ascontiguousarray(mask, dtype=bool)
