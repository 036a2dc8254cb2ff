"""Format writers for the synthetic benchmark: scenes in, files in the real datasets' layouts out.

* :class:`ReferWriter`: REFER / COCO (spec seg_token_family.md §5.2):
  ``<out>/refer_seg/images/<dataset>/<file>.jpg``, ``<out>/refer_seg/<dataset>/instances.json`` and
  ``<out>/refer_seg/<dataset>/refs(<split_by>).p``.
* :class:`ReasonSegWriter`: ReasonSeg / labelme (spec §5.1):
  ``<out>/reason_seg/ReasonSeg/<split>/<name>.jpg`` + ``<name>.json``.

The writers only know formats; what goes into them (scenes, expressions, rules) is decided by
:mod:`reseg.datasets.synthetic`. New formats (gRefCOCO, FP-RefCOCO, MaskGroups) are new writers fed
from the same scenes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from reseg.datasets.io import PathLike
from reseg.datasets.safe_pickle import dump_pickle
from reseg.datasets.synth_scene import KINDS


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
        split_by: the refs file variant, ``refs(<split_by>).p``.
    """

    def __init__(self, out: PathLike, dataset: str = "synthref", split_by: str = "unc") -> None:
        self.root = Path(out) / "refer_seg"
        self.dataset = dataset
        self.split_by = split_by
        self.image_dir = self.root / "images" / dataset
        self.ann_dir = self.root / dataset
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []

    @property
    def paths(self) -> list[Path]:
        """Every folder this writer owns (cleared by ``--overwrite``)."""
        return [self.image_dir, self.ann_dir]

    def add_image(self, image: dict[str, Any], jpeg: bytes, annotations: list[dict[str, Any]],
                  refs: list[dict[str, Any]]) -> None:
        """Write one JPEG; keep its COCO ``image`` record, its ``annotations`` and its ``refs``."""
        _write_bytes(self.image_dir / image["file_name"], jpeg)
        self.images.append(image)
        self.annotations.extend(annotations)
        self.refs.extend(refs)

    def close(self) -> None:
        """Write ``instances.json`` and ``refs(<split_by>).p``."""
        categories = [dict(id=k.category_id, name=k.name, supercategory="shape") for k in KINDS.values()]
        coco = dict(
            info=dict(description=f"reseg synthetic benchmark ({self.dataset})"),
            images=self.images,
            annotations=self.annotations,
            categories=categories,
        )
        _write_bytes(self.ann_dir / "instances.json", dumps_json(coco))
        dump_pickle(self.refs, self.ann_dir / f"refs({self.split_by}).p")


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
