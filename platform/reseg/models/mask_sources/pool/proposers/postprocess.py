"""Candidate-pool post-processing shared by every proposer (``anchorseg_ras.md`` §2.4 A).

:func:`postprocess_pool` drops tiny masks, removes near-duplicates by mask-IoU NMS, orders and caps
the pool, so pools from SAM, a detector or a file are comparable. It is a pure function of numpy
arrays.
"""
from __future__ import annotations

import numpy as np

#: Orders of :func:`postprocess_pool`: by score (descending), by area (descending), or as given.
POOL_ORDERS = ("score", "area", "given")

#: Post-processing defaults (``anchorseg_ras.md`` §2.4 A, all [GUESS]): drop masks under 32 px,
#: mask-IoU NMS at 0.8, sort by score, keep at most 100.
DEFAULT_MIN_AREA = 32
DEFAULT_NMS_IOU = 0.8
DEFAULT_MAX_CANDIDATES = 100


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``[N, 4]`` int boxes ``(y0, y1, x0, x1)`` (end exclusive) of ``[N, H, W]`` bool masks; empty
    masks get the empty box ``(0, 0, 0, 0)``."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.int64)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)  # [N, H]
    cols = masks.any(axis=1)  # [N, W]
    nonempty = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = rows.argmax(axis=1)
    boxes[:, 1] = h - rows[:, ::-1].argmax(axis=1)
    boxes[:, 2] = cols.argmax(axis=1)
    boxes[:, 3] = w - cols[:, ::-1].argmax(axis=1)
    boxes[~nonempty] = 0
    return boxes


def postprocess_pool(
    masks: np.ndarray,
    scores: np.ndarray | None = None,
    min_area: int = DEFAULT_MIN_AREA,
    nms_iou: float | None = DEFAULT_NMS_IOU,
    max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
    order: str = "score",
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Clean a raw candidate pool: drop small masks, mask-IoU NMS, order, cap (``anchorseg_ras.md`` §2.4 A).

    Steps, in this order:

    1. drop every mask with fewer than ``min_area`` pixels (0 keeps everything, even empty masks);
    2. rank the rest by ``order``: ``"score"`` (descending score), ``"area"`` (descending pixel
       count) or ``"given"`` (input order); ties keep the input order;
    3. greedy mask-IoU NMS in rank order: a mask is dropped when its IoU with an already kept
       (higher-ranked) mask is **greater than** ``nms_iou`` (None: no NMS). Two masks whose union is
       empty have IoU 0;
    4. keep the first ``max_candidates`` (None: all).

    The defaults are the spec's guesses (§2.4 A: NMS 0.8, 32 px, N_max = 100, by score).

    Args:
        masks: ``[N, H, W] bool`` raw pool.
        scores: ``[N]`` float scores, or None (then ``order`` must not be ``"score"``).
        min_area: smallest area kept, in pixels.
        nms_iou: mask-IoU threshold of the NMS in ``[0, 1]``, or None.
        max_candidates: cap on the pool size (``>= 1``), or None.
        order: one of :data:`POOL_ORDERS`.

    Returns:
        ``(masks [M, H, W] bool, scores [M] float32 or None, kept [M] int64)`` where ``kept`` are the
        input indices of the output masks, in output order.
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"postprocess_pool: masks must be an [N, H, W] bool array, got shape {m.shape} "
                         f"and dtype {m.dtype}")
    n = m.shape[0]
    s: np.ndarray | None = None
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(f"postprocess_pool: {s.shape[0]} scores for {n} masks (expected one score per mask)")
    if order not in POOL_ORDERS:
        raise ValueError(f"postprocess_pool: order must be one of {POOL_ORDERS}, got {order!r}")
    if order == "score" and s is None:
        raise ValueError("postprocess_pool: order='score' needs scores; pass scores or use order='area'/'given'")
    if min_area < 0:
        raise ValueError(f"postprocess_pool: min_area must be >= 0 pixels, got {min_area}")
    if nms_iou is not None and not 0.0 <= nms_iou <= 1.0:
        raise ValueError(f"postprocess_pool: nms_iou must be in [0, 1] or None, got {nms_iou}")
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"postprocess_pool: max_candidates must be >= 1 or None, got {max_candidates}")

    areas = m.reshape(n, -1).sum(axis=1, dtype=np.int64) if n else np.zeros(0, np.int64)
    cand = np.flatnonzero(areas >= min_area)
    if order == "score":
        cand = cand[np.argsort(-s[cand], kind="stable")]
    elif order == "area":
        cand = cand[np.argsort(-areas[cand], kind="stable")]
    cap = len(cand) if max_candidates is None else int(max_candidates)

    if nms_iou is None:
        kept = cand[:cap]
    else:
        boxes = _mask_boxes(m)
        kept_list: list[int] = []
        for i in cand:
            if len(kept_list) >= cap:
                break
            if kept_list:
                kb = boxes[kept_list]
                y0 = np.maximum(kb[:, 0], boxes[i, 0])
                y1 = np.minimum(kb[:, 1], boxes[i, 1])
                x0 = np.maximum(kb[:, 2], boxes[i, 2])
                x1 = np.minimum(kb[:, 3], boxes[i, 3])
                overlapping = np.flatnonzero((y1 > y0) & (x1 > x0))
                duplicate = False
                for k in overlapping:  # the intersection lies inside the intersection of the boxes
                    j = kept_list[k]
                    inter = int(np.count_nonzero(m[i, y0[k]:y1[k], x0[k]:x1[k]] & m[j, y0[k]:y1[k], x0[k]:x1[k]]))
                    union = int(areas[i]) + int(areas[j]) - inter
                    if union > 0 and inter / union > nms_iou:
                        duplicate = True
                        break
                if duplicate:
                    continue
            kept_list.append(int(i))
        kept = np.asarray(kept_list, dtype=np.int64)
    kept = kept.astype(np.int64)
    out_scores = None if s is None else s[kept].astype(np.float32)
    return m[kept], out_scores, kept
