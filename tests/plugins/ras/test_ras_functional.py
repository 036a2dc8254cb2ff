"""RAS's pure functions (plugins/reseg_ras/functional.py): layout text, loss, selection, AR answers, labels."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reseg_ras import functional as RF

PAIR = RF.POOL_PRE + RF.MASK_SLOT
REF = RF.REF_PRE + RF.MASK_SLOT


def test_pool_block_repeats_the_pair_n_times() -> None:
    assert RF.pool_block(0) == ""
    assert RF.pool_block(3) == PAIR * 3
    assert RF.pool_block(2, numbered=True) == f"1 {PAIR} 2 {PAIR}"
    with pytest.raises(ValueError, match="n >= 0"):
        RF.pool_block(-1)


def test_expand_references_in_order_and_appends_extra_references() -> None:
    assert RF.expand_references("same colour as <mask_ref>", 1) == f"same colour as {REF}"
    assert RF.expand_references("between <mask_ref> and <mask_ref>", 2) == f"between {REF} and {REF}"
    assert RF.expand_references("like this ", 1) == f"like this {REF}"
    assert RF.expand_references("plain text", 0) == "plain text"
    with pytest.raises(ValueError, match="2 <mask_ref> placeholder\\(s\\) but 1 reference"):
        RF.expand_references("<mask_ref> or <mask_ref>", 1)


def test_weighted_bce_by_hand() -> None:
    logits = torch.tensor([0.0, 2.0, -1.0])
    labels = torch.tensor([1, 0, 1])
    # BCE(0, 1) = ln 2; BCE(2, 0) = ln(1 + e^2); BCE(-1, 1) = ln(1 + e^1); positives weigh 5
    expected = (5 * math.log(2) + math.log(1 + math.e ** 2) + 5 * math.log(1 + math.e)) / 3
    assert RF.weighted_bce(logits, labels, pos_weight=5.0).item() == pytest.approx(expected, rel=1e-6)
    assert RF.weighted_bce(logits, labels, pos_weight=1.0).item() == pytest.approx(
        (math.log(2) + math.log(1 + math.e ** 2) + math.log(1 + math.e)) / 3, rel=1e-6)


def test_weighted_bce_of_an_empty_pool_is_zero_with_a_graph() -> None:
    x = torch.zeros(0, requires_grad=True)
    loss = RF.weighted_bce(x, torch.zeros(0))
    assert loss.item() == 0.0
    loss.backward()  # does not raise


def test_select_candidates_threshold_allows_empty_and_top1_picks_the_best() -> None:
    p = np.array([0.2, 0.7, 0.5, 0.9])
    assert RF.select_candidates(p, 0.5) == [1, 3]  # strictly above the threshold
    assert RF.select_candidates(np.array([0.1, 0.4]), 0.5) == []
    assert RF.select_candidates(np.array([0.1, 0.4]), 0.5, top1=True) == [1]
    assert RF.select_candidates(np.array([]), 0.5, top1=True) == []


def test_ar_answers_round_trip_and_invalid_indices_are_counted() -> None:
    assert RF.format_indices([4, 1, 1]) == "2, 5"
    assert RF.format_indices([]) == "none"
    assert RF.parse_indices("2, 5", 6) == ([1, 4], 0)
    assert RF.parse_indices("none", 6) == ([], 0)
    assert RF.parse_indices("7, 0, 3, 3", 6) == ([2], 2)


def test_candidate_labels_use_the_dataset_labels_or_derive_them() -> None:
    pool = np.zeros((3, 4, 4), dtype=bool)
    pool[0, :2, :2] = True  # inside the target
    pool[1, 2:, 2:] = True  # outside
    pool[2, :2, :4] = True  # half inside: not > 0.5
    gt = np.zeros((1, 4, 4), dtype=bool)
    gt[0, :2, :2] = True
    assert RF.candidate_labels(pool, gt).tolist() == [1, 0, 0]
    assert RF.candidate_labels(pool, gt, rule="iou", thr=0.5).tolist() == [1, 0, 1]  # IoU 4/8 = 0.5
    given = np.array([0, 1, 1, 1], dtype=np.uint8)  # a dataset pool capped from 4 to 3
    assert RF.candidate_labels(pool, gt, given=given).tolist() == [0, 1, 1]
    assert RF.candidate_labels(pool, np.zeros((0, 4, 4), bool)).tolist() == [0, 0, 0]
