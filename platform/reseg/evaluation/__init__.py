"""Evaluation: functional metrics (pure: masks in, numbers out) and mmengine metrics around them.

Importing this package registers the metrics in :data:`reseg.registry.METRICS`.
"""
from reseg.evaluation.functional import (
    QueryStats,
    binarize,
    intersection_union,
    query_iou,
    query_stats,
    summarize_counts,
    summarize_giou_ciou,
)
from reseg.evaluation.metrics import SegIoUMetric

__all__ = [
    "QueryStats",
    "SegIoUMetric",
    "binarize",
    "intersection_union",
    "query_iou",
    "query_stats",
    "summarize_counts",
    "summarize_giou_ciou",
]
