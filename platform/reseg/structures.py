"""The records passed between reseg's parts (docs/architecture.md, "Contracts").

Every dataset, whatever its on-disk format, yields one :class:`Sample` per image: the image at its
original size and one or more :class:`Query` objects about it. Heads turn samples into
conversations, models turn them into :class:`QueryPrediction` objects, metrics turn
(prediction, query) pairs into per-query statistics.

Masks are numpy ``bool`` arrays at the image's original size ``[H, W]``; ignore masks mark pixels that
are excluded from scoring (ReasonSeg's value 255, ``specs/seg_token_family.md`` §5.1).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Task names a sample may carry (docs/architecture.md, "Sample").
TASKS = ("res", "gres", "ores", "reason", "fp", "vqa", "semseg")


@dataclass
class Query:
    """One question about an image and its ground truth.

    Attributes:
        text: the query as the user would type it ("the red circle", "what keeps people dry?").
        is_sentence: ReasonSeg's flag: a long/implicit query (selects the long-query template).
        masks: ``[n, H, W] bool`` instance masks of the targets; ``n == 0`` means no target.
        ignore: ``[H, W] bool`` pixels excluded from scoring, or None.
        answer: a fixed answer text (e.g. an explanation), or None to let the head template one.
        exists: False for false-premise / no-target queries.
        reference_masks: ``[r, H, W] bool`` masks given *as input* (ORES hybrid prompts), or None.
        pool_labels: per-candidate 0/1 labels when the sample carries a candidate pool, or None.
        meta: ids and source fields (ref_id, sent_id, ann_ids, gt_sent, ...).
    """

    text: str
    masks: np.ndarray
    is_sentence: bool = False
    ignore: np.ndarray | None = None
    answer: str | None = None
    exists: bool = True
    reference_masks: np.ndarray | None = None
    pool_labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> np.ndarray:
        """``[H, W] bool`` union of the target masks (all False when there is no target)."""
        if self.masks.shape[0] == 0:
            return np.zeros(self.masks.shape[1:], dtype=bool)
        return self.masks.any(axis=0)

    @property
    def num_targets(self) -> int:
        return int(self.masks.shape[0])


@dataclass
class Sample:
    """One image and the queries asked about it.

    Attributes:
        image: ``[H, W, 3] uint8`` RGB at the original size.
        queries: the queries about this image (one conversation each).
        task: one of :data:`TASKS`.
        candidate_masks: ``[N, H, W] bool`` candidate pool (pool-based heads), or None.
        meta: ``dataset``, ``split``, ``image_id``, ``file_name``, ... (``sample_id`` is unique).
    """

    image: np.ndarray
    queries: list[Query]
    task: str = "res"
    candidate_masks: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the original image."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def sample_id(self) -> str:
        return str(self.meta.get("sample_id", self.meta.get("image_id", "?")))


@dataclass
class QueryPrediction:
    """What a model answered for one query.

    Attributes:
        masks: ``[m, H, W]`` float logits (or bool) at the original size, one per emitted mask
            token; ``m == 0`` when the model emitted none (an empty prediction).
        scores: ``[m]`` confidence per mask (sigmoid of the IoU head, or selection probability).
        exists: the model's target/no-target decision (False when it rejected the query).
        text: generated answer text ("" under teacher forcing).
        selected: selected candidate-pool indices for selection heads, else None.
        pool: ``[N, H, W] bool`` the candidate pool ``selected`` indexes: the pool the model actually used
            (a proposer's, when the model was set to propose its own), else None.
        extras: head-specific outputs (similarity maps, priors) for visualisation.
    """

    masks: Any
    scores: Any = None
    exists: bool = True
    text: str = ""
    selected: list[int] | None = None
    pool: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def binary_mask(self, threshold: float = 0.0, inclusive: bool = False) -> np.ndarray:
        """``[H, W] bool``: the union of the masks binarised at ``threshold`` (logits).

        ``inclusive=False`` is LISA's ``logits > 0``; ``True`` is GSVA's ``logits >= 0``
        (``specs/seg_token_family.md`` §4.5).
        """
        import torch

        m = self.masks
        if isinstance(m, torch.Tensor):
            m = m.detach().cpu()
            m = m.numpy() if m.dtype == torch.bool else m.float().numpy()
        m = np.asarray(m)
        b = m if m.dtype == bool else m >= threshold if inclusive else m > threshold
        if b.ndim == 2:
            return b
        if b.shape[0] == 0:
            return np.zeros(b.shape[1:], dtype=bool)
        return b.any(axis=0)
