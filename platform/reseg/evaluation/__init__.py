"""Evaluation: functional metrics (pure: masks in, numbers out), mmengine metrics around them, and
prediction dumps for offline re-scoring.

Importing this package registers the metrics in :data:`reseg.registry.METRICS` and
:class:`~reseg.evaluation.dump.DumpPredictionsHook` in :data:`reseg.registry.HOOKS`.
See ``docs/evaluation.md``.
"""
from reseg.evaluation.dump import (
    DumpPredictionsHook,
    PredictionDumper,
    load_predictions,
    rescore,
)
from reseg.evaluation.functional import (
    GRESTerm,
    QueryStats,
    binarize,
    binarize_stack,
    gres_term,
    gt_has_target,
    intersection_union,
    oracle_selection,
    pred_has_target,
    query_iou,
    query_stats,
    resize_nearest,
    summarize_counts,
    summarize_giou_ciou,
    summarize_gres,
    summarize_ores,
    summarize_pool_oracle,
    summarize_see_segment,
)
from reseg.evaluation.metrics import (
    FalsePremiseMetric,
    GRESMetric,
    ORESMetric,
    PoolOracleMetric,
    QueryStatsMetric,
    SegIoUMetric,
    evaluator_conventions,
)

__all__ = [
    "DumpPredictionsHook",
    "FalsePremiseMetric",
    "GRESMetric",
    "GRESTerm",
    "ORESMetric",
    "PoolOracleMetric",
    "PredictionDumper",
    "QueryStats",
    "QueryStatsMetric",
    "SegIoUMetric",
    "binarize",
    "binarize_stack",
    "evaluator_conventions",
    "gres_term",
    "gt_has_target",
    "intersection_union",
    "load_predictions",
    "oracle_selection",
    "pred_has_target",
    "query_iou",
    "query_stats",
    "rescore",
    "resize_nearest",
    "summarize_counts",
    "summarize_giou_ciou",
    "summarize_gres",
    "summarize_ores",
    "summarize_pool_oracle",
    "summarize_see_segment",
]
