"""Format writers for the synthetic benchmark: scenes in, files in the real datasets' layouts out.

* :class:`ReferWriter`: REFER / COCO (spec seg_token_family.md §5.2):
  ``<out>/refer_seg/images/<dataset>/<file>.jpg``, ``<out>/refer_seg/<dataset>/instances.json`` and
  ``<out>/refer_seg/<dataset>/refs(<split_by>).p``.
  The same writer makes gRefCOCO (``grefs(unc).json``, spec §5.3) and FP-RefCOCO
  (``refs(berkeley_exclude_unified).p``, spec §5.4) files.
* :class:`ReasonSegWriter`: ReasonSeg / labelme (spec §5.1):
  ``<out>/reason_seg/ReasonSeg/<split>/<name>.jpg`` + ``<name>.json``.
* :class:`MaskGroupsWriter`: MaskGroups-HQ records (anchorseg_ras.md §2.3):
  ``<out>/mask_groups/<split>.json`` + ``<out>/mask_groups/images/<file>.jpg``.

The writers only know formats; what goes into them (scenes, expressions, rules) is decided by
:mod:`.generator` and :mod:`.items`. :class:`ReferWriter` also writes
the gRefCOCO files of :mod:`reseg.datasets.own_data` (a user's own images, which it does not copy).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reseg.datasets.io import PathLike
from reseg.datasets.safe_pickle import dump_pickle
from reseg.datasets.synthref.scene import KINDS


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def dumps_json(obj: Any) -> bytes:
    """Deterministic compact JSON (UTF-8)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ReferWriter:
    """Accumulates COCO images/annotations and REFER refs; images are written as they come.

    Args:
        out: benchmark root; files go under ``<out>/refer_seg``.
        dataset: the REFER dataset name (folder name and image sub-folder).
        split_by: the refs file variant, ``<refs_prefix>(<split_by>).p``.
        refs_prefix: ``refs`` (REFER, FP-RefCOCO) or ``grefs`` (gRefCOCO).
        refs_format: ``pickle`` (``.p``, REFER) or ``json`` (``.json``, gRefCOCO).
        categories: the COCO ``categories`` of ``instances.json`` (``[{id, name, supercategory}]``);
            None: the synthetic benchmark's shape kinds.
        description: ``instances.json``'s ``info.description`` (None: the synthetic benchmark's).
    """

    def __init__(self, out: PathLike, dataset: str = "synthref", split_by: str = "unc",
                 refs_prefix: str = "refs", refs_format: str = "pickle",
                 categories: list[dict[str, Any]] | None = None, description: str | None = None) -> None:
        if refs_format not in ("pickle", "json"):
            raise ValueError(f"refs_format must be 'pickle' or 'json', got {refs_format!r}")
        self.root = Path(out) / "refer_seg"
        self.dataset = dataset
        self.split_by = split_by
        self.refs_format = refs_format
        self.categories = categories
        self.description = description or f"reseg synthetic benchmark ({dataset})"
        self.refs_name = f"{refs_prefix}({split_by}).{'p' if refs_format == 'pickle' else 'json'}"
        self.image_dir = self.root / "images" / dataset
        self.ann_dir = self.root / dataset
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []

    @property
    def paths(self) -> list[Path]:
        """Every folder this writer owns (cleared by ``--overwrite``)."""
        return [self.image_dir, self.ann_dir]

    def add_image(self, image: dict[str, Any], jpeg: bytes | None, annotations: list[dict[str, Any]],
                  refs: list[dict[str, Any]]) -> None:
        """Keep one COCO ``image`` record, its ``annotations`` and its ``refs``.

        ``jpeg`` (the image file's bytes, whatever its format) is written to ``image_dir/<file_name>``;
        None writes no file (the image is already reachable there, e.g. through a link).
        """
        if jpeg is not None:
            _write_bytes(self.image_dir / image["file_name"], jpeg)
        self.images.append(image)
        self.annotations.extend(annotations)
        self.refs.extend(refs)

    def close(self) -> None:
        """Write ``instances.json`` and the refs file (``<refs_prefix>(<split_by>).p`` or ``.json``)."""
        categories = self.categories
        if categories is None:
            categories = [dict(id=k.category_id, name=k.name, supercategory="shape") for k in KINDS.values()]
        coco = dict(
            info=dict(description=self.description),
            images=self.images,
            annotations=self.annotations,
            categories=categories,
        )
        _write_bytes(self.ann_dir / "instances.json", dumps_json(coco))
        if self.refs_format == "json":
            _write_bytes(self.ann_dir / self.refs_name, dumps_json(self.refs))
        else:
            dump_pickle(self.refs, self.ann_dir / self.refs_name)


class ReasonSegWriter:
    """Writes ReasonSeg image/JSON pairs under ``<out>/reason_seg/ReasonSeg/<split>/``."""

    def __init__(self, out: PathLike, splits: tuple[str, ...] = ("train", "val", "test")) -> None:
        self.root = Path(out) / "reason_seg" / "ReasonSeg"
        self.splits = splits

    @property
    def paths(self) -> list[Path]:
        """Every folder this writer owns (cleared by ``--overwrite``)."""
        return [self.root / s for s in self.splits]

    def add(self, split: str, name: str, jpeg: bytes, record: dict[str, Any]) -> None:
        """Write ``<name>.jpg`` and ``<name>.json`` (``record`` is the labelme-style JSON)."""
        _write_bytes(self.root / split / f"{name}.jpg", jpeg)
        _write_bytes(self.root / split / f"{name}.json", dumps_json(record))


class MaskGroupsWriter:
    """Writes MaskGroups-HQ-style records: ``<out>/mask_groups/<split>.json`` (a JSON list) + images.

    Images go to ``<out>/mask_groups/images/<file>``; records are kept per split and written by
    :meth:`close` (a split without records gets no file).
    """

    def __init__(self, out: PathLike, splits: tuple[str, ...] = ("train", "validation")) -> None:
        self.root = Path(out) / "mask_groups"
        self.image_dir = self.root / "images"
        self.splits = splits
        self.records: dict[str, list[dict[str, Any]]] = {s: [] for s in splits}

    @property
    def paths(self) -> list[Path]:
        """Every folder and file this writer owns (cleared by ``--overwrite``)."""
        return [self.image_dir] + [self.root / f"{s}.json" for s in self.splits]

    def add(self, split: str, file_name: str, jpeg: bytes, records: list[dict[str, Any]]) -> None:
        """Write one image and keep its records."""
        _write_bytes(self.image_dir / file_name, jpeg)
        self.records[split].extend(records)

    def close(self) -> None:
        for split, records in self.records.items():
            if records:
                _write_bytes(self.root / f"{split}.json", dumps_json(records))


def labelme_record(name: str, height: int, width: int, texts: list[str], is_sentence: bool,
                   shapes: list[tuple[str, list[list[int]]]], extra: dict[str, Any]) -> dict[str, Any]:
    """A labelme JSON as ReasonSeg ships it: labelme keys plus ``text`` and ``is_sentence``."""
    return {
        "version": "4.5.6",
        "flags": {},
        "shapes": [
            {"label": label, "points": points, "group_id": None, "shape_type": "polygon", "flags": {}}
            for label, points in shapes
        ],
        "imagePath": f"{name}.jpg",
        "imageData": None,
        "imageHeight": int(height),
        "imageWidth": int(width),
        "text": list(texts),
        "is_sentence": bool(is_sentence),
        "synth": extra,
    }
