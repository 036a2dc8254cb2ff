"""Functional segmentation metrics: masks in, per-query statistics out, reductions over them.

Two layers, both pure:

1. *Per query*: :func:`intersection_union` and :func:`query_iou` turn one binary prediction, its
   ground truth and an optional ignore mask into the handful of numbers a metric needs, gathered in
   a :class:`QueryStats` record (:func:`query_stats`). Masks never leave this layer.
2. *Reductions*: functions of a sequence of :class:`QueryStats` (:func:`summarize_giou_ciou`,
   :func:`summarize_counts`). Other protocols (GRES N-acc/T-acc/Pr@k under the ReLA or GSVA
   no-target rule, SESAME See/Segment, ORES) are further reductions over the same records: a record
   keeps the areas and the existence decisions, from which each convention's I/U can be rebuilt.

Conventions follow the official codes; where they disagree the choice is a named argument whose
default is LISA's (``specs/seg_token_family.md`` §1.8, §4.5; ``specs/platform_research.md`` §C6).
Scores are fractions in [0, 1]; papers print 100x these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]

#: LISA's per-query IoU epsilon: IoU = I / (U + 1e-5) (``seg_token_family.md`` §1.8).
LISA_IOU_EPS = 1e-5
#: LISA's gIoU denominator epsilon: gIoU = sum(IoU) / (N + 1e-5) (``seg_token_family.md`` §1.8).
LISA_GIOU_EPS = 1e-5
#: LISA's cIoU denominator epsilon: cIoU = sum(I) / (sum(U) + 1e-10) (``seg_token_family.md``
#: §1.8).
LISA_CIOU_EPS = 1e-10


@dataclass
class QueryStats:
    """The sufficient statistics of one scored query (a few numbers, never a mask).

    Pixel counts are taken after removing ignored pixels (``seg_token_family.md`` §1.8), so
    ``U == gt_area + pred_area - I`` always holds.

    Attributes:
        I: intersection |pred & gt| in pixels.
        U: union |pred | gt| in pixels.
        iou: the per-query IoU under the convention it was computed with (:func:`query_iou`).
        gt_empty: the ground truth has no (non-ignored) pixel.
        pred_empty: the binarised prediction has no (non-ignored) pixel.
        gt_area: |gt| in pixels.
        pred_area: |pred| in pixels.
        gt_exists: the dataset's target/no-target label (false premises, gRefCOCO no-target), or
            None when the dataset has none.
        pred_exists: the model's target/no-target decision (``[REJ]``, "no ``[SEG]``", NT head),
            or None when the model makes none.
        group: the subset the query belongs to (e.g. ``"short"``/``"long"`` for ReasonSeg), or None.
    """

    I: int
    U: int
    iou: float
    gt_empty: bool
    pred_empty: bool
    gt_area: int = 0
    pred_area: int = 0
    gt_exists: Optional[bool] = None
    pred_exists: Optional[bool] = None
    group: Optional[str] = None


def _as_bool_numpy(mask: ArrayLike, name: str) -> np.ndarray:
    """``mask`` as a numpy bool array; 0/1 integers are accepted, logits are refused."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.integer):
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise ValueError(
                f"{name} must be binary (0/1 or bool); got values in [{mask.min()}, {mask.max()}]. "
                "Encoded ignore labels (ReasonSeg's 255) go in the separate `ignore` mask."
            )
        return mask.astype(bool)
    raise TypeError(
        f"{name} must be a bool (or 0/1 integer) mask, got dtype {mask.dtype}; "
        "binarise logits first with `binarize(logits)`."
    )


def _scored_pixels(
    pred: ArrayLike, gt: ArrayLike, ignore: Optional[ArrayLike]
) -> tuple[np.ndarray, np.ndarray]:
    """``(pred, gt)`` as ``[H, W] bool`` numpy arrays with the ignored pixels cleared."""
    pred_b = _as_bool_numpy(pred, "pred")
    gt_b = _as_bool_numpy(gt, "gt")
    if pred_b.shape != gt_b.shape:
        raise ValueError(
            f"pred and gt must have the same shape (predictions are scored at the original image "
            f"size); got pred {pred_b.shape} and gt {gt_b.shape}."
        )
    if ignore is not None:
        ignore_b = _as_bool_numpy(ignore, "ignore")
        if ignore_b.shape != gt_b.shape:
            raise ValueError(f"ignore must have shape {gt_b.shape}, got {ignore_b.shape}.")
        keep = ~ignore_b
        pred_b = pred_b & keep
        gt_b = gt_b & keep
    return pred_b, gt_b


def binarize(logits: ArrayLike, threshold: float = 0.0, inclusive: bool = False) -> ArrayLike:
    """Binarise mask logits.

    ``inclusive=False`` is LISA/READ/SESAME's ``logits > 0``; ``inclusive=True`` is GSVA's
    ``logits >= 0`` (``seg_token_family.md`` §4.5). The two differ only on logits exactly equal to
    ``threshold``.

    Args:
        logits: ``[..., H, W]`` float logits (numpy or torch); a bool input is returned unchanged.
        threshold: the logit threshold (0.0 is probability 0.5).
        inclusive: count ``logits == threshold`` as foreground.

    Returns:
        ``[..., H, W] bool`` of the input's kind (numpy array or torch tensor).
    """
    if isinstance(logits, torch.Tensor):
        if logits.dtype == torch.bool:
            return logits
    else:
        logits = np.asarray(logits)
        if logits.dtype == np.bool_:
            return logits
    return logits >= threshold if inclusive else logits > threshold


def intersection_union(
    pred: ArrayLike, gt: ArrayLike, ignore: Optional[ArrayLike] = None
) -> tuple[int, int]:
    """Foreground intersection and union of one query, ignored pixels excluded.

    Ignored pixels leave both I and U, as in LISA's ``intersectionAndUnionGPU`` with
    ``ignore_index=255`` (``seg_token_family.md`` §1.8).

    Args:
        pred: ``[H, W] bool`` binarised prediction (numpy or torch; 0/1 integers accepted).
        gt: ``[H, W] bool`` ground truth (the union of the target masks).
        ignore: ``[H, W] bool`` pixels excluded from scoring, or None.

    Returns:
        ``(I, U)`` as python ints.
    """
    pred_b, gt_b = _scored_pixels(pred, gt, ignore)
    inter = int(np.count_nonzero(pred_b & gt_b))
    union = int(np.count_nonzero(pred_b | gt_b))
    return inter, union


def query_iou(
    I: float, U: float, empty_union_iou: float = 1.0, eps: float = LISA_IOU_EPS
) -> float:
    """IoU of one query with an explicit convention for an empty union.

    LISA (the default): ``I / (U + 1e-5)``, and 1.0 when ``U == 0``, i.e. an empty ground truth
    answered with an empty prediction scores 1 (``seg_token_family.md`` §1.8). mmdet's
    ``RefSegMetric`` scores that case 0: pass ``empty_union_iou=0.0``
    (``platform_research.md`` §C6). An empty ground truth with a non-empty prediction has
    ``I == 0 < U`` and scores 0 under every convention.

    Args:
        I: intersection in pixels.
        U: union in pixels.
        empty_union_iou: the score when ``U == 0``.
        eps: added to the denominator when ``U > 0`` (LISA 1e-5, GSVA 1e-8, ReLA/mmdet none).

    Returns:
        the IoU as a python float.
    """
    if I < 0 or U < 0 or I > U:
        raise ValueError(f"need 0 <= I <= U, got I={I}, U={U}.")
    if U == 0:
        return float(empty_union_iou)
    return float(I) / (float(U) + eps)


def query_stats(
    pred: ArrayLike,
    gt: ArrayLike,
    ignore: Optional[ArrayLike] = None,
    *,
    empty_union_iou: float = 1.0,
    eps: float = LISA_IOU_EPS,
    gt_exists: Optional[bool] = None,
    pred_exists: Optional[bool] = None,
    group: Optional[str] = None,
) -> QueryStats:
    """The :class:`QueryStats` of one query (:func:`intersection_union` + :func:`query_iou`).

    Args:
        pred: ``[H, W] bool`` binarised prediction.
        gt: ``[H, W] bool`` ground truth.
        ignore: ``[H, W] bool`` ignored pixels, or None.
        empty_union_iou, eps: see :func:`query_iou`.
        gt_exists, pred_exists, group: copied into the record (see :class:`QueryStats`).
    """
    pred_b, gt_b = _scored_pixels(pred, gt, ignore)
    inter = int(np.count_nonzero(pred_b & gt_b))
    union = int(np.count_nonzero(pred_b | gt_b))
    gt_area = int(np.count_nonzero(gt_b))
    pred_area = int(np.count_nonzero(pred_b))
    return QueryStats(
        I=inter,
        U=union,
        iou=query_iou(inter, union, empty_union_iou=empty_union_iou, eps=eps),
        gt_empty=gt_area == 0,
        pred_empty=pred_area == 0,
        gt_area=gt_area,
        pred_area=pred_area,
        gt_exists=gt_exists,
        pred_exists=pred_exists,
        group=group,
    )


def summarize_giou_ciou(
    stats: Iterable[QueryStats],
    giou_eps: float = LISA_GIOU_EPS,
    ciou_eps: float = LISA_CIOU_EPS,
) -> dict[str, Any]:
    """gIoU and cIoU over queries (``seg_token_family.md`` §1.8, ``platform_research.md`` §C6).

    * gIoU = sum_k IoU_k / (N + giou_eps): the mean per-**query** IoU (not per image).
    * cIoU = sum_k I_k / (sum_k U_k + ciou_eps): cumulative intersection over cumulative union.

    The epsilons default to LISA's. With no query both scores are ``nan`` (nothing was scored).

    Args:
        stats: per-query records.

    Returns:
        ``{"gIoU": float, "cIoU": float, "n": int}``.
    """
    stats = list(stats)
    n = len(stats)
    if n == 0:
        return {"gIoU": float("nan"), "cIoU": float("nan"), "n": 0}
    iou_sum = sum(s.iou for s in stats)
    inter_sum = sum(s.I for s in stats)
    union_sum = sum(s.U for s in stats)
    return {
        "gIoU": float(iou_sum / (n + giou_eps)),
        "cIoU": float(inter_sum / (union_sum + ciou_eps)),
        "n": n,
    }


def summarize_counts(stats: Sequence[QueryStats]) -> dict[str, int]:
    """Counts that let a number be reconciled with any paper (``platform_research.md`` §C6).

    Returns:
        ``{"n_queries", "n_empty_gt", "n_empty_pred"}`` as python ints.
    """
    return {
        "n_queries": len(stats),
        "n_empty_gt": sum(1 for s in stats if s.gt_empty),
        "n_empty_pred": sum(1 for s in stats if s.pred_empty),
    }
