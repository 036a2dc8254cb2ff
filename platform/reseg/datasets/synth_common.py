"""Pieces every split of the synthetic benchmark shares: per-image RNGs, image ids, COCO records.

Every image comes from its own ``numpy`` generator seeded by ``(seed, family, split, index)``, so a
split's images do not depend on the other splits' counts nor on the number of workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reseg.datasets.synth_scene import Scene, mask_to_coco_polygons

#: Seed component per family of splits (append new families; never renumber: it changes the data).
FAMILY_CODE = {"refer": 1, "reason": 2, "grefer": 3, "fprefer": 4, "maskgroups": 5}
#: Seed component (and image-id prefix) per split name.
SPLIT_CODE = {"train": 1, "val": 2, "testA": 3, "testB": 4, "test": 5, "validation": 6}
#: Image ids are ``split_code * IMAGE_ID_STRIDE + index + 1`` (stable when other splits change size).
IMAGE_ID_STRIDE = 1_000_000


def item_rng(seed: int, family: str, split: str, index: int) -> np.random.Generator:
    """The generator of one image: seeded by ``(seed, family, split, index)``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), FAMILY_CODE[family],
                                                         SPLIT_CODE[split], int(index)]))


def refer_image_id(split: str, index: int) -> int:
    return SPLIT_CODE[split] * IMAGE_ID_STRIDE + int(index) + 1


@dataclass
class ReferItem:
    """One REFER-layout image: COCO image record, JPEG bytes, every object's annotation, the refs."""

    image: dict[str, Any]
    jpeg: bytes
    annotations: list[dict[str, Any]]
    refs: list[dict[str, Any]]


def coco_annotation(scene: Scene, k: int, ann_id: int, image_id: int) -> dict[str, Any]:
    """The COCO annotation of object ``k`` (visible part as polygons, plus its ``synth`` attributes)."""
    obj = scene.objects[k]
    x0, y0, x1, y1 = obj.bbox
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=obj.category_id,
        segmentation=mask_to_coco_polygons(obj.visible_mask),
        area=float(obj.visible_area),
        bbox=[float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
        iscrowd=0,
        synth=dict(colour=obj.colour, kind=obj.kind, z=k, full_area=obj.full_area,
                   visible_fraction=round(obj.visible_fraction, 4)),
    )
