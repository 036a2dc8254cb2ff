"""RAS's math and text layout as pure functions (anchorseg_ras.md §2; RAS's code is not public).

Every constant here is a [GUESS] of the spec (§2.4), named and documented; ``docs/methods/ras.md``
lists them with the alternatives.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: The learnable prefix of a candidate mask token (anchorseg_ras.md §2.2, §2.4 E).
POOL_PRE = "<mask-pool-pre>"
#: The learnable prefix of a reference (visual prompt) mask token (§2.2, §2.4 E).
REF_PRE = "<mask-ref-pre>"
#: The slot whose input embedding is replaced by the projected mask embedding, as LLaVA replaces
#: ``<image>`` (§2.4 E: "each mask contributes 2 positions: the prefix token, then the mask embedding").
MASK_SLOT = "<mask-emb>"
#: How queries spell the place of a reference mask (``reseg.datasets.maskgroups.REF_PLACEHOLDER``).
REF_PLACEHOLDER = "<mask_ref>"

#: §2.4 H: weight of a positive candidate in the BCE (w+ = 5, w- = 1) [GUESS on the value].
POS_WEIGHT = 5.0
#: §2.4 I: a candidate is selected when its probability exceeds 0.5 [GUESS].
SELECT_THRESHOLD = 0.5


def pool_block(n: int, numbered: bool = False) -> str:
    """The text of ``n`` candidate pairs ``<mask-pool-pre><mask-emb>`` (§2.4 F).

    ``numbered=True`` (the autoregressive baseline) writes each pair's 1-based index before it, so a
    generated index has something to point at: ``"1 <mask-pool-pre><mask-emb> 2 ..."``.
    """
    if n < 0:
        raise ValueError(f"a pool has n >= 0 candidates, got {n}")
    pair = POOL_PRE + MASK_SLOT
    if numbered:
        return " ".join(f"{k + 1} {pair}" for k in range(n))
    return pair * n


def expand_references(text: str, num_refs: int, placeholder: str = REF_PLACEHOLDER) -> str:
    """Replace each reference placeholder by ``<mask-ref-pre><mask-emb>`` (§2.4 F).

    The reference masks are consumed in order. Reference masks without a placeholder are appended
    after the text ("... <mask-ref-pre><mask-emb>"); more placeholders than masks is an error.
    """
    pair = REF_PRE + MASK_SLOT
    n_ph = text.count(placeholder)
    if n_ph > num_refs:
        raise ValueError(
            f"query {text!r} has {n_ph} {placeholder} placeholder(s) but {num_refs} reference mask(s); "
            "every placeholder needs a reference mask (Query.reference_masks)")
    out = text.replace(placeholder, pair)
    if num_refs > n_ph:
        out = out.rstrip() + " " + pair * (num_refs - n_ph)
    return out


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float = POS_WEIGHT) -> torch.Tensor:
    """``(1/N) Σ_i w_i · BCE(σ(logit_i), y_i)`` with ``w = pos_weight`` for positives, 1 otherwise (§2.2, §2.4 H).

    Args:
        logits: ``[N]`` selection logits of one query's candidates; labels: ``[N]`` 0/1.
    Returns:
        a scalar; 0 (with a graph) when ``N == 0``.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    y = labels.to(logits.dtype)
    w = torch.where(y > 0.5, torch.full_like(y, float(pos_weight)), torch.ones_like(y))
    return (w * F.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean()


def select_candidates(probs: np.ndarray, threshold: float = SELECT_THRESHOLD, top1: bool = False) -> list[int]:
    """The selected candidate indices, ascending (§2.4 I).

    ``top1=False``: every candidate with ``p > threshold``; none selected is an empty prediction (what
    GRES no-target and empty ORES groups need). ``top1=True`` (single-target RES [GUESS]): the one
    candidate of highest probability (the first on ties), whatever its probability.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return []
    if top1:
        return [int(np.argmax(p))]
    return [int(i) for i in np.flatnonzero(p > threshold)]


def format_indices(selected: Sequence[int], empty: str = "none") -> str:
    """The autoregressive baseline's answer: 1-based indices joined by ``", "`` (``"2, 5"``), or ``empty``."""
    idx = sorted({int(i) for i in selected})
    return ", ".join(str(i + 1) for i in idx) if idx else empty


def parse_indices(text: str, n: int) -> tuple[list[int], int]:
    """Candidate indices (0-based, ascending, unique) in a generated answer, and how many were invalid.

    Every integer in the text counts; integers outside ``1..n`` are dropped and counted as invalid.
    """
    found = [int(m) for m in re.findall(r"\d+", text)]
    valid = sorted({k - 1 for k in found if 1 <= k <= n})
    invalid = sum(1 for k in found if not 1 <= k <= n)
    return valid, invalid


def candidate_labels(candidates: np.ndarray, gt_masks: np.ndarray, rule: str = "coverage", thr: float = 0.5,
                     given: np.ndarray | None = None) -> np.ndarray:
    """``[N] uint8`` training labels of a pool for one query's GT group (§2.4 L).

    ``given`` (the dataset's ``Query.pool_labels`` for its own pool) is used when its length matches the
    pool (cut to the pool when the pool was capped); otherwise the labels are derived with
    :func:`reseg.datasets.maskgroups.match_pool_labels` (``rule='coverage'``: the candidate lies more than
    ``thr`` inside the target union; ``'iou'``: IoU >= ``thr`` with a target instance).
    """
    n = int(np.asarray(candidates).shape[0])
    if given is not None and len(given) >= n:
        return np.asarray(given, dtype=np.uint8)[:n]
    from reseg.datasets.maskgroups import match_pool_labels

    return match_pool_labels(candidates, gt_masks, rule=rule, thr=thr)
