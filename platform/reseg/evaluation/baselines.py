"""Trivial baselines scored by the same metrics as models: the floor a trained model must clear.

* ``empty``: predict nothing for every query (and say "no target": ``exists=False``);
* ``whole_image``: predict every pixel;
* ``largest_object``: predict the largest annotated object of the image. Needs the dataset to expose
  ``object_masks(index) -> [n, H, W] bool`` (all annotated objects of an image, e.g. COCO
  ``instances.json``); samples of datasets without it (ReasonSeg only annotates targets) are left
  out of this baseline, and ``n_skipped_samples`` says how many;
* ``all_objects``: predict the union of every annotated object (the foreground), with the same
  requirement. A model whose masks ignore the query and cover every shape scores this; a model
  that beats ``largest_object`` on cIoU but not ``all_objects`` has learned "foreground", not the
  query;
* ``all_candidates`` / ``largest_candidate``: for samples that carry a candidate pool (MaskGroups;
  anchorseg_ras.md §2.3), the union of the whole pool / its largest candidate: what a selection head
  scores by ignoring the query. Samples without a pool are left out.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from mmengine.dataset import ConcatDataset

from reseg.registry import METRICS
from reseg.structures import QueryPrediction, Sample


def _leaf_datasets(dataset) -> list[tuple[Any, int]]:
    """(dataset, index) pairs for every item, looking through ``ConcatDataset``."""
    if isinstance(dataset, ConcatDataset):
        out = []
        for d in dataset.datasets:
            out += _leaf_datasets(d)
        return out
    return [(dataset, i) for i in range(len(dataset))]


def _largest(masks: np.ndarray | None, s: Sample) -> list[np.ndarray] | None:
    """The largest of ``masks`` (``[n, H, W]``) for every query; None when there are no masks to use."""
    if masks is None:
        return None
    masks = np.asarray(masks, bool)
    big = masks[int(np.argmax(masks.reshape(len(masks), -1).sum(1)))] if len(masks) else np.zeros(s.size, bool)
    return [big for _ in s.queries]


def _union(masks: np.ndarray | None, s: Sample) -> list[np.ndarray] | None:
    """The union of ``masks`` (``[n, H, W]``) for every query; None when there are no masks to use."""
    if masks is None:
        return None
    masks = np.asarray(masks, bool)
    fg = masks.any(0) if len(masks) else np.zeros(s.size, bool)
    return [fg for _ in s.queries]


def _predictors() -> dict[str, Callable[[Any, int, Sample], list[np.ndarray] | None]]:
    def objects(ds, i):
        return ds.object_masks(i) if hasattr(ds, "object_masks") else None

    return {
        "empty": lambda ds, i, s: [np.zeros(s.size, bool) for _ in s.queries],
        "whole_image": lambda ds, i, s: [np.ones(s.size, bool) for _ in s.queries],
        "largest_object": lambda ds, i, s: _largest(objects(ds, i), s),
        "all_objects": lambda ds, i, s: _union(objects(ds, i), s),
        "all_candidates": lambda ds, i, s: _union(s.candidate_masks, s),
        "largest_candidate": lambda ds, i, s: _largest(s.candidate_masks, s),
    }


def evaluate_baselines(dataset, evaluator_cfg: Any) -> dict[str, dict[str, float]]:
    """Score each baseline on ``dataset`` with the metrics of ``evaluator_cfg`` (a metric config or list)."""
    cfgs = evaluator_cfg if isinstance(evaluator_cfg, (list, tuple)) else [evaluator_cfg]
    items = _leaf_datasets(dataset)
    results: dict[str, dict[str, float]] = {}
    for name, fn in _predictors().items():
        metrics = [METRICS.build(dict(c)) for c in cfgs]
        skipped = 0
        for ds, i in items:
            s = ds[i]
            masks = fn(ds, i, s)
            if masks is None:
                skipped += 1
                continue
            out = [dict(sample_id=s.sample_id,
                        predictions=[QueryPrediction(masks=m[None], exists=bool(m.any())) for m in masks])]
            for m in metrics:
                m.process(dict(samples=[s]), out)
        if skipped == len(items):
            continue
        merged: dict[str, float] = {}
        for m in metrics:
            merged.update(m.evaluate(len(m.results)))
        merged["n_skipped_samples"] = skipped
        results[name] = merged
    return results
