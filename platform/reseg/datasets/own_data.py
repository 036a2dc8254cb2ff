"""Your own data: a simple JSON-lines file converted to the gRefCOCO layout :class:`GRefCOCODataset` reads.

One line per image (``docs/own_data.md`` is the user's guide)::

    {"image": "imgs/kitchen.jpg",
     "objects": [{"id": 1, "polygon": [[10, 20], [60, 20], [60, 90]], "category": "mug"},
                 {"id": 2, "rle": {"size": [480, 640], "counts": "..."}},
                 {"id": 3, "mask": "masks/kitchen_3.png"}],
     "queries": [{"text": "the red mug", "objects": [1]},
                 {"text": ["what would keep coffee hot?", "what holds a hot drink?"], "objects": [1, 2],
                  "is_sentence": true},
                 {"text": "the giraffe", "objects": []}],
     "split": "train"}

* ``image`` (required): the image file, relative to the image root (default: the JSONL file's folder)
  or absolute inside it. Each image is on one line only.
* ``objects`` (optional, default ``[]``): the annotated instances. ``id``: an int or a string, unique
  within the line. Exactly one of

  - ``polygon``: one part as points ``[[x, y], ...]``, or one or more parts as COCO flat lists
    ``[[x1, y1, x2, y2, ...], ...]`` or as point lists ``[[[x, y], ...], ...]``; pixel coordinates
    (x to the right, y down) of the image as the loaders read it (EXIF orientation applied); each
    part has at least 3 points;
  - ``rle``: a COCO RLE ``{"size": [height, width], "counts": str | list}`` of the image's size;
  - ``mask``: a mask image file (resolved like ``image``) of the image's size; non-zero = object.

  ``category`` (optional, default ``"object"``): a class name (COCO ``categories``).
* ``queries`` (required, at least one): ``text`` (a string, or a list of phrasings of the same
  question), ``objects`` (required: the ids of its targets; ``[]`` = no target, 2+ = several
  targets), ``is_sentence`` (optional, default false: a long / reasoning question, which LISA-family
  heads ask with their long-query template).
* ``split`` (optional): any name (``train``, ``val``, ``test``, ...). Lines without one are split
  into ``train`` / ``val`` by :func:`assign_splits` (``val_fraction``, ``seed``).

Why gRefCOCO (spec seg_token_family.md §5.3): its refs list *several* annotation ids, or ``[-1]`` for
none, so one query may have one, several or no target, which REFER (one target per ref) and ReasonSeg
(one target set per image file) cannot express. Output, under ``out``::

    <out>/refer_seg/<dataset>/instances.json     COCO images (file_name relative to the image root),
                                                 annotations (polygons or compressed RLE), categories
    <out>/refer_seg/<dataset>/grefs(unc).json    one ref per query; sentences carry ``is_sentence``
    <out>/refer_seg/<dataset>/conversion.json    what was converted, how, and the counts per split
    <out>/refer_seg/images/<dataset>             a link to the image root (default), or a copy of the
                                                 images (``copy_images=True``), or the image root itself

Every problem in the input is reported with the file, the line, the field and what was expected
(:class:`OwnDataError`); nothing is written unless the whole file is valid, and existing output is only
replaced with ``overwrite=True``.
"""
from __future__ import annotations

import math
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reseg.datasets.io import (
    DatasetFormatError,
    PathLike,
    coco_segmentation_to_mask,
    decode_rle,
    encode_rle,
    read_image_rgb,
)
from reseg.datasets.synthref.writers import ReferWriter, dumps_json
from reseg.fileio import iter_json_objects

#: The dataset (folder) name the converter writes and ``configs/lisa/lisa_tiny_own-data.py`` reads.
DEFAULT_DATASET = "own_data"
#: The refs file variant: ``grefs(unc).json`` as gRefCOCO ships it.
SPLIT_BY = "unc"
#: Category of an object without a ``category``.
DEFAULT_CATEGORY = "object"
#: Split names given to lines without a ``split``.
TRAIN_SPLIT, VAL_SPLIT = "train", "val"
#: The summary written next to the annotations.
CONVERSION_FILE = "conversion.json"
#: Marks an image folder that the converter filled with copies (and may therefore delete on overwrite).
COPY_MARKER = ".copied_by_convert_own_data"
#: How many problems one error message lists.
MAX_LISTED_ERRORS = 20

LINE_KEYS = ("image", "objects", "queries", "split")
OBJECT_KEYS = ("id", "polygon", "rle", "mask", "category")
SHAPE_KEYS = ("polygon", "rle", "mask")
QUERY_KEYS = ("text", "objects", "is_sentence")

ObjectId = int | str


class OwnDataError(DatasetFormatError):
    """The own-data JSONL (or an image or mask file it names) is not what the converter expects."""


@dataclass
class OwnObject:
    """One annotated instance, validated: its COCO ``segmentation`` and what is derived from its mask."""

    id: ObjectId
    segmentation: Any  # COCO polygons (flat lists) or a compressed RLE dict
    category: str
    area: int
    bbox: list[float]  # COCO [x, y, width, height]


@dataclass
class OwnQuery:
    """One query, validated: its phrasings, the ids of its targets (may be empty) and its flag."""

    texts: list[str]
    objects: list[ObjectId]
    is_sentence: bool


@dataclass
class OwnImage:
    """One JSONL line, validated.

    Attributes:
        line: the line number in the JSONL file (1-based).
        path: the image file (absolute).
        file_name: its path relative to the image root (POSIX separators): COCO ``file_name``.
        height, width: the size the loaders see (EXIF orientation applied).
        split: the line's ``split``, or None until :func:`assign_splits` gives it one.
    """

    line: int
    path: Path
    file_name: str
    height: int
    width: int
    split: str | None
    objects: list[OwnObject] = field(default_factory=list)
    queries: list[OwnQuery] = field(default_factory=list)


# -- reading and validating ------------------------------------------------------------------------


def _fail(where: str, field_name: str | None, problem: str, expected: str = "") -> OwnDataError:
    """``<file>, line <n>: field '<field>': <problem>; expected <what>`` (no field: the line itself)."""
    tail = f"; expected {expected}" if expected else ""
    head = f"field '{field_name}': " if field_name else ""
    return OwnDataError(f"{where}: {head}{problem}{tail}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_keys(record: Any, allowed: tuple[str, ...], where: str, field_name: str | None, what: str) -> dict:
    if not isinstance(record, dict):
        raise _fail(where, field_name, f"got {type(record).__name__}", f"a JSON object ({what})")
    unknown = sorted(set(record) - set(allowed))
    if unknown:
        raise _fail(where, field_name, f"unknown key(s) {unknown}", f"only {list(allowed)} ({what})")
    return record


def _resolve_file(value: Any, root: Path, where: str, field_name: str, what: str) -> tuple[Path, str]:
    """``(absolute path, path relative to root)`` of a file named in the JSONL; it must lie under root."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, field_name, f"got {value!r}", f"a non-empty path of {what}")
    path = Path(os.path.abspath(root / value))  # normalises '..' without following links
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise _fail(where, field_name, f"{value!r} is outside the image root {root}",
                    "a path under the image root (set --image-root to a folder holding every image)") from None
    if not path.is_file():
        raise _fail(where, field_name, f"{what} not found: {path}",
                    f"an existing file (relative paths are relative to the image root {root})")
    return path, rel.as_posix()


def _polygon_parts(value: Any, where: str, field_name: str) -> list[list[float]]:
    """The parts of a ``polygon`` field as COCO flat lists ``[x1, y1, x2, y2, ...]`` (validated)."""
    expected = ("[[x, y], ...] (one part), [[x1, y1, x2, y2, ...], ...] or [[[x, y], ...], ...] "
                "(one or more parts), at least 3 points per part")
    if not isinstance(value, list) or not value or not all(isinstance(p, list) for p in value):
        raise _fail(where, field_name, f"got {str(value)[:80]}", expected)
    if all(len(p) == 2 and all(_is_number(v) for v in p) for p in value):
        parts = [[float(v) for point in value for v in point]]  # one part of [x, y] points
    elif all(p and all(isinstance(q, list) for q in p) for p in value):
        parts = []
        for k, p in enumerate(value):
            if not all(len(q) == 2 and all(_is_number(v) for v in q) for q in p):
                raise _fail(where, f"{field_name}[{k}]", f"got {str(p)[:80]}", "a list of [x, y] points")
            parts.append([float(v) for q in p for v in q])
    else:
        parts = []
        for k, p in enumerate(value):
            if not all(_is_number(v) for v in p) or len(p) % 2:
                raise _fail(where, f"{field_name}[{k}]", f"got {str(p)[:80]}",
                            "a flat list [x1, y1, x2, y2, ...] of an even number of numbers")
            parts.append([float(v) for v in p])
    for k, p in enumerate(parts):
        if len(p) < 6:
            raise _fail(where, f"{field_name}[{k}]" if len(parts) > 1 else field_name,
                        f"a polygon part with {len(p) // 2} point(s)", "at least 3 points")
        if not all(math.isfinite(v) for v in p):
            raise _fail(where, field_name, "a coordinate is NaN or infinite", "finite pixel coordinates")
    return parts


def _mask_from_file(path: Path, where: str, field_name: str) -> np.ndarray:
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        raise _fail(where, field_name, f"could not decode {path}", "a mask image (PNG), non-zero = object")
    return (raw != 0).any(axis=2) if raw.ndim == 3 else raw != 0


def _parse_object(obj: Any, k: int, img: OwnImage, root: Path, where: str) -> OwnObject:
    name = f"objects[{k}]"
    _check_keys(obj, OBJECT_KEYS, where, name, "an object: id, one of polygon / rle / mask, category")
    if "id" not in obj:
        raise _fail(where, name, "missing 'id'", "an int or string id, unique within the line")
    oid = obj["id"]
    if isinstance(oid, bool) or not isinstance(oid, (int, str)) or oid == "":
        raise _fail(where, f"{name}.id", f"got {oid!r}", "an int or a non-empty string")
    shapes = [key for key in SHAPE_KEYS if key in obj]
    if len(shapes) != 1:
        raise _fail(where, name, f"has {shapes or 'none'} of {list(SHAPE_KEYS)}", "exactly one of them")
    shape = shapes[0]
    h, w = img.height, img.width
    fname = f"{name}.{shape}"
    if shape == "polygon":
        segmentation: Any = _polygon_parts(obj["polygon"], where, fname)
        try:
            mask = coco_segmentation_to_mask(segmentation, h, w)
        except DatasetFormatError as err:
            raise _fail(where, fname, str(err)) from None
    elif shape == "rle":
        rle = obj["rle"]
        try:
            mask = decode_rle(rle, fname)
        except DatasetFormatError as err:
            raise _fail(where, fname, str(err).removeprefix(f"{fname}: "),
                        'a COCO RLE {"size": [height, width], "counts": str or list}') from None
        if mask.shape != (h, w):
            raise _fail(where, f"{fname}.size", f"{list(mask.shape)} but the image {img.path} is {h}x{w} "
                        "(height x width)", f"[{h}, {w}]")
        segmentation = encode_rle(mask)
    else:
        path, _ = _resolve_file(obj["mask"], root, where, fname, "the mask image")
        mask = _mask_from_file(path, where, fname)
        if mask.shape != (h, w):
            raise _fail(where, fname, f"{path} is {mask.shape[0]}x{mask.shape[1]} but the image {img.path} is "
                        f"{h}x{w} (height x width)", "a mask of the image's size")
        segmentation = encode_rle(mask)
    if not mask.any():
        raise _fail(where, fname, f"the mask covers no pixel of the {w}x{h} (width x height) image",
                    "a non-empty object (pixel coordinates: x to the right, y down)")
    category = obj.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category.strip():
        raise _fail(where, f"{name}.category", f"got {category!r}", "a non-empty class name")
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]
    return OwnObject(id=oid, segmentation=segmentation, category=category.strip(), area=int(mask.sum()), bbox=bbox)


def _parse_query(q: Any, k: int, ids: set, where: str) -> OwnQuery:
    name = f"queries[{k}]"
    _check_keys(q, QUERY_KEYS, where, name, "a query: text, objects, is_sentence")
    if "text" not in q:
        raise _fail(where, name, "missing 'text'", "the question: a string or a list of phrasings")
    texts = q["text"] if isinstance(q["text"], list) else [q["text"]]
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise _fail(where, f"{name}.text", f"got {q['text']!r}", "a non-empty string or a non-empty list of them")
    if "objects" not in q:
        raise _fail(where, name, "missing 'objects'", "the ids of its targets ([] for a query without target)")
    targets = q["objects"]
    if not isinstance(targets, list):
        raise _fail(where, f"{name}.objects", f"got {targets!r}", "a list of object ids ([] = no target)")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, str)) or t not in ids:
            raise _fail(where, f"{name}.objects", f"unknown object id {t!r}",
                        f"ids of this line's objects: {sorted(ids, key=str)}")
    if len(set(targets)) != len(targets):
        raise _fail(where, f"{name}.objects", f"an id is listed twice: {targets}", "distinct ids")
    is_sentence = q.get("is_sentence", False)
    if not isinstance(is_sentence, bool):
        raise _fail(where, f"{name}.is_sentence", f"got {is_sentence!r}", "true or false")
    return OwnQuery(texts=[t.strip() for t in texts], objects=list(targets), is_sentence=is_sentence)


def _parse_line(record: dict, n: int, where: str, root: Path) -> OwnImage:
    _check_keys(record, LINE_KEYS, where, None, "a line: image, objects, queries, split")
    if "image" not in record:
        raise _fail(where, "image", "missing", "the image file's path")
    path, file_name = _resolve_file(record["image"], root, where, "image", "the image file")
    split = record.get("split")
    if split is not None and (not isinstance(split, str) or not split
                              or any(c.isspace() or c == "|" for c in split)):
        raise _fail(where, "split", f"got {split!r}", "a split name without spaces or '|' (train, val, test, ...)")
    try:
        h, w = read_image_rgb(path).shape[:2]  # exactly what the loader will read (EXIF applied)
    except (DatasetFormatError, OSError) as err:
        raise _fail(where, "image", str(err), "a readable JPEG / PNG image") from None
    img = OwnImage(line=n, path=path, file_name=file_name, height=int(h), width=int(w), split=split)
    objects = record.get("objects", [])
    if not isinstance(objects, list):
        raise _fail(where, "objects", f"got {type(objects).__name__}", "a list of objects")
    seen: dict[Any, int] = {}
    for k, obj in enumerate(objects):
        o = _parse_object(obj, k, img, root, where)
        if o.id in seen:
            raise _fail(where, f"objects[{k}].id", f"duplicate id {o.id!r} (also objects[{seen[o.id]}])",
                        "ids unique within the line")
        seen[o.id] = k
        img.objects.append(o)
    queries = record.get("queries")
    if not isinstance(queries, list) or not queries:
        raise _fail(where, "queries", "missing or empty" if not queries else f"got {type(queries).__name__}",
                    "a non-empty list of queries")
    img.queries = [_parse_query(q, k, set(seen), where) for k, q in enumerate(queries)]
    return img


def read_own_data(jsonl: PathLike, image_root: PathLike | None = None) -> list[OwnImage]:
    """Read and validate an own-data JSONL file (schema in the module docstring).

    Args:
        jsonl: the file, one JSON object per line (blank lines are skipped).
        image_root: the folder ``image`` and ``mask`` paths are relative to (default: the JSONL's folder).

    Returns:
        One :class:`OwnImage` per line, in file order (every image is decoded once to learn its size).

    Raises:
        FileNotFoundError: ``jsonl`` or ``image_root`` does not exist.
        OwnDataError: listing every invalid line (up to :data:`MAX_LISTED_ERRORS`), each as
            ``<file>, line <n>: field '<field>': <problem>; expected <what>``.
    """
    src = Path(jsonl)
    if not src.is_file():
        raise FileNotFoundError(f"own-data JSONL not found: {src}")
    root = Path(os.path.abspath(image_root if image_root is not None else src.parent))
    if not root.is_dir():
        raise FileNotFoundError(f"image root not found: {root} (expected a directory: --image-root)")
    images: list[OwnImage] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    try:
        for n, where, record in iter_json_objects(src, "one image: {image, objects, queries, split}", OwnDataError):
            try:
                img = _parse_line(record, n, where, root)
            except OwnDataError as err:
                errors.append(str(err))
                continue
            if img.file_name in first_line:
                again = f"{img.file_name!r} is also on line {first_line[img.file_name]}"
                errors.append(str(_fail(where, "image", again,
                                        "each image on one line (put all its objects and queries there)")))
                continue
            first_line[img.file_name] = n
            images.append(img)
    except OwnDataError as err:  # a line that is not JSON: the rest cannot be read reliably
        errors.append(str(err))
    except UnicodeDecodeError as err:
        errors.append(f"{src}: not UTF-8 text ({err})")
    if errors:
        listed = "\n".join(f"  {e}" for e in errors[:MAX_LISTED_ERRORS])
        more = f"\n  ... and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS else ""
        raise OwnDataError(f"{src}: {len(errors)} invalid line(s); nothing was written:\n{listed}{more}")
    if not images:
        raise OwnDataError(f"{src}: no images (the file has no non-blank line)")
    return images


def assign_splits(images: list[OwnImage], val_fraction: float = 0.1, seed: int = 0) -> None:
    """Give every image without a ``split`` one: ``val`` for a ``val_fraction`` share, else ``train``.

    Deterministic: the images without a split are ordered by ``file_name`` (not by line, so reordering
    the file changes nothing), shuffled by ``random.Random(seed)``, and the first
    ``round(val_fraction * n)`` become ``val``: at least 1 when ``val_fraction > 0`` and no image has
    the split ``val`` yet (a small file still gets a validation image), at most ``n - 1`` (one image at
    least stays in ``train``).
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    todo = sorted((img for img in images if img.split is None), key=lambda img: img.file_name)
    order = list(range(len(todo)))
    random.Random(seed).shuffle(order)
    n_val = round(float(val_fraction) * len(todo))
    if n_val == 0 and val_fraction > 0 and not any(img.split == VAL_SPLIT for img in images):
        n_val = 1
    n_val = max(0, min(n_val, len(todo) - 1))
    for rank, i in enumerate(order):
        todo[i].split = VAL_SPLIT if rank < n_val else TRAIN_SPLIT


# -- writing -----------------------------------------------------------------------------------------


def _coco_and_refs(images: list[OwnImage]) -> tuple[list[dict], list[tuple[dict, list[dict], list[dict]]]]:
    """COCO ``categories`` and, per image, its COCO image record, annotations and gRefCOCO refs."""
    names = sorted({o.category for img in images for o in img.objects} or {DEFAULT_CATEGORY})
    cat_id = {name: k + 1 for k, name in enumerate(names)}
    categories = [dict(id=cat_id[name], name=name, supercategory=name) for name in names]
    out = []
    ann_id = ref_id = sent_id = 0
    for image_id, img in enumerate(images, 1):
        record = dict(id=image_id, file_name=img.file_name, height=img.height, width=img.width)
        ann_of: dict[ObjectId, int] = {}
        anns = []
        for o in img.objects:
            ann_id += 1
            ann_of[o.id] = ann_id
            anns.append(dict(id=ann_id, image_id=image_id, category_id=cat_id[o.category],
                             segmentation=o.segmentation, area=float(o.area), bbox=o.bbox, iscrowd=0,
                             own_id=o.id))
        cat_of = {o.id: cat_id[o.category] for o in img.objects}
        refs = []
        for q in img.queries:
            ref_id += 1
            sentences = []
            for text in q.texts:
                sent_id += 1
                sentences.append(dict(sent=text, sent_id=sent_id, is_sentence=q.is_sentence))
            refs.append(dict(
                ref_id=ref_id,
                image_id=image_id,
                split=img.split,
                file_name=img.file_name,
                ann_id=[ann_of[t] for t in q.objects] or [-1],
                category_id=[cat_of[t] for t in q.objects] or [-1],
                no_target=not q.objects,
                sent_ids=[s["sent_id"] for s in sentences],
                sentences=sentences,
            ))
        out.append((record, anns, refs))
    return categories, out


def _split_counts(images: list[OwnImage]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for img in images:
        c = counts.setdefault(str(img.split), dict(images=0, objects=0, queries=0, phrasings=0, no_target=0,
                                                   single_target=0, multi_target=0, is_sentence=0))
        c["images"] += 1
        c["objects"] += len(img.objects)
        for q in img.queries:
            c["queries"] += 1
            c["phrasings"] += len(q.texts)
            c["is_sentence"] += int(q.is_sentence)
            c["no_target" if not q.objects else "single_target" if len(q.objects) == 1 else "multi_target"] += 1
    return dict(sorted(counts.items()))


def _prepare_image_dir(image_dir: Path, root: Path, images: list[OwnImage], copy_images: bool) -> str:
    """Decide how the loader reaches the images: ``in_place``, ``link`` or ``copy`` (checked, nothing written)."""
    if not image_dir.is_symlink() and image_dir.is_dir() and os.path.samefile(image_dir, root):
        return "in_place"  # the images are already in <out>/refer_seg/images/<dataset>
    inside = [img.path for img in images if Path(os.path.abspath(img.path)).is_relative_to(os.path.abspath(image_dir))]
    if inside:
        raise OwnDataError(f"image {inside[0]} lies inside the output image folder {image_dir}; "
                           f"use --image-root {image_dir} to reference the images where they are")
    return "copy" if copy_images else "link"


def _owned_paths_in_use(ann_dir: Path, image_dir: Path, mode: str) -> list[Path]:
    used = [ann_dir] if ann_dir.exists() and any(ann_dir.iterdir()) else []
    if mode != "in_place" and os.path.lexists(image_dir):
        used.append(image_dir)
    return used


def _clear(ann_dir: Path, image_dir: Path, mode: str) -> None:
    """Remove the previous output (``overwrite``): never a folder of images the converter did not copy."""
    if mode != "in_place" and os.path.lexists(image_dir):
        if image_dir.is_symlink() or image_dir.is_file():
            image_dir.unlink()  # a link: the images it pointed to stay
        elif (image_dir / COPY_MARKER).is_file():
            shutil.rmtree(image_dir)
        else:
            raise FileExistsError(
                f"{image_dir} is a folder the converter did not fill (no {COPY_MARKER} in it); it is not "
                "deleted: move it away, or pass --image-root pointing at it to use the images in it")
    if ann_dir.exists():
        shutil.rmtree(ann_dir)


def convert_own_data(
    jsonl: PathLike,
    out: PathLike,
    image_root: PathLike | None = None,
    copy_images: bool = False,
    dataset: str = DEFAULT_DATASET,
    val_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert an own-data JSONL file to the gRefCOCO layout under ``out`` (see the module docstring).

    Args:
        jsonl: the input file (schema in the module docstring).
        out: the output root; ``GRefCOCODataset(data_root=<out>/refer_seg, dataset=<dataset>,
            image_dir="images/<dataset>")`` reads it.
        image_root: the folder image / mask paths are relative to (default: the JSONL's folder).
        copy_images: copy the images into ``<out>/refer_seg/images/<dataset>`` (a self-contained output
            that can be moved) instead of linking that folder to ``image_root``. When ``image_root`` *is*
            that folder, the images are used where they are either way.
        dataset: the dataset folder name (``GRefCOCODataset(dataset=...)``).
        val_fraction, seed: how lines without a ``split`` are split (:func:`assign_splits`).
        overwrite: replace a previous conversion at ``out`` (its annotation folder, and its image link or
            copied images; never images the converter did not copy). Without it, existing output is an
            error.

    Returns:
        The summary also written to ``<out>/refer_seg/<dataset>/conversion.json``: counts per split,
        the image mode (``link``, ``copy``, ``in_place``) and the loader arguments.
    """
    if not dataset or any(c in dataset for c in "/\\") or dataset in (".", ".."):
        raise ValueError(f"dataset must be a plain folder name, got {dataset!r}")
    images = read_own_data(jsonl, image_root)
    root = Path(os.path.abspath(image_root if image_root is not None else Path(jsonl).parent))
    assign_splits(images, val_fraction, seed)
    categories, records = _coco_and_refs(images)
    writer = ReferWriter(out, dataset, SPLIT_BY, refs_prefix="grefs", refs_format="json", categories=categories,
                         description=f"reseg own data ({dataset}) converted from {Path(jsonl).name}")
    mode = _prepare_image_dir(writer.image_dir, root, images, copy_images)
    used = _owned_paths_in_use(writer.ann_dir, writer.image_dir, mode)
    if used and not overwrite:
        raise FileExistsError(f"{Path(out)} already holds a conversion ({', '.join(map(str, used))}); "
                              "pass --overwrite (overwrite=True) to replace it")
    if overwrite:
        _clear(writer.ann_dir, writer.image_dir, mode)
    if mode == "link":
        writer.image_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(root, writer.image_dir, target_is_directory=True)
        except OSError as err:
            raise OSError(f"could not link {writer.image_dir} -> {root} ({err}); use --copy-images") from None
    elif mode == "copy":
        writer.image_dir.mkdir(parents=True, exist_ok=True)
        (writer.image_dir / COPY_MARKER).write_text(f"images copied from {root}\n")
    for img, (record, anns, refs) in zip(images, records):
        writer.add_image(record, img.path.read_bytes() if mode == "copy" else None, anns, refs)
    writer.close()
    summary = dict(
        format="reseg-own-data",
        version=1,
        source=os.path.abspath(jsonl),
        image_root=str(root),
        images=mode,
        val_fraction=float(val_fraction),
        seed=int(seed),
        loader=dict(type="GRefCOCODataset", data_root=str(writer.root), dataset=dataset, split_by=SPLIT_BY,
                    image_dir=f"images/{dataset}"),
        categories=[c["name"] for c in categories],
        splits=_split_counts(images),
    )
    (writer.ann_dir / CONVERSION_FILE).write_bytes(dumps_json(summary))  # last: a record, not read back
    return summary
