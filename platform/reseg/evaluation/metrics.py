"""mmengine metrics: thin :class:`~mmengine.evaluator.BaseMetric` wrappers of :mod:`.functional`.

The contract with the model (docs/architecture.md, "Evaluator"):

* ``data_batch`` is what the dataloader yielded, ``dict(samples=list[Sample])``;
* ``data_samples`` is what ``val_step``/``test_step`` returned, one dict per sample in the same
  order: ``{"sample_id": str, "predictions": list[QueryPrediction]}`` with one prediction per query,
  masks at the original image size.

``process`` scores every query at once and keeps only its :class:`~.functional.QueryStats` (a few
numbers, never a mask), **one entry of** ``self.results`` **per sample** (also for samples a metric
does not score), so that ``evaluate(size)`` keeps exactly the dataset's samples and drops the ones
the distributed sampler padded in.

Every metric here derives from :class:`QueryStatsMetric`, which owns that loop, the binarisation,
the ignore mask, the scoring resolution, ``split_by`` subsets and :meth:`~QueryStatsMetric.conventions`
(the settings a number was computed under, for tools to write next to it; ``compute_metrics``
returns numbers only, as mmengine requires). A metric only says how one query is scored
(``_score``) and how records are reduced (``_summarize``).

| metric | task | reports |
|---|---|---|
| :class:`SegIoUMetric` | RES, ReasonSeg | gIoU, cIoU |
| :class:`GRESMetric` | gRefCOCO | gIoU, cIoU, N-acc, T-acc, Pr@k, TP/TN/FP/FN |
| :class:`FalsePremiseMetric` | FP-RefCOCO, R-RefCOCO | See, Segment (+ gIoU, cIoU) |
| :class:`ORESMetric` | MaskGroups-HQ | gIoU, cIoU overall / text / hybrid |
| :class:`PoolOracleMetric` | any task with a candidate pool | oracle gIoU, cIoU |
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from mmengine.evaluator import BaseMetric

from reseg.evaluation.functional import (
    GRES_NT_MODES,
    LISA_CIOU_EPS,
    LISA_GIOU_EPS,
    LISA_IOU_EPS,
    ORACLE_RULES,
    RELA_PR_THRESHOLDS,
    QueryStats,
    binarize_stack,
    gt_has_target,
    oracle_selection,
    query_stats,
    summarize_counts,
    summarize_giou_ciou,
    summarize_gres,
    summarize_ores,
    summarize_pool_oracle,
    summarize_see_segment,
)
from reseg.registry import METRICS
from reseg.structures import Query, QueryPrediction, Sample

#: Readable subset names for known ``split_by`` keys (ReasonSeg short/long queries, §5.1).
DEFAULT_SPLIT_NAMES: dict[str, dict[Any, str]] = {
    "is_sentence": {False: "short", True: "long"},
}

#: Values of :class:`GRESMetric`'s ``pred_exists`` option.
PRED_EXISTS_RULES = ("flag", "mask", "flag_and_mask")


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists (JSON-friendly convention values)."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


class QueryStatsMetric(BaseMetric):
    """Base of reseg's metrics: per-sample lists of :class:`~.functional.QueryStats`, reduced later.

    Subclasses implement ``_score(sample, q_idx, query, prediction) -> QueryStats | None`` (None:
    the query cannot be scored by this metric and is counted in ``n_unscored``) and
    ``_summarize(list[QueryStats]) -> dict``, and list their own options in ``_convention_keys``.

    Args:
        threshold: logit threshold for binarisation (LISA 0.0). Bool masks are used as they are.
        inclusive_threshold: ``False`` is LISA/SESAME's ``logits > threshold``, ``True`` GSVA's
            ``>=`` (``specs/seg_token_family.md`` §4.5).
        use_ignore: remove the query's ignore pixels (ReasonSeg's 255) from I and U (LISA, SESAME,
            GSVA). ``False`` scores them like any pixel.
        eval_size: ``(h, w)`` to score at (nearest resize of prediction, GT and ignore; ReLA uses
            ``(480, 480)``, §4.4), or None (default) for the original size.
        tasks: only score samples whose ``Sample.task`` is in this list (e.g. ``["gres"]`` in a
            mixed test set); other samples still get their (empty) results entry. None scores all.
        split_by: also report every subset of queries sharing a value of this key, e.g.
            ``"is_sentence"`` gives ``short/gIoU``, ``long/gIoU``, ... on ReasonSeg. The key is
            looked up as a :class:`~reseg.structures.Query` attribute, then in ``Query.meta``, then
            in ``Sample.meta``.
        split_names: value -> subset name for ``split_by``; defaults to :data:`DEFAULT_SPLIT_NAMES`
            for known keys and ``str(value)`` otherwise.
        collect_device, prefix, collect_dir: as in :class:`~mmengine.evaluator.BaseMetric`.
    """

    default_prefix: str | None = None
    #: The spec sections whose official code the defaults reproduce.
    reference: str = ""
    #: Whether ``process`` needs ``predictions`` in the model outputs.
    needs_predictions: bool = True
    _base_convention_keys: tuple[str, ...] = (
        "threshold",
        "inclusive_threshold",
        "use_ignore",
        "eval_size",
        "tasks",
        "split_by",
    )
    _convention_keys: tuple[str, ...] = ()

    def __init__(
        self,
        threshold: float = 0.0,
        inclusive_threshold: bool = False,
        use_ignore: bool = True,
        eval_size: Sequence[int] | None = None,
        tasks: Sequence[str] | None = None,
        split_by: str | None = None,
        split_names: Mapping[Any, str] | None = None,
        collect_device: str = "cpu",
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.threshold = float(threshold)
        self.inclusive_threshold = bool(inclusive_threshold)
        self.use_ignore = bool(use_ignore)
        if eval_size is not None:
            eval_size = tuple(int(v) for v in eval_size)
            if len(eval_size) != 2 or min(eval_size) <= 0:
                raise ValueError(f"eval_size must be (h, w) with h, w > 0, got {eval_size}.")
        self.eval_size: tuple[int, int] | None = eval_size  # type: ignore[assignment]
        self.tasks: tuple[str, ...] | None = None if tasks is None else tuple(tasks)
        self.split_by = split_by
        if split_names is None and split_by is not None:
            split_names = DEFAULT_SPLIT_NAMES.get(split_by)
        self.split_names: dict[Any, str] = dict(split_names or {})

    # -- conventions ------------------------------------------------------------------------------

    def conventions(self) -> dict[str, Any]:
        """The settings this metric's numbers depend on, JSON-friendly, for tools to write next to them.

        Returns:
            ``{"metric": class name, "prefix", "reference": spec sections, <option>: value, ...}``.
        """
        out: dict[str, Any] = {
            "metric": type(self).__name__,
            "prefix": self.prefix,
            "reference": self.reference,
        }
        for key in self._base_convention_keys + self._convention_keys:
            out[key] = _plain(getattr(self, key))
        return out

    # -- process: masks -> per-query numbers ------------------------------------------------------

    def process(self, data_batch: Any, data_samples: Sequence[Mapping[str, Any]]) -> None:
        """Score one batch; append one ``{"sample_id", "queries", "n_unscored"}`` per sample.

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
            self.results.append(self._sample_entry(sample, output))

    def _sample_entry(self, sample: Sample, output: Mapping[str, Any]) -> dict[str, Any]:
        self._check_output(sample, output)
        records: list[QueryStats] = []
        unscored = 0
        if self.tasks is None or sample.task in self.tasks:
            if self.needs_predictions:
                predictions: list[QueryPrediction | None] = list(
                    self._predictions_of(sample, output)
                )
            else:
                predictions = [None] * len(sample.queries)
            for q_idx, (query, pred) in enumerate(zip(sample.queries, predictions)):
                record = self._score(sample, q_idx, query, pred)
                if record is None:
                    unscored += 1
                else:
                    records.append(record)
        return {"sample_id": sample.sample_id, "queries": records, "n_unscored": unscored}

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction | None
    ) -> QueryStats | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _samples_of(self, data_batch: Any) -> list[Sample]:
        if not isinstance(data_batch, Mapping) or "samples" not in data_batch:
            got = (
                sorted(data_batch)
                if isinstance(data_batch, Mapping)
                else type(data_batch).__name__
            )
            raise ValueError(
                f"{type(self).__name__} expects data_batch = dict(samples=list[Sample]); got {got}."
            )
        return list(data_batch["samples"])

    @staticmethod
    def _check_output(sample: Sample, output: Mapping[str, Any]) -> None:
        if not isinstance(output, Mapping):
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

    @staticmethod
    def _predictions_of(sample: Sample, output: Mapping[str, Any]) -> list[QueryPrediction]:
        if "predictions" not in output:
            raise ValueError(
                "each model output must be a dict {'sample_id': str, 'predictions': "
                f"list[QueryPrediction]}}; got keys {sorted(output)}."
            )
        predictions = list(output["predictions"])
        if len(predictions) != len(sample.queries):
            raise ValueError(
                f"sample {sample.sample_id!r} has {len(sample.queries)} queries but the model "
                f"returned {len(predictions)} predictions (one QueryPrediction per query)."
            )
        return predictions

    def _group_of(self, sample: Sample, query: Query) -> str | None:
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

    # -- helpers for _score -----------------------------------------------------------------------

    def _binary_masks(self, sample: Sample, q_idx: int, prediction: QueryPrediction) -> np.ndarray:
        """``[m, H, W] bool``: the prediction's masks binarised, checked to be at the image size."""
        masks = binarize_stack(prediction.masks, self.threshold, self.inclusive_threshold)
        if tuple(masks.shape[1:]) != sample.size:
            raise ValueError(
                f"sample {sample.sample_id!r}, query {q_idx}: predicted mask has shape "
                f"{tuple(masks.shape[1:])} but the ground truth {sample.size}; predictions must "
                "be returned at the original image size."
            )
        return masks

    @staticmethod
    def _union(masks: np.ndarray) -> np.ndarray:
        """``[H, W] bool`` OR of a ``[m, H, W]`` stack (all False when ``m == 0``)."""
        return masks.any(axis=0) if masks.shape[0] else np.zeros(masks.shape[1:], dtype=bool)

    def _stats(
        self, sample: Sample, query: Query, pred: np.ndarray, gt: np.ndarray, **kwargs: Any
    ) -> QueryStats:
        """:func:`~.functional.query_stats` with this metric's ignore, resolution and subset."""
        return query_stats(
            pred,
            gt,
            query.ignore if self.use_ignore else None,
            size=self.eval_size,
            group=self._group_of(sample, query),
            **kwargs,
        )

    # -- compute_metrics: numbers -> scores -------------------------------------------------------

    def compute_metrics(self, results: list) -> dict[str, float]:
        """The metric's scores over all scored queries, plus per subset when ``split_by`` is set.

        Returns:
            ``_summarize`` of all records, and ``"{subset}/{name}"`` for each of its entries when
            ``split_by`` is set.
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

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError


@METRICS.register_module()
class SegIoUMetric(QueryStatsMetric):
    """gIoU and cIoU over queries, LISA's ReasonSeg / RefCOCO protocol by default.

    Per query: the prediction's masks are binarised and OR-ed, compared with the union of the target
    masks with the ignore pixels removed, and reduced to :class:`~.functional.QueryStats`. Over the
    split: gIoU (mean per-query IoU) and cIoU (sum I / sum U) (``specs/seg_token_family.md`` §1.8,
    ``specs/platform_research.md`` §C6).

    Args:
        empty_union_iou: IoU of a query whose GT and prediction are both empty. LISA 1.0 (default),
            mmdet ``RefSegMetric`` 0.0.
        threshold, inclusive_threshold: see :class:`QueryStatsMetric` (LISA: ``logits > 0``).
        iou_eps: per-query IoU denominator epsilon (LISA 1e-5).
        giou_eps: gIoU denominator epsilon (LISA 1e-5).
        ciou_eps: cIoU denominator epsilon (LISA 1e-10).
        split_by, split_names: see :class:`QueryStatsMetric`.
        collect_device, prefix, collect_dir: as in :class:`~mmengine.evaluator.BaseMetric`.
        use_ignore, eval_size, tasks: see :class:`QueryStatsMetric`.
        rejected_as_empty: a prediction with ``exists=False`` (the model said "no target") is
            scored as an empty mask whatever masks it carries (SESAME: a query without ``[SEG]``
            gets an all-zero mask, so a wrongly rejected target scores I = 0, U = |GT|, §4.5).
            ``False`` scores its masks anyway (GSVA's re-evaluated masks).
    """

    default_prefix: str | None = "seg"
    reference = "seg_token_family.md §1.8, §4.5; platform_research.md §C6 (LISA validate)"
    _convention_keys = (
        "empty_union_iou",
        "iou_eps",
        "giou_eps",
        "ciou_eps",
        "rejected_as_empty",
    )

    def __init__(
        self,
        empty_union_iou: float = 1.0,
        threshold: float = 0.0,
        inclusive_threshold: bool = False,
        iou_eps: float = LISA_IOU_EPS,
        giou_eps: float = LISA_GIOU_EPS,
        ciou_eps: float = LISA_CIOU_EPS,
        split_by: str | None = None,
        split_names: Mapping[Any, str] | None = None,
        collect_device: str = "cpu",
        prefix: str | None = None,
        collect_dir: str | None = None,
        use_ignore: bool = True,
        eval_size: Sequence[int] | None = None,
        tasks: Sequence[str] | None = None,
        rejected_as_empty: bool = True,
    ) -> None:
        super().__init__(
            threshold=threshold,
            inclusive_threshold=inclusive_threshold,
            use_ignore=use_ignore,
            eval_size=eval_size,
            tasks=tasks,
            split_by=split_by,
            split_names=split_names,
            collect_device=collect_device,
            prefix=prefix,
            collect_dir=collect_dir,
        )
        self.empty_union_iou = float(empty_union_iou)
        self.iou_eps = float(iou_eps)
        self.giou_eps = float(giou_eps)
        self.ciou_eps = float(ciou_eps)
        self.rejected_as_empty = bool(rejected_as_empty)

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction
    ) -> QueryStats:
        pred = self._union(self._binary_masks(sample, q_idx, prediction))
        if self.rejected_as_empty and not prediction.exists:
            pred = np.zeros_like(pred)
        return self._stats(
            sample,
            query,
            pred,
            query.target,
            empty_union_iou=self.empty_union_iou,
            eps=self.iou_eps,
            gt_exists=bool(query.exists),
            pred_exists=bool(prediction.exists),
        )

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:
        scores = summarize_giou_ciou(stats, giou_eps=self.giou_eps, ciou_eps=self.ciou_eps)
        return {"gIoU": scores["gIoU"], "cIoU": scores["cIoU"], **summarize_counts(stats)}


@METRICS.register_module()
class GRESMetric(QueryStatsMetric):
    """gRefCOCO: gIoU, cIoU, N-acc, T-acc, Pr@k and TP/TN/FP/FN (``seg_token_family.md`` §4.3-4.5).

    Per query the record keeps the I/U of the binarised union of the predicted masks (whatever the
    model decided) and both target/no-target decisions; the no-target convention is applied in
    ``compute_metrics`` (:func:`~.functional.summarize_gres`), so ``nt_mode`` can be changed when
    re-scoring a prediction dump. Ground-truth "no target" is ``Query.exists == False``.

    To reproduce ReLA: ``nt_mode="rela"``, ``eval_size=(480, 480)``. To reproduce GSVA's
    ``eval_gres``: ``nt_mode="gsva"``, ``inclusive_threshold=True``, ``grefcoco=True``.

    Args:
        nt_mode: ``"rela"`` (default: a wrongly rejected target has its intersection zeroed) or
            ``"gsva"`` (IoU from the mask even when rejected); see
            :func:`~.functional.gres_term`.
        grefcoco: GSVA only: a no-target query answered with a mask adds |pred| to the cIoU union
            (GSVA's ``is_grefcoco``; False for RefZOM). ReLA always adds it.
        pred_exists: where the model's decision comes from:

            * ``"flag"`` (default): ``QueryPrediction.exists`` (GSVA's ``[REJ]``, ReLA's NT head);
            * ``"mask"``: the scored union mask is non-empty (models without a rejection decision
              that answer "no target" with an empty mask: RAS, PSALM, LISA; ``anchorseg_ras.md``
              §2.5);
            * ``"flag_and_mask"``: ``exists`` and the first mask non-empty (SESAME's rule, §3.3).
        pr_thresholds: thresholds of Pr@t (ReLA: 0.7, 0.8, 0.9).
        iou_eps: per-query IoU epsilon; None uses the mode's (ReLA 0, GSVA 1e-8).
        threshold, inclusive_threshold, use_ignore, eval_size, tasks, split_by, split_names,
        collect_device, prefix, collect_dir: see :class:`QueryStatsMetric`.
    """

    default_prefix: str | None = "gres"
    reference = "seg_token_family.md §4.3 (GSVA eval_gres), §4.4 (ReLA), §4.5; platform_research.md §C6"
    _convention_keys = ("nt_mode", "grefcoco", "pred_exists", "pr_thresholds", "iou_eps")

    def __init__(
        self,
        nt_mode: str = "rela",
        grefcoco: bool = True,
        pred_exists: str = "flag",
        pr_thresholds: Sequence[float] = RELA_PR_THRESHOLDS,
        iou_eps: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if nt_mode not in GRES_NT_MODES:
            raise ValueError(f"nt_mode must be one of {GRES_NT_MODES}, got {nt_mode!r}.")
        if pred_exists not in PRED_EXISTS_RULES:
            raise ValueError(f"pred_exists must be one of {PRED_EXISTS_RULES}, got {pred_exists!r}.")
        self.nt_mode = nt_mode
        self.grefcoco = bool(grefcoco)
        self.pred_exists = pred_exists
        self.pr_thresholds = tuple(float(t) for t in pr_thresholds)
        self.iou_eps = None if iou_eps is None else float(iou_eps)

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction
    ) -> QueryStats:
        masks = self._binary_masks(sample, q_idx, prediction)
        if self.pred_exists == "flag":
            decision: bool | None = bool(prediction.exists)
        elif self.pred_exists == "mask":
            decision = None  # derived from the scored mask (functional.pred_has_target)
        else:
            decision = bool(prediction.exists) and masks.shape[0] > 0 and bool(masks[0].any())
        return self._stats(
            sample,
            query,
            self._union(masks),
            query.target,
            eps=0.0,
            gt_exists=bool(query.exists),
            pred_exists=decision,
        )

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:
        return summarize_gres(
            stats,
            nt_mode=self.nt_mode,
            grefcoco=self.grefcoco,
            iou_eps=self.iou_eps,
            pr_thresholds=self.pr_thresholds,
        )


@METRICS.register_module()
class FalsePremiseMetric(QueryStatsMetric):
    """SESAME's See and Segment on FP-RefCOCO / R-RefCOCO (``seg_token_family.md`` §3.3).

    Per query, as ``SESAME:eval_sesame.py``:

    * the predicted mask is the **first** mask binarised (``first_mask_only``), if the prediction
      has ``exists=True`` and at least one mask ("a ``[SEG]`` was generated"); otherwise all-zero;
    * pred_exists = that mask has a positive pixel (before ignore/resizing), i.e. "``[SEG]``
      generated AND its first mask non-empty". The answer text is not parsed;
    * gt_exists = ``Query.exists``; a false premise is scored against an all-zero ground truth.

    Reported: ``See`` (existence accuracy), ``Segment`` (cIoU over all queries), ``cIoU`` (the
    same number under its usual name), ``gIoU`` (over all queries, ``empty_union_iou`` for a
    correctly rejected false premise; SESAME reports none), ``true_premise/gIoU`` and
    ``true_premise/cIoU`` (the plain RefCOCO numbers on the true premises), and counts.

    Args:
        first_mask_only: keep only the first mask (SESAME). ``False`` ORs all the masks.
        empty_union_iou: gIoU term of an empty GT answered with an empty mask (LISA 1.0).
        iou_eps, giou_eps, ciou_eps: LISA's epsilons (SESAME uses LISA's ``intersectionAndUnion``).
        threshold, inclusive_threshold, use_ignore, eval_size, tasks, split_by, split_names,
        collect_device, prefix, collect_dir: see :class:`QueryStatsMetric`.
    """

    default_prefix: str | None = "fp"
    reference = "seg_token_family.md §3.3 (SESAME eval_sesame.py), §4.5; platform_research.md §C6"
    _convention_keys = ("first_mask_only", "empty_union_iou", "iou_eps", "giou_eps", "ciou_eps")

    def __init__(
        self,
        first_mask_only: bool = True,
        empty_union_iou: float = 1.0,
        iou_eps: float = LISA_IOU_EPS,
        giou_eps: float = LISA_GIOU_EPS,
        ciou_eps: float = LISA_CIOU_EPS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.first_mask_only = bool(first_mask_only)
        self.empty_union_iou = float(empty_union_iou)
        self.iou_eps = float(iou_eps)
        self.giou_eps = float(giou_eps)
        self.ciou_eps = float(ciou_eps)

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction
    ) -> QueryStats:
        masks = self._binary_masks(sample, q_idx, prediction)
        if prediction.exists and masks.shape[0] > 0:
            pred = masks[0] if self.first_mask_only else masks.any(axis=0)
        else:
            pred = np.zeros(sample.size, dtype=bool)
        gt = query.target if query.exists else np.zeros(sample.size, dtype=bool)
        return self._stats(
            sample,
            query,
            pred,
            gt,
            empty_union_iou=self.empty_union_iou,
            eps=self.iou_eps,
            gt_exists=bool(query.exists),
            pred_exists=bool(pred.any()),
        )

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:
        see = summarize_see_segment(stats, ciou_eps=self.ciou_eps)
        every = summarize_giou_ciou(stats, giou_eps=self.giou_eps, ciou_eps=self.ciou_eps)
        true = summarize_giou_ciou(
            [s for s in stats if gt_has_target(s)], giou_eps=self.giou_eps, ciou_eps=self.ciou_eps
        )
        return {
            "See": see["See"],
            "Segment": see["Segment"],
            "gIoU": every["gIoU"],
            "cIoU": every["cIoU"],
            "true_premise/gIoU": true["gIoU"],
            "true_premise/cIoU": true["cIoU"],
            "n_queries": see["n_queries"],
            "n_false_premise": see["n_false_premise"],
            "n_pred_absent": see["n_pred_absent"],
            "n_see_correct": see["n_see_correct"],
        }


@METRICS.register_module()
class ORESMetric(QueryStatsMetric):
    """MaskGroups-HQ ORES: gIoU/cIoU overall, text-only and hybrid (``anchorseg_ras.md`` §2.5).

    Per query: prediction = union of the selected candidate masks, GT = union of the GT group
    (``Query.masks``); a query is "hybrid" when it has ``reference_masks`` (at least one), else
    "text" (``platform_research.md`` §C5). An empty GT scores 1 if the prediction is empty, else 0.

    Args:
        use_selected: when a prediction has ``selected`` indices, the prediction is the union of
            those candidates of the pool the model used (``QueryPrediction.pool``; for a prediction
            that carries none, ``Sample.candidate_masks``); otherwise (or with ``False``) the union of
            the predicted masks.
        rejected_as_empty: a prediction with ``exists=False`` is an empty prediction.
        empty_union_iou: gIoU term of an empty GT answered with an empty prediction (1.0).
        iou_eps: per-query IoU epsilon (0: the RAS/PSALM evaluators' exact I / U, a guess,
            ``anchorseg_ras.md`` §2.5).
        threshold, inclusive_threshold, use_ignore, eval_size, tasks, split_by, split_names,
        collect_device, prefix, collect_dir: see :class:`QueryStatsMetric`.
    """

    default_prefix: str | None = "ores"
    reference = "anchorseg_ras.md §2.5; platform_research.md §C5"
    _convention_keys = ("use_selected", "rejected_as_empty", "empty_union_iou", "iou_eps")

    def __init__(
        self,
        use_selected: bool = True,
        rejected_as_empty: bool = True,
        empty_union_iou: float = 1.0,
        iou_eps: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.use_selected = bool(use_selected)
        self.rejected_as_empty = bool(rejected_as_empty)
        self.empty_union_iou = float(empty_union_iou)
        self.iou_eps = float(iou_eps)

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction
    ) -> QueryStats:
        selected = prediction.selected
        if self.use_selected and selected is not None:
            pool = prediction.pool if prediction.pool is not None else sample.candidate_masks
            if pool is None:
                raise ValueError(
                    f"sample {sample.sample_id!r}, query {q_idx}: the prediction selects candidates "
                    f"{list(selected)} but neither it nor the sample carries a candidate pool; give the "
                    "dataset its pool or set use_selected=False to score the predicted masks."
                )
            pool = np.asarray(pool, dtype=bool)
            idx = [int(i) for i in selected]
            pred = pool[idx].any(axis=0) if idx else np.zeros(sample.size, dtype=bool)
            if tuple(pred.shape) != sample.size:
                raise ValueError(
                    f"sample {sample.sample_id!r}: candidate_masks are {tuple(pool.shape)}, not at "
                    f"the image size {sample.size}."
                )
        else:
            pred = self._union(self._binary_masks(sample, q_idx, prediction))
        if self.rejected_as_empty and not prediction.exists:
            pred = np.zeros_like(pred)
        refs = query.reference_masks
        return self._stats(
            sample,
            query,
            pred,
            query.target,
            empty_union_iou=self.empty_union_iou,
            eps=self.iou_eps,
            gt_exists=bool(query.exists),
            pred_exists=bool(prediction.exists),
            hybrid=refs is not None and len(refs) > 0,
            n_selected=None if selected is None else len(selected),
        )

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:
        out = summarize_ores(stats)
        counts = summarize_counts(stats)
        out["n_empty_gt"] = counts["n_empty_gt"]
        out["n_empty_pred"] = counts["n_empty_pred"]
        return out


@METRICS.register_module()
class PoolOracleMetric(QueryStatsMetric):
    """Oracle gIoU/cIoU of the samples' candidate pools (``anchorseg_ras.md`` §2.5).

    Per query: :func:`~.functional.oracle_selection` of ``Sample.candidate_masks`` against the
    query's target instances (the ignore mask plays no part in the selection), scored like ORES
    (empty GT: 1 if nothing is selected, else 0; exact I / U). No model prediction is used, only the
    ``sample_id`` of the outputs (``predictions`` may be absent). Queries of samples without a pool
    are not scored; ``n_queries_without_pool`` counts them.

    Args:
        rule: ``"coverage"`` (default: candidates covered > ``thr`` by the target) or
            ``"best_per_instance"`` (the best-IoU candidate of every target instance).
        thr: the coverage threshold (0.5).
        empty_union_iou: gIoU term of an empty GT with nothing selected (1.0).
        threshold, inclusive_threshold: unused (pools are bool masks); kept for a uniform API.
        use_ignore, eval_size, tasks, split_by, split_names, collect_device, prefix, collect_dir:
            see :class:`QueryStatsMetric`.
    """

    default_prefix: str | None = "oracle"
    reference = "anchorseg_ras.md §2.5 (oracle cIoU of the candidate pool; protocol a guess)"
    needs_predictions = False
    _convention_keys = ("rule", "thr", "empty_union_iou")

    def __init__(
        self,
        rule: str = "coverage",
        thr: float = 0.5,
        empty_union_iou: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if rule not in ORACLE_RULES:
            raise ValueError(f"rule must be one of {ORACLE_RULES}, got {rule!r}.")
        self.rule = rule
        self.thr = float(thr)
        self.empty_union_iou = float(empty_union_iou)

    def _score(
        self, sample: Sample, q_idx: int, query: Query, prediction: QueryPrediction | None
    ) -> QueryStats | None:
        if sample.candidate_masks is None:
            return None
        pool = np.asarray(sample.candidate_masks, dtype=bool)
        if pool.ndim != 3 or tuple(pool.shape[1:]) != sample.size:
            raise ValueError(
                f"sample {sample.sample_id!r}: candidate_masks must be [N, H, W] at the image size "
                f"{sample.size}, got {tuple(pool.shape)}."
            )
        selected = oracle_selection(pool, query.masks, rule=self.rule, thr=self.thr)
        pred = pool[selected].any(axis=0) if selected else np.zeros(sample.size, dtype=bool)
        return self._stats(
            sample,
            query,
            pred,
            query.target,
            empty_union_iou=self.empty_union_iou,
            eps=0.0,
            gt_exists=bool(query.exists),
            n_selected=len(selected),
        )

    def _summarize(self, stats: list[QueryStats]) -> dict[str, Any]:
        return summarize_pool_oracle(stats)

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics = super().compute_metrics(results)
        metrics["n_queries_without_pool"] = sum(int(r.get("n_unscored", 0)) for r in results)
        return metrics


def evaluator_conventions(metrics: Iterable[Any]) -> list[dict[str, Any]]:
    """:meth:`QueryStatsMetric.conventions` of every metric (an mmengine ``Evaluator``'s
    ``.metrics`` or a list), ``{"metric": name}`` for metrics that have none."""
    if hasattr(metrics, "metrics"):
        metrics = metrics.metrics
    out = []
    for m in metrics:
        conv = getattr(m, "conventions", None)
        out.append(conv() if callable(conv) else {"metric": type(m).__name__})
    return out
