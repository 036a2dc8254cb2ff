"""Reading the pieces the dataset loaders share: images, JSON files, COCO masks, labelme masks.

Every function here fails with a message that names the file (and the key) it could not use and
what it expected, so a wrong ``data_root`` is diagnosed from the message alone.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from reseg.masks import rle as rle_codec
from reseg.masks.rle import encode_rle  # noqa: F401  (re-exported: reseg.datasets.encode_rle)

PathLike = Union[str, "os.PathLike[str]"]


class DatasetFormatError(ValueError):
    """A dataset file exists but does not have the layout or fields the loader expects."""


class UnknownSplitError(ValueError):
    """A split name that the dataset on disk does not have (the message lists the valid ones)."""


def require_file(path: PathLike, what: str) -> Path:
    """Return ``path`` as a :class:`Path`, or raise ``FileNotFoundError`` saying what it should hold."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p} (expected a file at this path)")
    return p


def require_dir(path: PathLike, what: str) -> Path:
    """``path`` (from a config: a relative path is under the reseg root, :mod:`reseg.paths`) as an
    absolute :class:`Path`, or a ``FileNotFoundError`` saying what it should hold and, for the
    synthetic benchmark, which ``make`` target writes it."""
    from reseg.paths import missing_hint, resolve_path

    p = resolve_path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} not found: {p} (expected a directory at this path).{missing_hint(path)}")
    return p


def require_key(record: Mapping[str, Any], key: str, where: str, expected: str = "") -> Any:
    """``record[key]``, or a :class:`DatasetFormatError` naming ``where`` and the missing key."""
    if not isinstance(record, Mapping):
        raise DatasetFormatError(f"{where}: expected a dict, got {type(record).__name__}")
    if key not in record:
        hint = f" ({expected})" if expected else ""
        raise DatasetFormatError(
            f"{where}: missing key {key!r}{hint}; keys present: {sorted(map(str, record))}"
        )
    return record[key]


#: Largest image (pixels) a loader decodes; ``RESEG_MAX_IMAGE_PIXELS`` overrides it. The default is
#: Pillow's decompression-bomb error threshold (2 x 89.5 MP): a larger file is almost surely a mistake
#: or an attack, and its masks at full size would not fit a training step anyway.
MAX_IMAGE_PIXELS = 178_956_970

#: (magic bytes that start a file of the format, bytes that end a complete one): JPEG's SOI and EOI
#: markers, PNG's signature and IEND chunk. The format is read from the bytes, not the file name.
_FORMAT_MARKERS = {"JPEG": (b"\xff\xd8\xff", b"\xff\xd9"), "PNG": (b"\x89PNG\r\n\x1a\n", b"IEND")}


def max_image_pixels() -> int:
    return int(os.environ.get("RESEG_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS))


def composite_on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB laid over a white background by its ``[H, W]`` alpha (0-255, or 0-65535
    for 16-bit): a transparent background becomes white, not the black its hidden pixels usually hold."""
    a = alpha.astype(np.float32) / (65535.0 if alpha.dtype == np.uint16 else 255.0)
    out = rgb.astype(np.float32) * a[..., None] + 255.0 * (1.0 - a[..., None])
    return np.ascontiguousarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def pil_to_rgb(img: Any) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB of a PIL image; an image with transparency is composited on white
    (:func:`composite_on_white`)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA"))
        return composite_on_white(rgba[..., :3], rgba[..., 3])
    return np.array(img.convert("RGB"), dtype=np.uint8)


def read_image_rgb(path: PathLike, alpha: str = "drop") -> np.ndarray:
    """Read an image file as ``[H, W, 3] uint8`` RGB at its original size.

    OpenCV reads it and BGR is converted to RGB, as LISA does (spec seg_token_family.md §1.5): the
    EXIF orientation is applied, grayscale is repeated to 3 channels, an alpha channel is dropped
    (``alpha="drop"``, the datasets' reading, as LISA's) or the image is composited on white
    (``alpha="white"``, inference: a transparent background is white, not black) and 16-bit images
    are scaled to 8 bits. Errors name the file:

    * missing: ``FileNotFoundError``;
    * not an image, or a JPEG/PNG that ends before its end marker (OpenCV would decode a truncated
      file with a grey tail and only a warning on stderr): :class:`DatasetFormatError`;
    * more than :func:`max_image_pixels` pixels (read from the header, before decoding):
      :class:`DatasetFormatError`.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image not found: {p}")
    with open(p, "rb") as f:
        head = f.read(8)
        f.seek(max(0, p.stat().st_size - 64))
        tail = f.read()
    for fmt, (start, end) in _FORMAT_MARKERS.items():
        if head.startswith(start) and end not in tail:
            raise DatasetFormatError(f"image file is truncated (a {fmt} without its end marker): {p}")
    try:
        from PIL import Image

        with Image.open(p) as im:  # reads the header only
            w, h = im.size
    except Exception:  # not an image Pillow knows: OpenCV decides below
        w = h = 0
    if w * h > max_image_pixels():
        raise DatasetFormatError(
            f"image is {w}x{h} = {w * h} pixels, more than the limit of {max_image_pixels()}: {p} "
            "(set RESEG_MAX_IMAGE_PIXELS to allow it)")
    bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise DatasetFormatError(f"image could not be decoded (corrupt or not an image): {p}")
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if alpha == "white":
        rgb = _on_white(p, rgb)
    elif alpha != "drop":
        raise ValueError(f"alpha={alpha!r}: expected 'drop' or 'white'")
    return rgb


def _on_white(p: Path, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (OpenCV's reading of ``p``) composited on white by the file's alpha, if it has one."""
    from PIL import Image, ImageOps

    try:
        with Image.open(p) as im:
            if not (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info):
                return rgb
            alpha = np.asarray(ImageOps.exif_transpose(im).convert("RGBA"))[..., 3]  # upright, as OpenCV read it
    except Exception:  # a format only OpenCV reads: no alpha from Pillow
        return rgb
    if alpha.shape != rgb.shape[:2] or alpha.min() == 255:
        return rgb
    return composite_on_white(rgb, alpha)


def read_json(path: PathLike) -> Any:
    """Load a JSON file, decoding UTF-8 first and cp1252 if that fails (spec §5.1, ReasonSeg)."""
    p = require_file(path, "JSON file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = raw.decode("cp1252")
        except UnicodeDecodeError as err:
            raise DatasetFormatError(f"{p}: neither UTF-8 nor cp1252 text ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetFormatError(f"{p}: invalid JSON ({err})") from None


# -- COCO / REFER masks ----------------------------------------------------------------------------


def coco_segmentation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one COCO ``segmentation`` (polygons or RLE) to an ``[H, W] bool`` mask.

    * polygons (``[[x1, y1, x2, y2, ...], ...]``): each decoded with pycocotools, then OR-ed (the union;
      LISA sums them, spec seg_token_family.md §1.7). Polygons with fewer than 3 points are dropped
      (ReLA/GSVA, spec §5.3). Parts outside the image are clipped away first (:func:`clip_polygon`):
      pycocotools walks every edge pixel by pixel, so a vertex at 1e9 would take minutes and
      gigabytes. The clipped polygon covers the same area inside the image; pycocotools' rounding
      along a cut edge can differ by a few pixels. A non-finite coordinate is an error (it
      exhausted memory).
    * RLE dict with ``counts`` as a list (uncompressed) or a string (compressed); its ``size`` must be
      ``[height, width]`` of the image.
    """
    with warnings.catch_warnings():
        # pycocotools 2.0.x + numpy 2 warn about the ``copy`` keyword inside pycocotools itself
        warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
        return _coco_segmentation_to_mask(segmentation, int(height), int(width))


def _coco_segmentation_to_mask(segmentation: Any, h: int, w: int) -> np.ndarray:
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise DatasetFormatError(
                f"RLE segmentation needs keys 'counts' and 'size', got {sorted(segmentation)}"
            )
        size = segmentation["size"]
        size = [int(v) for v in size] if isinstance(size, (list, tuple)) else size
        if size != [h, w]:
            raise DatasetFormatError(
                f"RLE segmentation has size {segmentation['size']} (height, width) but the image is {h}x{w}")
        return decode_rle(segmentation, "RLE segmentation")
    if not isinstance(segmentation, (list, tuple)):
        raise DatasetFormatError(
            f"segmentation must be a list of polygons or an RLE dict, got {type(segmentation).__name__}"
        )
    from pycocotools import mask as mask_utils

    polys = []
    for k, p in enumerate(segmentation):
        try:
            xy = np.asarray(p, dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"polygon {k} is not a flat list of numbers: {str(p)[:80]}") from None
        if xy.ndim != 1 or xy.size % 2:
            raise DatasetFormatError(f"polygon {k} must be a flat [x1, y1, x2, y2, ...] list, got shape {xy.shape}")
        if not np.isfinite(xy).all():
            raise DatasetFormatError(f"polygon {k} has a non-finite coordinate (NaN or inf): {str(p)[:80]}")
        if xy.size >= 6:
            clipped = clip_polygon(xy.reshape(-1, 2), w, h)
            if len(clipped) >= 3:
                polys.append(clipped.reshape(-1).tolist())
    if not polys:
        return np.zeros((h, w), dtype=bool)
    rles = mask_utils.frPyObjects(polys, h, w)
    m = mask_utils.decode(rles)  # [H, W, P] uint8
    return m.any(axis=2)


def clip_polygon(points: np.ndarray, width: int, height: int, margin: float = 1.0) -> np.ndarray:
    """Clip a polygon (``[n, 2]`` x, y) to ``[-margin, width + margin] x [-margin, height + margin]``.

    Sutherland-Hodgman against the four sides: the part of the polygon inside the box is kept
    exactly, and no vertex lies far outside. Rasterised by pycocotools, which walks each edge from
    its end vertices, a cut edge can round differently by a pixel here and there (a few pixels per
    mask). Returns ``[m, 2]`` (``m`` may be < 3 when nothing is inside).
    """
    pts = np.asarray(points, dtype=np.float64)
    lo_x, hi_x, lo_y, hi_y = -margin, width + margin, -margin, height + margin
    if len(pts) and pts[:, 0].min() >= lo_x and pts[:, 0].max() <= hi_x and pts[:, 1].min() >= lo_y \
            and pts[:, 1].max() <= hi_y:
        return pts
    for axis, bound, keep_below in ((0, lo_x, False), (0, hi_x, True), (1, lo_y, False), (1, hi_y, True)):
        if not len(pts):
            break
        out = []
        for a, b in zip(pts, np.roll(pts, -1, axis=0)):
            a_in = a[axis] <= bound if keep_below else a[axis] >= bound
            b_in = b[axis] <= bound if keep_below else b[axis] >= bound
            if a_in:
                out.append(a)
            if a_in != b_in:  # the edge crosses the boundary: add the crossing point
                t = (bound - a[axis]) / (b[axis] - a[axis])
                out.append(a + t * (b - a))
        pts = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return pts


# -- labelme / ReasonSeg masks ---------------------------------------------------------------------

#: Pixel values of a rasterised ReasonSeg mask (spec seg_token_family.md §5.1).
REASONSEG_BACKGROUND, REASONSEG_TARGET, REASONSEG_IGNORE = 0, 1, 255


def labelme_shapes_to_mask(shapes: Sequence[Mapping[str, Any]], height: int, width: int) -> np.ndarray:
    """Rasterise labelme ``shapes`` exactly as LISA does (spec seg_token_family.md §5.1).

    1. skip shapes whose label is "flag" (case-insensitive);
    2. sort the polygons by filled pixel area, descending (stable for ties);
    3. draw each with ``cv2.polylines`` (thickness 1) and ``cv2.fillPoly`` on int32 coordinates, so
       smaller polygons overwrite larger ones;
    4. value 255 if the label contains "ignore", else 1.

    Returns:
        ``[H, W] uint8`` in {0, 1, 255}.
    """
    h, w = int(height), int(width)
    polys: list[tuple[int, np.ndarray, int]] = []
    for shape in shapes:
        label = str(shape.get("label", ""))
        if label.lower() == "flag":
            continue
        pts = np.asarray(shape.get("points", []), dtype=np.float64)
        if pts.size == 0:
            continue
        pts = pts.reshape(-1, 2).astype(np.int32)
        value = REASONSEG_IGNORE if "ignore" in label.lower() else REASONSEG_TARGET
        tmp = np.zeros((h, w), dtype=np.uint8)
        cv2.polylines(tmp, [pts], True, 1, 1)
        cv2.fillPoly(tmp, [pts], 1)
        polys.append((int(tmp.sum()), pts, value))
    polys.sort(key=lambda t: -t[0])
    mask = np.zeros((h, w), dtype=np.uint8)
    for _, pts, value in polys:
        cv2.polylines(mask, [pts], True, value, 1)
        cv2.fillPoly(mask, [pts], value)
    return mask


def stack_masks(masks: Iterable[np.ndarray], height: int, width: int) -> np.ndarray:
    """Stack ``[H, W]`` masks into ``[n, H, W] bool`` (``[0, H, W]`` when there are none)."""
    ms = [np.asarray(m, dtype=bool) for m in masks]
    if not ms:
        return np.zeros((0, int(height), int(width)), dtype=bool)
    return np.stack(ms, axis=0)


def resolve_under(root: Path, path: PathLike) -> Path:
    """Resolve a configured path: absolute as given; relative first under ``root``, then under the
    reseg root (:func:`reseg.paths.resolve_path`).

    The second form lets configs write ``image_dir=data_root + '/images/...'`` (the same path as
    ``data_root`` is) as well as ``image_dir='images/...'`` (relative to ``data_root``).
    """
    from reseg.paths import resolve_path

    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    under = root / p
    if under.exists() or not resolve_path(p).exists():
        return under
    return resolve_path(p)


# -- COCO RLE (MaskGroups-HQ pools, own-data objects): reseg.masks.rle with this module's errors ------


def rle_size(rle: Any, where: str) -> tuple[int, int]:
    """``(h, w)`` of a COCO RLE dict, checked; a :class:`DatasetFormatError` naming ``where`` otherwise."""
    return rle_codec.rle_size(rle, where, DatasetFormatError)


def decode_rle(rle: Any, where: str) -> np.ndarray:
    """Decode one COCO RLE dict to an ``[h, w] bool`` mask at its own ``size``
    (:func:`reseg.masks.rle.decode_rle`); a malformed RLE is a :class:`DatasetFormatError` naming ``where``."""
    return rle_codec.decode_rle(rle, where, DatasetFormatError)
