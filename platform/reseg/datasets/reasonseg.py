"""ReasonSeg (LISA) in its released layout.

Layout (spec seg_token_family.md §5.1, platform_research.md §C1)::

    <data_root>/                 # either the ``ReasonSeg`` folder itself ...
        train/<name>.jpg + <name>.json
        val/...  test/...
    <data_root>/ReasonSeg/<split>/...   # ... or its parent (LISA's ``reason_seg`` folder)

``data_root`` is the folder that contains the split folders; if it does not contain ``<split>`` but
does contain ``ReasonSeg/<split>``, that is used (so LISA's ``dataset_dir/reason_seg`` works too).

Each JSON (labelme style) has ``text`` (list of phrasings), ``is_sentence`` (bool) and ``shapes``.
Masks are rasterised as LISA does (:func:`reseg.datasets.io.labelme_shapes_to_mask`). Training: one
random phrasing per query, ignore pixels count as background (``mask == 1``, spec §1.7). Test: only
the first phrasing (spec §1.8), and the 255 pixels become the query's ``ignore`` mask.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from reseg.datasets.base import ResegDataset
from reseg.datasets.io import (
    REASONSEG_IGNORE,
    REASONSEG_TARGET,
    DatasetFormatError,
    PathLike,
    UnknownSplitError,
    labelme_shapes_to_mask,
    read_image_rgb,
    read_json,
    require_dir,
    require_key,
)
from reseg.registry import DATASETS
from reseg.structures import Query, Sample

logger = logging.getLogger(__name__)

#: Name of the dataset in ``Sample.meta['dataset']``.
REASONSEG_NAME = "ReasonSeg"


def _is_target_shape(shape: dict[str, Any]) -> bool:
    label = str(shape.get("label", "")).lower()
    return label != "flag" and "ignore" not in label and len(shape.get("points", [])) > 0


def _is_ignore_shape(shape: dict[str, Any]) -> bool:
    label = str(shape.get("label", "")).lower()
    return label != "flag" and "ignore" in label and len(shape.get("points", [])) > 0


@DATASETS.register_module()
class ReasonSegDataset(ResegDataset):
    """Reasoning segmentation in LISA's ReasonSeg layout; one :class:`Sample` (task ``'reason'``) per image.

    Args:
        data_root: the folder holding the split folders (``.../reason_seg/ReasonSeg``) or its parent.
        split: a split folder under ``data_root`` (``train``, ``val``, ``test``).
        test_mode: first phrasing only + ignore mask (spec §1.8) vs random phrasing, ignore as
            background (spec §1.7).
        num_queries_per_sample: training mode: up to this many distinct phrasings of the same target
            are asked, each a query (LISA draws up to 3; default 1). Test mode always asks one.
        seed: seed of the training-time sampling (``None``: Python's global ``random``).

    Items: ``Sample(image [H, W, 3] uint8 RGB, queries, task='reason', meta)``; each query has
    ``masks`` ``[1, H, W] bool`` (``[0, H, W]`` and ``exists=False`` for a JSON without target
    polygons, counted in ``info['num_empty_targets']``), ``is_sentence``,
    ``ignore`` ``[H, W] bool`` in test mode (None in training) and ``meta`` with ``text_index``.
    ``Sample.meta``: ``dataset`` ('ReasonSeg'), ``split``, ``image_id`` (file stem), ``file_name``,
    ``height``, ``width``, ``sample_id``.
    """

    task = "reason"

    def __init__(
        self,
        data_root: PathLike,
        split: str = "val",
        test_mode: bool = False,
        num_queries_per_sample: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(test_mode=test_mode, seed=seed)
        if int(num_queries_per_sample) < 1:
            raise ValueError(f"num_queries_per_sample must be >= 1, got {num_queries_per_sample}")
        self.num_queries_per_sample = int(num_queries_per_sample)
        self.data_root = require_dir(data_root, "ReasonSeg data_root (the folder holding train/ val/ test/)")
        self.split = str(split)
        self.split_dir = self._find_split_dir()
        self._load()

    def _find_split_dir(self) -> Path:
        for root in (self.data_root, self.data_root / REASONSEG_NAME):
            if (root / self.split).is_dir():
                return root / self.split
        valid: list[str] = []
        for root in (self.data_root, self.data_root / REASONSEG_NAME):
            if root.is_dir():
                valid += [p.name for p in sorted(root.iterdir()) if p.is_dir() and any(p.glob("*.jpg"))]
        raise UnknownSplitError(
            f"ReasonSeg split {self.split!r} not found under {self.data_root} (looked for "
            f"{self.data_root / self.split} and {self.data_root / REASONSEG_NAME / self.split}); "
            f"valid splits: {', '.join(valid) if valid else 'none (no folder with .jpg images)'}"
        )

    def _load(self) -> None:
        images = sorted(self.split_dir.glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"no .jpg images in the ReasonSeg split folder {self.split_dir}")
        self._items: list[dict[str, Any]] = []
        num_empty = num_ignore = num_long = 0
        for img in images:
            jpath = img.with_suffix(".json")
            if not jpath.is_file():
                raise FileNotFoundError(
                    f"ReasonSeg annotation not found: {jpath} (every <name>.jpg needs a <name>.json)"
                )
            data = read_json(jpath)
            where = str(jpath)
            texts = require_key(data, "text", where, "a list of instructions")
            if isinstance(texts, str):
                texts = [texts]
            texts = [str(t) for t in texts]
            if not texts:
                raise DatasetFormatError(f"{where}: 'text' is empty")
            shapes = require_key(data, "shapes", where, "labelme shapes with label and points")
            if not isinstance(shapes, list):
                raise DatasetFormatError(f"{where}: 'shapes' must be a list, got {type(shapes).__name__}")
            kept = []
            for k, s in enumerate(shapes):
                require_key(s, "points", f"{where}: shapes[{k}]", "a list of [x, y]")
                kept.append({"label": str(s.get("label", "")), "points": s["points"]})
            has_target = any(_is_target_shape(s) for s in kept)
            has_ignore = any(_is_ignore_shape(s) for s in kept)
            is_sentence = bool(data.get("is_sentence", False))
            num_empty += not has_target
            num_ignore += has_ignore
            num_long += is_sentence
            self._items.append(
                dict(name=img.stem, image=img.name, texts=texts, is_sentence=is_sentence, shapes=kept)
            )
        if num_empty:
            logger.info("ReasonSeg %s: %d of %d JSONs have no target polygon (empty target).",
                        self.split, num_empty, len(self._items))
        self.info = dict(
            dataset=REASONSEG_NAME,
            split=self.split,
            task=self.task,
            num_images=len(self._items),
            num_empty_targets=num_empty,
            num_with_ignore=num_ignore,
            num_long_queries=num_long,
            data_root=str(self.data_root),
            split_dir=str(self.split_dir),
            test_mode=self.test_mode,
        )

    def __len__(self) -> int:
        return len(self._items)

    def _chosen_texts(self, texts: list[str]) -> list[int]:
        if self.test_mode:
            return [0]
        k = min(self.num_queries_per_sample, len(texts))
        return self._rng.sample(range(len(texts)), k)

    def __getitem__(self, index: int) -> Sample:
        item = self._items[self._check_index(index)]
        path = self.split_dir / item["image"]
        image = read_image_rgb(path)
        h, w = image.shape[:2]
        raw = labelme_shapes_to_mask(item["shapes"], h, w)
        target = raw == REASONSEG_TARGET
        masks = target[None] if target.any() else np.zeros((0, h, w), dtype=bool)
        ignore = (raw == REASONSEG_IGNORE) if self.test_mode else None
        queries = [
            Query(
                text=item["texts"][t].strip(),
                masks=masks.copy() if n else masks,
                is_sentence=item["is_sentence"],
                ignore=ignore,
                exists=bool(masks.shape[0]),
                meta=dict(text_index=t),
            )
            for n, t in enumerate(self._chosen_texts(item["texts"]))
        ]
        return Sample(
            image=image,
            queries=queries,
            task=self.task,
            meta=dict(
                dataset=REASONSEG_NAME,
                split=self.split,
                image_id=item["name"],
                file_name=item["image"],
                height=h,
                width=w,
                sample_id=f"{REASONSEG_NAME}|{self.split}|{item['name']}",
            ),
        )
