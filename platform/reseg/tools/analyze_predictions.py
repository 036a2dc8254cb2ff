"""How a RES model's answers depend on the query, from a ``tools/test.py --dump-predictions`` file.

    python tools/analyze_predictions.py preds.jsonl [--refer-root data/synthref/refer_seg] [--dataset synthref]

Prints, for the dump's REFER-format RES queries (``dataset`` field equal to ``--dataset``):

* gIoU by kind of expression, read from the ``synth_strategies`` field the synthetic benchmark writes
  into ``refs(unc).p`` (one entry per sentence; ``attribute``, ``position``, ``relation``, ``size``);
  a REFER file without it (real RefCOCO) gets the single kind ``all``;
* the mean IoU between the masks answered to two different queries of one image: near 1 means the
  model gives every query of an image the same mask, whatever it asks.

gIoU here is the per-query IoU of the dumped binary mask against the referred annotation's mask at
the original size, empty union counting 1 (the convention of ``SegIoUMetric``; ignore regions do not
occur in REFER RES).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import defaultdict

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("predictions", help="the .jsonl dump of tools/test.py --dump-predictions")
    p.add_argument("--refer-root", default="data/synthref/refer_seg", help="REFER root holding <dataset>/")
    p.add_argument("--dataset", default="synthref", help="the REFER dataset name (folder and dump field)")
    return p.parse_args(argv)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks; two empty masks agree (1.0), as in ``SegIoUMetric``."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def iou_by_kind(rows) -> dict[str, float]:
    """``rows``: (kind, predicted mask, ground-truth mask) triples -> mean IoU per kind and ``all``."""
    per: dict[str, list[float]] = defaultdict(list)
    for kind, pred, gt in rows:
        v = mask_iou(pred, gt)
        per[kind].append(v)
        per["all"].append(v)
    return {k: float(np.mean(v)) for k, v in sorted(per.items())}


def same_image_overlap(masks_by_image: dict) -> tuple[float, int]:
    """Mean IoU over every pair of masks answered for one image (all images), and the number of pairs."""
    vals = [mask_iou(a, b) for ms in masks_by_image.values() for a, b in itertools.combinations(ms, 2)]
    return (float(np.mean(vals)) if vals else float("nan")), len(vals)


def main(argv=None) -> int:
    args = parse_args(argv)
    from pycocotools.coco import COCO

    from reseg.datasets.safe_pickle import load_pickle
    from reseg.masks.rle import decode_rle

    root = os.path.join(args.refer_root, args.dataset)
    refs_file, inst_file = os.path.join(root, "refs(unc).p"), os.path.join(root, "instances.json")
    for f in (args.predictions, refs_file, inst_file):
        if not os.path.isfile(f):
            sys.exit(f"error: {f!r} not found")
    coco = COCO(inst_file)
    sentence = {}  # (image id, sentence) -> (kind, annotation id)
    for r in load_pickle(refs_file):
        kinds = r.get("synth_strategies") or ["all"] * len(r["sentences"])
        for s, kind in zip(r["sentences"], kinds):
            sentence[(r["image_id"], s["sent"])] = (kind, r["ann_id"])
    rows, by_image = [], defaultdict(list)
    with open(args.predictions) as f:
        for n, line in enumerate(f, 1):
            d = json.loads(line)
            if d.get("dataset") != args.dataset:
                continue
            image_id = int(d["sample_id"].rsplit("|", 1)[-1])
            key = (image_id, d["query"])
            if key not in sentence:
                sys.exit(f"error: {args.predictions}:{n}: query {d['query']!r} of image {image_id} is not a "
                         f"sentence of {refs_file}")
            kind, ann = sentence[key]
            pred = decode_rle(d["mask_rle"], f"{args.predictions}:{n}: mask_rle")
            rows.append((kind, pred, coco.annToMask(coco.anns[ann]).astype(bool)))
            by_image[d["sample_id"]].append(pred)
    if not rows:
        sys.exit(f"error: no line of {args.predictions} has dataset {args.dataset!r}")
    counts: dict[str, int] = defaultdict(int)
    for kind, _, _ in rows:
        counts[kind] += 1
    counts["all"] = len(rows)
    for kind, v in iou_by_kind(rows).items():
        print(f"gIoU {kind:10s} {v:.3f}  ({counts[kind]} queries)")
    overlap, pairs = same_image_overlap(by_image)
    print(f"mask IoU between two queries of one image: {overlap:.3f}  ({pairs} pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
