"""mmengine metrics: thin :class:`~mmengine.evaluator.BaseMetric` wrappers of :mod:`.functional`.

The contract with the model (DESIGN.md, "Evaluator"):

* ``data_batch`` is what the dataloader yielded, ``dict(samples=list[Sample])``;
* ``data_samples`` is what ``val_step``/``test_step`` returned, one dict per sample in the same
  order: ``{"sample_id": str, "predictions": list[QueryPrediction]}`` with one prediction per query,
  masks at the original image size.

``process`` scores every query at once and keeps only its :class:`~.functional.QueryStats` (a few
numbers, never a mask), one entry of ``self.results`` per sample so that ``evaluate(size)`` can
drop the samples the distributed sampler padded in.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from mmengine.evaluator import BaseMetric

from reseg.evaluation.functional import (
    LISA_CIOU_EPS,
    LISA_GIOU_EPS,
    LISA_IOU_EPS,
    QueryStats,
    query_stats,
    summarize_counts,
    summarize_giou_ciou,
)
from reseg.registry import METRICS
from reseg.structures import Query, QueryPrediction, Sample

#: Readable subset names for known ``split_by`` keys (ReasonSeg short/long queries, §5.1).
DEFAULT_SPLIT_NAMES: dict[str, dict[Any, str]] = {
    "is_sentence": {False: "short", True: "long"},
}


@METRICS.register_module()
class SegIoUMetric(BaseMetric):
    """gIoU and cIoU over queries, LISA's ReasonSeg / RefCOCO protocol by default.

    Per query: the prediction's masks are binarised and OR-ed (:meth:`QueryPrediction.binary_mask`),
    compared with the union of the target masks with the ignore pixels removed, and reduced to
    :class:`~.functional.QueryStats`. Over the split: gIoU (mean per-query IoU) and cIoU
    (sum I / sum U) (``specs/seg_token_family.md`` §1.8, ``specs/platform_research.md`` §C6).

    Args:
        empty_union_iou: IoU of a query whose GT and prediction are both empty. LISA 1.0 (default),
            mmdet ``RefSegMetric`` 0.0.
        threshold: logit threshold for binarisation (LISA 0.0).
        inclusive_threshold: ``False`` is LISA's ``logits > threshold``, ``True`` GSVA's ``>=``
            (``seg_token_family.md`` §4.5).
        iou_eps: per-query IoU denominator epsilon (LISA 1e-5).
        giou_eps: gIoU denominator epsilon (LISA 1e-5).
        ciou_eps: cIoU denominator epsilon (LISA 1e-10).
        split_by: also report every subset of queries sharing a value of this key, e.g.
            ``"is_sentence"`` gives ``short/gIoU``, ``long/gIoU``, ... on ReasonSeg. The key is
            looked up as a :class:`~reseg.structures.Query` attribute, then in ``Query.meta``, then
            in ``Sample.meta``.
        split_names: value -> subset name for ``split_by``; defaults to :data:`DEFAULT_SPLIT_NAMES`
            for known keys and ``str(value)`` otherwise.
        collect_device, prefix, collect_dir: as in :class:`~mmengine.evaluator.BaseMetric`.
    """

    default_prefix: Optional[str] = "seg"

    def __init__(
        self,
        empty_union_iou: float = 1.0,
        threshold: float = 0.0,
        inclusive_threshold: bool = False,
        iou_eps: float = LISA_IOU_EPS,
        giou_eps: float = LISA_GIOU_EPS,
        ciou_eps: float = LISA_CIOU_EPS,
        split_by: Optional[str] = None,
        split_names: Optional[Mapping[Any, str]] = None,
        collect_device: str = "cpu",
        prefix: Optional[str] = None,
        collect_dir: Optional[str] = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.empty_union_iou = float(empty_union_iou)
        self.threshold = float(threshold)
        self.inclusive_threshold = bool(inclusive_threshold)
        self.iou_eps = float(iou_eps)
        self.giou_eps = float(giou_eps)
        self.ciou_eps = float(ciou_eps)
        self.split_by = split_by
        if split_names is None and split_by is not None:
            split_names = DEFAULT_SPLIT_NAMES.get(split_by)
        self.split_names: dict[Any, str] = dict(split_names or {})

    # -- process: masks -> per-query numbers ------------------------------------------------------

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Any]]) -> None:
        """Score one batch; append one ``{"sample_id", "queries": list[QueryStats]}`` per sample.

        Args:
            data_batch: ``dict(samples=list[Sample])``.
            data_samples: one ``{"sample_id": str, "predictions": list[QueryPrediction]}`` per
                sample, in the order of ``data_batch["samples"]``.
        """
        samples = self._samples_of(data_batch)
        if len(samples) != len(data_samples):
            raise ValueError(
                f"{type(self).__name__}.process got {len(samples)} samples in data_batch but "
                f"{len(data_samples)} outputs in data_samples; the model must return one output "
                "per sample, in order."
            )
        for sample, output in zip(samples, data_samples):
            predictions = self._predictions_of(sample, output)
            records = [
                self._score(sample, q_idx, query, pred)
                for q_idx, (query, pred) in enumerate(zip(sample.queries, predictions))
            ]
            self.results.append({"sample_id": sample.sample_id, "queries": records})

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction
    ) -> QueryStats:
        pred = prediction.binary_mask(self.threshold, self.inclusive_threshold)
        gt = query.target
        if pred.shape != gt.shape:
            raise ValueError(
                f"sample {sample.sample_id!r}, query {q_idx}: predicted mask has shape "
                f"{tuple(pred.shape)} but the ground truth {tuple(gt.shape)}; predictions must be "
                "returned at the original image size."
            )
        return query_stats(
            pred,
            gt,
            query.ignore,
            empty_union_iou=self.empty_union_iou,
            eps=self.iou_eps,
            gt_exists=bool(query.exists),
            pred_exists=bool(prediction.exists),
            group=self._group_of(sample, query),
        )

    @staticmethod
    def _samples_of(data_batch: Any) -> list[Sample]:
        if not isinstance(data_batch, Mapping) or "samples" not in data_batch:
            got = (
                sorted(data_batch)
                if isinstance(data_batch, Mapping)
                else type(data_batch).__name__
            )
            raise ValueError(
                f"SegIoUMetric expects data_batch = dict(samples=list[Sample]); got {got}."
            )
        return list(data_batch["samples"])

    @staticmethod
    def _predictions_of(sample: Sample, output: Mapping[str, Any]) -> list[QueryPrediction]:
        if not isinstance(output, Mapping) or "predictions" not in output:
            raise ValueError(
                "each model output must be a dict {'sample_id': str, 'predictions': "
                f"list[QueryPrediction]}}; got {type(output).__name__}."
            )
        out_id = output.get("sample_id")
        if out_id is not None and str(out_id) != sample.sample_id:
            raise ValueError(
                f"model output for sample {out_id!r} is paired with sample {sample.sample_id!r}; "
                "outputs must be in the order of data_batch['samples']."
            )
        predictions = list(output["predictions"])
        if len(predictions) != len(sample.queries):
            raise ValueError(
                f"sample {sample.sample_id!r} has {len(sample.queries)} queries but the model "
                f"returned {len(predictions)} predictions (one QueryPrediction per query)."
            )
        return predictions

    def _group_of(self, sample: Sample, query: Query) -> Optional[str]:
        key = self.split_by
        if key is None:
            return None
        if hasattr(query, key):
            value = getattr(query, key)
        elif key in query.meta:
            value = query.meta[key]
        elif key in sample.meta:
            value = sample.meta[key]
        else:
            raise KeyError(
                f"split_by={key!r}: not a Query attribute, nor a key of Query.meta "
                f"({sorted(query.meta)}) or Sample.meta ({sorted(sample.meta)}) for sample "
                f"{sample.sample_id!r}."
            )
        if isinstance(value, (list, dict)) or hasattr(value, "shape"):
            raise TypeError(
                f"split_by={key!r} must name a scalar field, got {type(value).__name__}."
            )
        return self.split_names.get(value, str(value))

    # -- compute_metrics: numbers -> scores -------------------------------------------------------

    def compute_metrics(self, results: list) -> dict[str, float]:
        """gIoU, cIoU and counts over all queries, plus per subset when ``split_by`` is set.

        Returns:
            ``{"gIoU", "cIoU", "n_queries", "n_empty_gt", "n_empty_pred"}`` (floats and ints), and
            ``"{subset}/{name}"`` for each of them when ``split_by`` is set.
        """
        stats: list[QueryStats] = [q for r in results for q in r["queries"]]
        metrics = self._summarize(stats)
        if self.split_by is not None:
            groups: dict[str, list[QueryStats]] = {}
            for s in stats:
                groups.setdefault(str(s.group), []).append(s)
            for name in sorted(groups):
                for k, v in self._summarize(groups[name]).items():
                    metrics[f"{name}/{k}"] = v
        return metrics

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:
        scores = summarize_giou_ciou(stats, giou_eps=self.giou_eps, ciou_eps=self.ciou_eps)
        return {"gIoU": scores["gIoU"], "cIoU": scores["cIoU"], **summarize_counts(stats)}
