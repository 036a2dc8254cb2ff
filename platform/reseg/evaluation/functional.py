"""Functional segmentation metrics: masks in, per-query statistics out, reductions over them.

Two layers, both pure:

1. *Per query*: :func:`intersection_union` and :func:`query_iou` turn one binary prediction, its
   ground truth and an optional ignore mask into the handful of numbers a metric needs, gathered in
   a :class:`QueryStats` record (:func:`query_stats`). Masks never leave this layer.
2. *Reductions*: functions of a sequence of :class:`QueryStats`: :func:`summarize_giou_ciou`,
   :func:`summarize_counts` (RES, ReasonSeg), :func:`summarize_gres` (gRefCOCO: N-acc/T-acc/Pr@k
   under the ReLA or GSVA no-target rule), :func:`summarize_see_segment` (SESAME's false-premise
   See/Segment), :func:`summarize_ores` (ORES text/hybrid/overall) and :func:`summarize_pool_oracle`
   (the best a selection head could do with a candidate pool, :func:`oracle_selection`). A record
   keeps the areas and the existence decisions, from which each convention's I/U is rebuilt, so the
   no-target rule is chosen at reduction time, not when the masks are scored.

Conventions follow the official codes; where they disagree the choice is a named argument whose
default is LISA's (``specs/seg_token_family.md`` §1.8, §4.5; ``specs/platform_research.md`` §C6).
Scores are fractions in [0, 1]; papers print 100x these.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor

#: LISA's per-query IoU epsilon: IoU = I / (U + 1e-5) (``seg_token_family.md`` §1.8).
LISA_IOU_EPS = 1e-5
#: LISA's gIoU denominator epsilon: gIoU = sum(IoU) / (N + 1e-5) (``seg_token_family.md`` §1.8).
LISA_GIOU_EPS = 1e-5
#: LISA's cIoU denominator epsilon: cIoU = sum(I) / (sum(U) + 1e-10) (``seg_token_family.md``
#: §1.8).
LISA_CIOU_EPS = 1e-10
#: GSVA's per-expression IoU epsilon: IoU = I / (U + 1e-8) (``seg_token_family.md`` §4.3).
GSVA_IOU_EPS = 1e-8
#: The no-target conventions of :func:`summarize_gres` (``seg_token_family.md`` §4.3, §4.4).
GRES_NT_MODES = ("rela", "gsva")
#: ReLA's precision thresholds (``seg_token_family.md`` §4.4).
RELA_PR_THRESHOLDS = (0.7, 0.8, 0.9)
#: Candidate-pool oracle rules of :func:`oracle_selection` (``anchorseg_ras.md`` §2.5).
ORACLE_RULES = ("coverage", "best_per_instance")


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
        hybrid: ORES only: the query came with reference masks (a "hybrid" text + mask prompt),
            False for a text-only prompt, None outside ORES.
        n_selected: candidate-pool metrics only: how many candidates formed the prediction.
    """

    I: int
    U: int
    iou: float
    gt_empty: bool
    pred_empty: bool
    gt_area: int = 0
    pred_area: int = 0
    gt_exists: bool | None = None
    pred_exists: bool | None = None
    group: str | None = None
    hybrid: bool | None = None
    n_selected: int | None = None


def _ratio(num: float, den: float) -> float:
    """``num / den`` as a float, ``nan`` when the denominator is 0 (nothing to measure)."""
    return float(num) / float(den) if den != 0 else float("nan")


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
    pred: ArrayLike, gt: ArrayLike, ignore: ArrayLike | None
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


def binarize_stack(
    masks: ArrayLike, threshold: float = 0.0, inclusive: bool = False
) -> np.ndarray:
    """A model's mask output as a ``[m, H, W] bool`` numpy stack (:func:`binarize` on each mask).

    Accepts what :class:`~reseg.structures.QueryPrediction` holds: ``[m, H, W]`` or ``[H, W]`` float
    logits or bool masks, numpy or torch (bool tensors are kept as they are, never re-thresholded).

    Args:
        masks: ``[m, H, W]`` or ``[H, W]`` logits or bool masks (``m == 0`` allowed).
        threshold, inclusive: see :func:`binarize`.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu()
        b = masks if masks.dtype == torch.bool else binarize(masks.float(), threshold, inclusive)
        b = b.numpy()
    else:
        b = np.asarray(binarize(np.asarray(masks), threshold, inclusive), dtype=bool)
    if b.ndim == 2:
        b = b[None]
    if b.ndim != 3:
        raise ValueError(f"masks must be [m, H, W] or [H, W], got shape {tuple(b.shape)}.")
    return b


def resize_nearest(mask: ArrayLike, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a ``[H, W]`` mask to ``size = (h, w)``.

    Output pixel ``(i, j)`` takes input pixel ``(floor((i + 0.5) * H / h), floor((j + 0.5) * W / w))``:
    the input pixel under the output pixel's centre (PIL's ``NEAREST``, used by detectron2's
    ``ResizeTransform`` for ReLA's segmentation maps, ``seg_token_family.md`` §4.4).

    Args:
        mask: ``[H, W] bool`` (numpy or torch; 0/1 integers accepted).
        size: ``(h, w)``, the output size.

    Returns:
        ``[h, w] bool`` numpy array.
    """
    m = _as_bool_numpy(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"resize_nearest expects a [H, W] mask, got shape {m.shape}.")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}.")
    H, W = m.shape
    rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    return m[rows[:, None], cols[None, :]]


def intersection_union(
    pred: ArrayLike, gt: ArrayLike, ignore: ArrayLike | None = None
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
    ignore: ArrayLike | None = None,
    *,
    empty_union_iou: float = 1.0,
    eps: float = LISA_IOU_EPS,
    gt_exists: bool | None = None,
    pred_exists: bool | None = None,
    group: str | None = None,
    size: tuple[int, int] | None = None,
    hybrid: bool | None = None,
    n_selected: int | None = None,
) -> QueryStats:
    """The :class:`QueryStats` of one query (:func:`intersection_union` + :func:`query_iou`).

    Args:
        pred: ``[H, W] bool`` binarised prediction.
        gt: ``[H, W] bool`` ground truth.
        ignore: ``[H, W] bool`` ignored pixels, or None.
        empty_union_iou, eps: see :func:`query_iou`.
        gt_exists, pred_exists, group, hybrid, n_selected: copied into the record
            (see :class:`QueryStats`).
        size: ``(h, w)`` to score at instead of the original size: ``pred``, ``gt`` and ``ignore``
            are first resized with :func:`resize_nearest` (ReLA scores at 480x480,
            ``seg_token_family.md`` §4.4). None (default, LISA/GSVA/SESAME) scores at the
            original size.
    """
    pred_b, gt_b = _scored_pixels(pred, gt, ignore)
    if size is not None:
        # Nearest resizing only picks pixels, so clearing the ignored ones first is the same as
        # resizing pred, gt and ignore and clearing after.
        pred_b, gt_b = resize_nearest(pred_b, size), resize_nearest(gt_b, size)
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
        hybrid=hybrid,
        n_selected=n_selected,
    )


def summarize_giou_ciou(
    stats: Iterable[QueryStats],
    giou_eps: float = LISA_GIOU_EPS,
    ciou_eps: float = LISA_CIOU_EPS,
) -> dict[str, Any]:
    """gIoU and cIoU over queries (``seg_token_family.md`` §1.8, ``platform_research.md`` §C6).

    * gIoU = sum_k IoU_k / (N + giou_eps): the mean per-**query** IoU (not per image).
    * cIoU = sum_k I_k / (sum_k U_k + ciou_eps): cumulative intersection over cumulative union.

    The epsilons default to LISA's. With no query both scores are ``nan`` (nothing was scored), and
    so is cIoU when ``ciou_eps == 0`` and every union is empty.

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
        "cIoU": _ratio(inter_sum, union_sum + ciou_eps),
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


# -- target / no-target decisions -----------------------------------------------------------------

def gt_has_target(s: QueryStats) -> bool:
    """The ground truth's target/no-target label of a record.

    The dataset's label (``gt_exists``: gRefCOCO no-target, false premise) when it has one, else
    "the ground truth has a (non-ignored) pixel".
    """
    return bool(s.gt_exists) if s.gt_exists is not None else not s.gt_empty


def pred_has_target(s: QueryStats) -> bool:
    """The model's target/no-target decision of a record.

    The model's own decision (``pred_exists``: ``[REJ]``, an NT head, SESAME's "``[SEG]`` generated
    and its mask non-empty") when the record has one, else "the scored prediction has a pixel"
    (models that answer "no target" with an empty mask: RAS, PSALM; ``anchorseg_ras.md`` §2.5).
    """
    return bool(s.pred_exists) if s.pred_exists is not None else not s.pred_empty


# -- GRES (gRefCOCO) -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GRESTerm:
    """What one record contributes to the GRES scores under a no-target convention.

    Attributes:
        outcome: ``"TP"`` (no-target GT, rejected), ``"FN"`` (no-target GT, answered with a target),
            ``"TN"`` (target GT, answered), ``"FP"`` (target GT, wrongly rejected). The names are
            ReLA's: "positive" means "no target".
        iou: the gIoU term.
        I: the intersection added to cIoU.
        U: the union added to cIoU.
    """

    outcome: str
    iou: float
    I: int
    U: int


def gres_term(
    s: QueryStats,
    nt_mode: str = "rela",
    grefcoco: bool = True,
    iou_eps: float | None = None,
) -> GRESTerm:
    """One record's gIoU term, cIoU I/U and no-target outcome (``seg_token_family.md`` §4.3-4.5).

    Both conventions agree on no-target ground truths: rejected (TP) scores 1 and adds nothing to
    cIoU; answered (FN) scores 0 and adds the predicted area to the cIoU union. They differ on:

    * ``nt_mode="rela"`` (ReLA ``ReferEvaluator.evaluate``, the gRefCOCO reference, §4.4): a target
      wrongly rejected (FP) has its intersection zeroed: IoU 0, I 0, U = |pred ∪ gt|. A target
      answered (TN) scores I / U, 0 when U == 0. FN adds U = |pred ∪ gt| (= |pred|).
    * ``nt_mode="gsva"`` (GSVA ``solver.py::eval_gres``, §4.3): FP and TN are both scored from the
      mask, I / (U + 1e-8), the intersection is never zeroed. FN adds |pred| to the union only when
      ``grefcoco`` (GSVA's ``is_grefcoco``; on RefZOM it adds nothing).

    Target/no-target come from :func:`gt_has_target` and :func:`pred_has_target`.

    Args:
        s: the record (its I, U and areas are of the binarised prediction, whatever the decision).
        nt_mode: ``"rela"`` or ``"gsva"``.
        grefcoco: GSVA only: add the FN union (see above). ReLA always adds it.
        iou_eps: per-query IoU epsilon; None is the mode's own (ReLA 0, GSVA 1e-8).
    """
    if nt_mode not in GRES_NT_MODES:
        raise ValueError(f"nt_mode must be one of {GRES_NT_MODES}, got {nt_mode!r}.")
    eps = (0.0 if nt_mode == "rela" else GSVA_IOU_EPS) if iou_eps is None else float(iou_eps)
    gt_t, pred_t = gt_has_target(s), pred_has_target(s)
    if not gt_t:
        if not pred_t:
            return GRESTerm("TP", 1.0, 0, 0)
        if nt_mode == "rela":
            return GRESTerm("FN", 0.0, 0, s.U)
        return GRESTerm("FN", 0.0, 0, s.pred_area if grefcoco else 0)
    outcome = "TN" if pred_t else "FP"
    if outcome == "FP" and nt_mode == "rela":
        return GRESTerm("FP", 0.0, 0, s.U)
    den = s.U + eps
    return GRESTerm(outcome, float(s.I) / den if den > 0 else 0.0, s.I, s.U)


def summarize_gres(
    stats: Sequence[QueryStats],
    nt_mode: str = "rela",
    grefcoco: bool = True,
    iou_eps: float | None = None,
    pr_thresholds: Sequence[float] = RELA_PR_THRESHOLDS,
) -> dict[str, Any]:
    """gRefCOCO scores under a no-target convention (``seg_token_family.md`` §4.3, §4.4).

    With the terms of :func:`gres_term`:

    * gIoU = mean of the terms over all queries (no epsilon);
    * cIoU = sum I / sum U (``nan`` if sum U == 0);
    * N-acc = TP / (TP + FN), the no-target recall; T-acc = TN / (TN + FP), the share of target
      queries not rejected (``nan`` when there is no such query);
    * Pr@t = share of **target** queries whose term is >= t (ReLA's Pr@0.7/0.8/0.9);
    * the counts TP, TN, FP, FN, ``n_queries``, ``n_no_target`` are always reported, so a number can
      be reconciled with either paper.

    Args:
        stats: per-query records.
        nt_mode, grefcoco, iou_eps: see :func:`gres_term`.
        pr_thresholds: the Pr@t thresholds.

    Returns:
        ``{"gIoU", "cIoU", "N-acc", "T-acc", "Pr@0.7", ..., "TP", "TN", "FP", "FN", "n_queries",
        "n_no_target"}``.
    """
    terms = [gres_term(s, nt_mode, grefcoco, iou_eps) for s in stats]
    n = len(terms)
    count = {k: sum(1 for t in terms if t.outcome == k) for k in ("TP", "TN", "FP", "FN")}
    targets = [t for t in terms if t.outcome in ("TN", "FP")]
    out: dict[str, Any] = {
        "gIoU": _ratio(sum(t.iou for t in terms), n),
        "cIoU": _ratio(sum(t.I for t in terms), sum(t.U for t in terms)),
        "N-acc": _ratio(count["TP"], count["TP"] + count["FN"]),
        "T-acc": _ratio(count["TN"], count["TN"] + count["FP"]),
    }
    for thr in pr_thresholds:
        out[f"Pr@{thr:g}"] = _ratio(sum(1 for t in targets if t.iou >= thr), len(targets))
    out.update(count)
    out["n_queries"] = n
    out["n_no_target"] = count["TP"] + count["FN"]
    return out


# -- SESAME false premises -------------------------------------------------------------------------

def summarize_see_segment(
    stats: Sequence[QueryStats], ciou_eps: float = LISA_CIOU_EPS
) -> dict[str, Any]:
    """SESAME's See and Segment over all queries, true and false premises (``seg_token_family.md`` §3.3).

    * See = sum_q 1[pred_exists_q == gt_exists_q] / N (:func:`pred_has_target`,
      :func:`gt_has_target`);
    * Segment = sum_q I_q / (sum_q U_q + 1e-10), the cIoU over **all** queries. The records must
      have been scored against an all-zero ground truth for false premises and an all-zero
      prediction for queries the model answered "absent" (the metric does both), so a false premise
      answered with a mask adds its area to U, and a true premise answered "absent" adds |GT|.

    Returns:
        ``{"See", "Segment", "n_queries", "n_see_correct", "n_false_premise", "n_pred_absent"}``.
    """
    n = len(stats)
    correct = sum(1 for s in stats if pred_has_target(s) == gt_has_target(s))
    segment = summarize_giou_ciou(stats, ciou_eps=ciou_eps)["cIoU"]
    return {
        "See": _ratio(correct, n),
        "Segment": segment,
        "n_queries": n,
        "n_see_correct": correct,
        "n_false_premise": sum(1 for s in stats if not gt_has_target(s)),
        "n_pred_absent": sum(1 for s in stats if not pred_has_target(s)),
    }


# -- ORES (MaskGroups-HQ) --------------------------------------------------------------------------

def summarize_ores(
    stats: Sequence[QueryStats], giou_eps: float = 0.0, ciou_eps: float = 0.0
) -> dict[str, Any]:
    """ORES gIoU/cIoU overall and for text-only and hybrid prompts (``anchorseg_ras.md`` §2.5).

    Each record compares the union of the selected masks with the union of the GT group; its
    ``iou`` carries the empty-GT rule (1 if the prediction is empty too, else 0: score the records
    with ``empty_union_iou=1.0``). "hybrid" = the query came with reference masks
    (:attr:`QueryStats.hybrid`), "text" = it did not (``platform_research.md`` §C5).

    Returns:
        ``{"gIoU", "cIoU", "text/gIoU", "text/cIoU", "hybrid/gIoU", "hybrid/cIoU", "n_queries",
        "n_text", "n_hybrid"}``; a subset without query scores ``nan``.
    """
    def scores(part: list[QueryStats]) -> tuple[float, float]:
        r = summarize_giou_ciou(part, giou_eps=giou_eps, ciou_eps=ciou_eps)
        return r["gIoU"], r["cIoU"]

    stats = list(stats)
    text = [s for s in stats if not s.hybrid]
    hybrid = [s for s in stats if s.hybrid]
    out: dict[str, Any] = {}
    out["gIoU"], out["cIoU"] = scores(stats)
    out["text/gIoU"], out["text/cIoU"] = scores(text)
    out["hybrid/gIoU"], out["hybrid/cIoU"] = scores(hybrid)
    out.update(n_queries=len(stats), n_text=len(text), n_hybrid=len(hybrid))
    return out


# -- candidate-pool oracle -------------------------------------------------------------------------

def oracle_selection(
    candidates: ArrayLike, gt: ArrayLike, rule: str = "coverage", thr: float = 0.5
) -> list[int]:
    """The candidates an oracle would select to reconstruct the ground truth (``anchorseg_ras.md`` §2.5).

    * ``rule="coverage"``: every candidate whose intersection with the GT union covers more than
      ``thr`` of its own area, |c ∩ gt| / |c| > thr (empty candidates are never selected);
    * ``rule="best_per_instance"``: for every non-empty GT instance, the candidate of highest IoU
      with it (the first on ties), if that IoU is > 0. ``thr`` is not used.

    Args:
        candidates: ``[N, H, W] bool`` candidate pool.
        gt: ``[H, W] bool`` target union, or ``[n, H, W] bool`` target instances (needed for
            ``best_per_instance``, which treats a ``[H, W]`` mask as one instance; ``coverage``
            uses their union).
        rule: one of :data:`ORACLE_RULES`.
        thr: the coverage threshold.

    Returns:
        the selected candidate indices, ascending.
    """
    if rule not in ORACLE_RULES:
        raise ValueError(f"rule must be one of {ORACLE_RULES}, got {rule!r}.")
    cand = _as_bool_numpy(candidates, "candidates")
    gt_b = _as_bool_numpy(gt, "gt")
    if cand.ndim != 3:
        raise ValueError(f"candidates must be [N, H, W], got shape {cand.shape}.")
    inst = gt_b[None] if gt_b.ndim == 2 else gt_b
    if inst.ndim != 3 or inst.shape[1:] != cand.shape[1:]:
        raise ValueError(
            f"gt must be [H, W] or [n, H, W] with (H, W) = {cand.shape[1:]}, got {gt_b.shape}."
        )
    n = cand.shape[0]
    if n == 0:
        return []
    flat = cand.reshape(n, -1)
    if rule == "coverage":
        union = inst.any(axis=0).reshape(-1)
        area = flat.sum(axis=1)
        inter = (flat & union[None]).sum(axis=1)
        keep = (area > 0) & (inter / np.maximum(area, 1) > thr)
        return [int(i) for i in np.flatnonzero(keep)]
    selected: set[int] = set()
    for g in inst.reshape(inst.shape[0], flat.shape[1]):
        if not g.any():
            continue
        inter = (flat & g[None]).sum(axis=1)
        union = (flat | g[None]).sum(axis=1)
        iou = inter / union  # union >= |g| > 0
        best = int(np.argmax(iou))
        if inter[best] > 0:
            selected.add(best)
    return sorted(selected)


def summarize_pool_oracle(stats: Sequence[QueryStats]) -> dict[str, Any]:
    """Oracle gIoU/cIoU of a candidate pool over a dataset (``anchorseg_ras.md`` §2.5).

    The records compare the union of the :func:`oracle_selection` of each query with its ground
    truth (scored with the ORES empty-GT rule); gIoU and cIoU have no epsilon. The oracle cIoU bounds
    what any selection head can reach with that pool (the RAS paper reports 86-87 for SAM and
    Co-DETR pools on MaskGroups-HQ).

    Returns:
        ``{"gIoU", "cIoU", "n_queries", "mean_selected"}``.
    """
    stats = list(stats)
    r = summarize_giou_ciou(stats, giou_eps=0.0, ciou_eps=0.0)
    sel = [s.n_selected for s in stats if s.n_selected is not None]
    return {
        "gIoU": r["gIoU"],
        "cIoU": r["cIoU"],
        "n_queries": r["n"],
        "mean_selected": _ratio(sum(sel), len(sel)),
    }
