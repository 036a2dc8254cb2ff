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

from typing import Any, Callable, Optional

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


def _predictors() -> dict[str, Callable[[Any, int, Sample], Optional[list[np.ndarray]]]]:
    def empty(ds, i, s):
        return [np.zeros(s.size, bool) for _ in s.queries]

    def whole(ds, i, s):
        return [np.ones(s.size, bool) for _ in s.queries]

    def largest(ds, i, s):
        if not hasattr(ds, "object_masks"):
            return None
        objs = ds.object_masks(i)
        if len(objs) == 0:
            return [np.zeros(s.size, bool) for _ in s.queries]
        big = objs[int(np.argmax(objs.reshape(len(objs), -1).sum(1)))]
        return [big for _ in s.queries]

    def union(ds, i, s):
        if not hasattr(ds, "object_masks"):
            return None
        objs = ds.object_masks(i)
        fg = objs.any(0) if len(objs) else np.zeros(s.size, bool)
        return [fg for _ in s.queries]

    def all_candidates(ds, i, s):
        if s.candidate_masks is None:
            return None
        pool = np.asarray(s.candidate_masks, bool)
        fg = pool.any(0) if len(pool) else np.zeros(s.size, bool)
        return [fg for _ in s.queries]

    def largest_candidate(ds, i, s):
        if s.candidate_masks is None:
            return None
        pool = np.asarray(s.candidate_masks, bool)
        if len(pool) == 0:
            return [np.zeros(s.size, bool) for _ in s.queries]
        big = pool[int(np.argmax(pool.reshape(len(pool), -1).sum(1)))]
        return [big for _ in s.queries]

    return {"empty": empty, "whole_image": whole, "largest_object": largest, "all_objects": union,
            "all_candidates": all_candidates, "largest_candidate": largest_candidate}


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
