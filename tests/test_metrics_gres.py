"""GRES, false-premise, ORES and pool-oracle metrics, the §4.5 edge cases and distributed counting.

specs/seg_token_family.md §3.3, §4.3-4.5; specs/anchorseg_ras.md §2.5; specs/platform_research.md §C5,
§C6. Every expected value is worked out by hand in the comments next to it.
"""
from itertools import zip_longest

import numpy as np
import pytest

import reseg.evaluation  # noqa: F401  (registers the metrics)
from reseg.evaluation.functional import (
    GSVA_IOU_EPS,
    QueryStats,
    gres_term,
    oracle_selection,
    query_stats,
    resize_nearest,
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
    SegIoUMetric,
)
from reseg.registry import METRICS
from reseg.structures import Query, QueryPrediction, Sample


def px(h: int, w: int, *cells: tuple[int, int]) -> np.ndarray:
    """``[h, w] bool`` mask with the given ``(row, col)`` cells set."""
    m = np.zeros((h, w), dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def rows(h: int, w: int, *idx: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[list(idx)] = True
    return m


def logits(*masks: np.ndarray) -> np.ndarray:
    """``[m, H, W]`` logits (+5 inside, -5 outside) of the given masks."""
    return np.stack([np.where(m, 5.0, -5.0) for m in masks]).astype(np.float32)


def no_mask(h: int = 4, w: int = 4) -> np.ndarray:
    return np.zeros((0, h, w), dtype=np.float32)


def rec(I, U, gt_area, pred_area, gt_exists, pred_exists) -> QueryStats:
    return QueryStats(I=I, U=U, iou=0.0, gt_empty=gt_area == 0, pred_empty=pred_area == 0,
                      gt_area=gt_area, pred_area=pred_area, gt_exists=gt_exists,
                      pred_exists=pred_exists)


# -- GRES reductions -------------------------------------------------------------------------------
# Four records, one per outcome ("positive" = no target, ReLA's naming):
#   a  no-target GT, rejected                      -> TP
#   b  no-target GT, answered with a 3-pixel mask   -> FN   I = 0, U = 3
#   c  4-pixel target, 4-pixel answer, 3 shared     -> TN   I = 3, U = 5, IoU 0.6
#   d  10-pixel target, 8-pixel mask inside it, but rejected -> FP   I = 8, U = 10 from the mask
A = rec(0, 0, 0, 0, False, False)
B = rec(0, 3, 0, 3, False, True)
C = rec(3, 5, 4, 4, True, True)
D = rec(8, 10, 10, 8, True, False)
GRES_RECORDS = [A, B, C, D]


def test_gres_outcomes_are_relas_tp_fn_tn_fp():
    assert [gres_term(s).outcome for s in GRES_RECORDS] == ["TP", "FN", "TN", "FP"]


def test_gres_rela_zeroes_the_intersection_of_a_wrongly_rejected_target():
    out = summarize_gres(GRES_RECORDS, nt_mode="rela", pr_thresholds=(0.5, 0.7))
    # terms: a 1 (adds 0/0), b 0 (adds 0/3), c 3/5 (adds 3/5), d 0 (I zeroed: adds 0/10)
    assert out["gIoU"] == pytest.approx((1 + 0 + 0.6 + 0) / 4)       # 0.4
    assert out["cIoU"] == pytest.approx(3 / 18)
    assert out["N-acc"] == 0.5 and out["T-acc"] == 0.5               # TP/(TP+FN), TN/(TN+FP)
    # Pr@t over the target queries c (0.6) and d (0): 1/2 reach 0.5, none 0.7.
    assert out["Pr@0.5"] == 0.5 and out["Pr@0.7"] == 0.0
    assert (out["TP"], out["TN"], out["FP"], out["FN"]) == (1, 1, 1, 1)
    assert (out["n_queries"], out["n_no_target"]) == (4, 2)


def test_gres_gsva_scores_a_rejected_target_from_its_mask():
    out = summarize_gres(GRES_RECORDS, nt_mode="gsva")
    # terms: a 1, b 0 (adds 0/3, gRefCOCO), c 3/(5+1e-8), d 8/(10+1e-8) (adds 8/10)
    assert out["gIoU"] == pytest.approx((1 + 0 + 3 / (5 + 1e-8) + 8 / (10 + 1e-8)) / 4)  # ~0.6
    assert out["cIoU"] == pytest.approx(11 / 18)
    assert (out["TP"], out["TN"], out["FP"], out["FN"]) == (1, 1, 1, 1)
    assert gres_term(D, "gsva").iou == 8 / (10 + GSVA_IOU_EPS)


def test_gres_gsva_adds_the_no_target_union_only_for_grefcoco():
    # b's 3 predicted pixels count in cIoU on gRefCOCO (11/18) but not on RefZOM (11/15).
    assert summarize_gres(GRES_RECORDS, "gsva", grefcoco=False)["cIoU"] == pytest.approx(11 / 15)
    # ReLA always adds them.
    assert summarize_gres(GRES_RECORDS, "rela", grefcoco=False)["cIoU"] == pytest.approx(3 / 18)


def test_gres_default_pr_thresholds_are_relas():
    out = summarize_gres(GRES_RECORDS)
    assert [k for k in out if k.startswith("Pr@")] == ["Pr@0.7", "Pr@0.8", "Pr@0.9"]


def test_gres_rela_target_with_an_empty_union_scores_zero():
    # Labelled target, but every GT pixel ignored and nothing predicted: ReLA scores 0 (not 1).
    s = rec(0, 0, 0, 0, True, True)
    assert gres_term(s, "rela") == gres_term(s, "gsva")
    assert gres_term(s).iou == 0.0 and gres_term(s).outcome == "TN"


def test_gres_without_a_model_decision_derives_it_from_the_mask():
    # pred_exists None: an empty mask is "no target", a non-empty one is "target".
    empty = rec(0, 0, 0, 0, False, None)
    answered = rec(0, 2, 0, 2, False, None)
    assert gres_term(empty).outcome == "TP" and gres_term(answered).outcome == "FN"
    # gt_exists None: an empty GT is "no target".
    assert gres_term(rec(0, 0, 0, 0, None, None)).outcome == "TP"


def test_gres_with_nothing_to_measure_is_nan():
    out = summarize_gres([A])
    assert out["gIoU"] == 1.0 and out["N-acc"] == 1.0
    assert np.isnan(out["cIoU"]) and np.isnan(out["T-acc"]) and np.isnan(out["Pr@0.7"])


def test_gres_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="nt_mode"):
        summarize_gres(GRES_RECORDS, nt_mode="lisa")
    with pytest.raises(ValueError, match="nt_mode"):
        GRESMetric(nt_mode="lisa")


# -- GRESMetric end to end -------------------------------------------------------------------------

def gres_batch():
    """The four records above as real masks on a 4x4 image (row 0..3, col 0..3)."""
    c_gt, c_pred = rows(4, 4, 0), px(4, 4, (0, 0), (0, 1), (0, 2), (1, 0))   # I 3, U 5
    d_gt = rows(4, 4, 1, 2) | px(4, 4, (3, 0), (3, 1))                       # 10 pixels
    d_pred = rows(4, 4, 1) | px(4, 4, (2, 0), (2, 1), (2, 2), (2, 3))        # 8 inside
    empty = np.zeros((0, 4, 4), dtype=bool)
    sample = Sample(
        image=np.zeros((4, 4, 3), np.uint8), task="gres", meta={"sample_id": "g"},
        queries=[Query("a", empty, exists=False), Query("b", empty, exists=False),
                 Query("c", c_gt[None]), Query("d", d_gt[None])],
    )
    output = {"sample_id": "g", "predictions": [
        QueryPrediction(masks=no_mask(), exists=False),
        QueryPrediction(masks=logits(px(4, 4, (3, 0), (3, 1), (3, 2)))),
        QueryPrediction(masks=logits(c_pred)),
        QueryPrediction(masks=logits(d_pred), exists=False),  # [REJ], but GSVA's re-eval mask
    ]}
    return sample, output


def run(metric, sample, output):
    metric.process({"samples": [sample]}, [output])
    return metric.evaluate(size=1)


def test_gres_metric_matches_the_hand_computed_records():
    sample, output = gres_batch()
    rela = run(GRESMetric(pr_thresholds=(0.5,)), sample, output)
    assert rela["gres/gIoU"] == pytest.approx(0.4) and rela["gres/cIoU"] == pytest.approx(3 / 18)
    assert rela["gres/Pr@0.5"] == 0.5
    assert (rela["gres/TP"], rela["gres/TN"], rela["gres/FP"], rela["gres/FN"]) == (1, 1, 1, 1)
    gsva = run(GRESMetric(nt_mode="gsva"), sample, output)
    assert gsva["gres/cIoU"] == pytest.approx(11 / 18)


def test_gres_metric_pred_exists_rules():
    # Query a answered exists=True with an empty mask: a model without a rejection decision.
    sample, output = gres_batch()
    output["predictions"][0] = QueryPrediction(masks=logits(np.zeros((4, 4), bool)))
    # "flag": exists=True -> FN (IoU 0, adds U = 0): gIoU (0 + 0 + 0.6 + 0) / 4.
    flag = run(GRESMetric(), sample, output)
    assert (flag["gres/TP"], flag["gres/FN"]) == (0, 2)
    assert flag["gres/gIoU"] == pytest.approx(0.15)
    # "mask": the empty mask is a rejection -> TP; d's non-empty mask makes it TN: 8/10.
    mask = run(GRESMetric(pred_exists="mask"), sample, output)
    assert (mask["gres/TP"], mask["gres/FN"], mask["gres/TN"], mask["gres/FP"]) == (1, 1, 2, 0)
    assert mask["gres/gIoU"] == pytest.approx((1 + 0 + 0.6 + 0.8) / 4)
    # "flag_and_mask" (SESAME): exists and first mask non-empty; a is rejected, d too (flag).
    both = run(GRESMetric(pred_exists="flag_and_mask"), sample, output)
    assert (both["gres/TP"], both["gres/FP"]) == (1, 1)


def test_gres_metric_inclusive_threshold_counts_zero_logits():
    # c's mask given as logits 0.0 on its 4 pixels: empty for ReLA's/LISA's ">", full for GSVA's ">=".
    sample, output = gres_batch()
    zero = np.where(px(4, 4, (0, 0), (0, 1), (0, 2), (1, 0)), 0.0, -1.0)[None].astype(np.float32)
    output["predictions"][2] = QueryPrediction(masks=zero)
    strict = run(GRESMetric(), sample, output)
    inclusive = run(GRESMetric(inclusive_threshold=True), sample, output)
    assert strict["gres/gIoU"] == pytest.approx(1 / 4)     # c: I 0 -> only a scores
    assert inclusive["gres/gIoU"] == pytest.approx(0.4)


# -- §4.5 edge cases on the per-query layer --------------------------------------------------------

def one_query_sample(gt: np.ndarray, ignore=None, exists=True, task="res") -> Sample:
    h, w = gt.shape
    masks = gt[None] if gt.any() else np.zeros((0, h, w), bool)
    return Sample(image=np.zeros((h, w, 3), np.uint8), task=task, meta={"sample_id": "s"},
                  queries=[Query("q", masks, ignore=ignore, exists=exists)])


def test_wrongly_rejected_target_is_an_empty_prediction_by_default():
    # GT row 0 (4 px); the model rejects but still carries a perfect mask.
    sample = one_query_sample(rows(4, 4, 0))
    output = {"sample_id": "s", "predictions": [
        QueryPrediction(masks=logits(rows(4, 4, 0)), exists=False)]}
    default = run(SegIoUMetric(), sample, output)
    scored = run(SegIoUMetric(rejected_as_empty=False), sample, output)
    assert default["seg/cIoU"] == 0.0 and default["seg/n_empty_pred"] == 1   # I 0, U 4
    assert scored["seg/cIoU"] == pytest.approx(1.0)                          # I 4, U 4


def test_ignore_label_option():
    # pred = all 4 pixels, gt = top row, ignore (1,0): with ignore I 2, U 3; without I 2, U 4.
    sample = one_query_sample(rows(2, 2, 0), ignore=px(2, 2, (1, 0)))
    output = {"sample_id": "s", "predictions": [QueryPrediction(masks=logits(np.ones((2, 2), bool)))]}
    assert run(SegIoUMetric(), sample, output)["seg/cIoU"] == pytest.approx(2 / 3)
    assert run(SegIoUMetric(use_ignore=False), sample, output)["seg/cIoU"] == pytest.approx(2 / 4)


def test_resize_nearest_takes_the_pixel_under_each_output_centre():
    # 4 -> 2: output row/col i reads input row/col floor((i + 0.5) * 2) = 1, 3; (0, 0) is dropped.
    m = px(4, 4, (1, 1), (0, 0), (3, 3))
    assert resize_nearest(m, (2, 2)).tolist() == [[True, False], [False, True]]
    # 2 -> 4: rows floor((i + 0.5) / 2) = 0, 0, 1, 1: every pixel becomes a 2x2 block.
    up = resize_nearest(px(2, 2, (0, 1)), (4, 4))
    assert up.tolist() == [[False, False, True, True]] * 2 + [[False] * 4] * 2
    # 3x5 -> 2x2: rows floor(0.75) = 0, floor(2.25) = 2; cols floor(1.25) = 1, floor(3.75) = 3.
    assert resize_nearest(px(3, 5, (0, 1), (2, 3)), (2, 2)).tolist() == [[True, False], [False, True]]


def test_eval_size_scores_at_a_fixed_resolution():
    # GT (0,0) and (1,1), pred (1,1): I 1, U 2 at 4x4. At 2x2 only input pixels (1,1), (1,3), (3,1),
    # (3,3) survive: GT -> (0,0), pred -> (0,0): I 1, U 1.
    sample = one_query_sample(px(4, 4, (0, 0), (1, 1)))
    output = {"sample_id": "s", "predictions": [QueryPrediction(masks=logits(px(4, 4, (1, 1))))]}
    assert run(SegIoUMetric(), sample, output)["seg/cIoU"] == pytest.approx(1 / 2)
    assert run(SegIoUMetric(eval_size=(2, 2)), sample, output)["seg/cIoU"] == pytest.approx(1.0)
    s = query_stats(px(4, 4, (1, 1)), px(4, 4, (0, 0), (1, 1)), size=(2, 2))
    assert (s.I, s.U, s.gt_area, s.pred_area) == (1, 1, 1, 1)
    with pytest.raises(ValueError, match="eval_size"):
        GRESMetric(eval_size=(480,))


def test_empty_gt_and_empty_prediction_per_metric():
    # One no-target query answered with nothing: LISA 1 (or 0 with mmdet's rule), GRES TP -> 1,
    # See correct, ORES 1.
    sample = one_query_sample(np.zeros((2, 2), bool), exists=False)
    output = {"sample_id": "s", "predictions": [QueryPrediction(masks=no_mask(2, 2), exists=False)]}
    assert run(SegIoUMetric(giou_eps=0.0), sample, output)["seg/gIoU"] == 1.0
    assert run(SegIoUMetric(empty_union_iou=0.0), sample, output)["seg/gIoU"] == 0.0
    assert run(GRESMetric(), sample, output)["gres/gIoU"] == 1.0
    assert run(FalsePremiseMetric(), sample, output)["fp/See"] == 1.0
    assert run(ORESMetric(), sample, output)["ores/gIoU"] == 1.0


def test_metrics_are_registered():
    for cls in (GRESMetric, FalsePremiseMetric, ORESMetric, PoolOracleMetric, SegIoUMetric):
        assert METRICS.get(cls.__name__) is cls


def test_conventions_name_every_option_and_its_value():
    conv = GRESMetric(nt_mode="gsva", eval_size=(480, 480), prefix="g").conventions()
    assert conv["metric"] == "GRESMetric" and conv["prefix"] == "g"
    assert (conv["nt_mode"], conv["grefcoco"], conv["eval_size"]) == ("gsva", True, [480, 480])
    assert conv["pr_thresholds"] == [0.7, 0.8, 0.9] and "§4.4" in conv["reference"]
    assert SegIoUMetric().conventions()["empty_union_iou"] == 1.0


# -- SESAME See / Segment --------------------------------------------------------------------------

def fp_batch():
    """4x4 image, two true and two false premises.

    q1 true, GT row 0; answer [SEG][SEG]: first mask row 0, second row 3 -> first only: I 4, U 4.
    q2 true, GT row 1; no [SEG] (exists=False, no mask) -> zero mask: I 0, U 4; "absent" (wrong).
    q3 false premise; answered with a 2-pixel mask -> GT zero: I 0, U 2; "present" (wrong).
    q4 false premise; [SEG] whose first mask is empty (second is 1 pixel) -> "absent" (right), 0/0.
    """
    empty = np.zeros((0, 4, 4), dtype=bool)
    sample = Sample(
        image=np.zeros((4, 4, 3), np.uint8), task="fp", meta={"sample_id": "f"},
        queries=[Query("q1", rows(4, 4, 0)[None]), Query("q2", rows(4, 4, 1)[None]),
                 Query("q3", empty, exists=False), Query("q4", empty, exists=False)],
    )
    output = {"sample_id": "f", "predictions": [
        QueryPrediction(masks=logits(rows(4, 4, 0), rows(4, 4, 3))),
        QueryPrediction(masks=no_mask(), exists=False),
        QueryPrediction(masks=logits(px(4, 4, (2, 2), (2, 3)))),
        QueryPrediction(masks=logits(np.zeros((4, 4), bool), px(4, 4, (0, 0)))),
    ]}
    return sample, output


def test_see_segment_follow_sesame():
    sample, output = fp_batch()
    out = run(FalsePremiseMetric(), sample, output)
    assert out["fp/See"] == 0.5                                        # q1, q4 right
    assert out["fp/Segment"] == pytest.approx(4 / (4 + 4 + 2 + 0))   # 0.4
    assert out["fp/cIoU"] == out["fp/Segment"]
    # gIoU (LISA): q1 4/(4+1e-5), q2 0, q3 0, q4 1 (both empty) over 4 (+1e-5).
    assert out["fp/gIoU"] == pytest.approx((4 / (4 + 1e-5) + 1) / (4 + 1e-5))
    # True premises alone: q1, q2 -> cIoU 4/8, gIoU ~1/2.
    assert out["fp/true_premise/cIoU"] == pytest.approx(0.5)
    assert out["fp/true_premise/gIoU"] == pytest.approx(0.5, rel=1e-4)
    assert (out["fp/n_queries"], out["fp/n_false_premise"], out["fp/n_pred_absent"],
            out["fp/n_see_correct"]) == (4, 2, 2, 2)


def test_see_segment_with_every_mask():
    # first_mask_only=False: q1 predicts rows 0 and 3 (I 4, U 8); q4's union is 1 pixel ->
    # "present" (wrong), U 1. See = 1/4, Segment = 4 / (8 + 4 + 2 + 1).
    sample, output = fp_batch()
    out = run(FalsePremiseMetric(first_mask_only=False), sample, output)
    assert out["fp/See"] == 0.25
    assert out["fp/Segment"] == pytest.approx(4 / 15)


def test_see_segment_reduction_derives_missing_decisions_from_masks():
    stats = [rec(0, 0, 0, 0, None, None),   # empty GT, empty pred: right
             rec(0, 5, 5, 0, True, None),    # target, empty pred: wrong
             rec(2, 4, 3, 3, None, True)]    # non-empty GT, answered: right
    out = summarize_see_segment(stats)
    assert out["See"] == pytest.approx(2 / 3)
    assert out["Segment"] == pytest.approx(2 / (9 + 1e-10))


# -- ORES ------------------------------------------------------------------------------------------

def ores_batch():
    """4x4 image, pool c0 = row 0, c1 = row 1, c2 = rows 2-3.

    q1 text,   GT group rows 0, 1 (8 px); selects c0, c2 (12 px): I 4, U 16, IoU 1/4.
    q2 hybrid, GT row 1; selects c1: I 4, U 4, IoU 1.
    q3 text,   empty GT; selects nothing: IoU 1, adds 0/0.
    q4 hybrid, GT rows 2-3 (8 px); no selection, mask = column 0 (4 px): I 2, U 10, IoU 1/5.
    """
    pool = np.stack([rows(4, 4, 0), rows(4, 4, 1), rows(4, 4, 2, 3)])
    col0 = np.zeros((4, 4), bool)
    col0[:, 0] = True
    ref = rows(4, 4, 3)[None]
    sample = Sample(
        image=np.zeros((4, 4, 3), np.uint8), task="ores", candidate_masks=pool,
        meta={"sample_id": "o"},
        queries=[Query("q1", np.stack([rows(4, 4, 0), rows(4, 4, 1)])),
                 Query("q2", rows(4, 4, 1)[None], reference_masks=ref),
                 Query("q3", np.zeros((0, 4, 4), bool), exists=False),
                 Query("q4", rows(4, 4, 2, 3)[None], reference_masks=ref)],
    )
    output = {"sample_id": "o", "predictions": [
        QueryPrediction(masks=no_mask(), selected=[0, 2]),
        QueryPrediction(masks=no_mask(), selected=[1]),
        QueryPrediction(masks=no_mask(), selected=[]),
        QueryPrediction(masks=logits(col0)),
    ]}
    return sample, output


def test_ores_scores_the_union_of_the_selection_per_prompt_kind():
    sample, output = ores_batch()
    out = run(ORESMetric(), sample, output)
    assert out["ores/gIoU"] == pytest.approx((0.25 + 1 + 1 + 0.2) / 4)    # 0.6125
    assert out["ores/cIoU"] == pytest.approx(10 / 30)
    assert out["ores/text/gIoU"] == pytest.approx(1.25 / 2)
    assert out["ores/text/cIoU"] == pytest.approx(4 / 16)
    assert out["ores/hybrid/gIoU"] == pytest.approx(1.2 / 2)
    assert out["ores/hybrid/cIoU"] == pytest.approx(6 / 14)
    assert (out["ores/n_text"], out["ores/n_hybrid"], out["ores/n_queries"]) == (2, 2, 4)


def test_ores_selection_needs_the_pool():
    sample, output = ores_batch()
    sample.candidate_masks = None
    with pytest.raises(ValueError, match="neither it nor the sample carries a candidate pool"):
        ORESMetric().process({"samples": [sample]}, [output])


def test_ores_summary_of_an_absent_prompt_kind_is_nan():
    out = summarize_ores([query_stats(rows(2, 2, 0), rows(2, 2, 0), eps=0.0, hybrid=False)])
    assert out["text/gIoU"] == 1.0 and np.isnan(out["hybrid/gIoU"]) and out["n_hybrid"] == 0


# -- candidate-pool oracle -------------------------------------------------------------------------
# Pool on 4x4: c0 = row 0 (4 px), c1 = (1,0),(1,1),(1,2), c2 = rows 2-3, c3 = empty, c4 = (1,0),(1,1).
# GT instances: g0 = row 0, g1 = (1,0),(1,1); union 6 px.
POOL = np.stack([rows(4, 4, 0), px(4, 4, (1, 0), (1, 1), (1, 2)), rows(4, 4, 2, 3),
                 np.zeros((4, 4), bool), px(4, 4, (1, 0), (1, 1))])
GT_INSTANCES = np.stack([rows(4, 4, 0), px(4, 4, (1, 0), (1, 1))])


def test_oracle_coverage_selects_candidates_mostly_inside_the_target():
    # coverage |c ∩ gt| / |c|: c0 1, c1 2/3, c2 0, c3 empty (never), c4 1.
    assert oracle_selection(POOL, GT_INSTANCES) == [0, 1, 4]
    assert oracle_selection(POOL, GT_INSTANCES.any(0)) == [0, 1, 4]
    assert oracle_selection(POOL, GT_INSTANCES, thr=0.7) == [0, 4]


def test_oracle_coverage_threshold_is_strict():
    # A 2-pixel candidate half inside the target: 1/2 is not > 0.5.
    half = px(2, 2, (0, 0), (0, 1))[None]
    assert oracle_selection(half, px(2, 2, (0, 0))) == []
    assert oracle_selection(half, px(2, 2, (0, 0)), thr=0.49) == [0]


def test_oracle_best_per_instance_picks_each_instances_best_iou():
    # g0: c0 IoU 1. g1: c1 2/3, c4 1 -> c4.
    assert oracle_selection(POOL, GT_INSTANCES, rule="best_per_instance") == [0, 4]
    # Ties go to the first candidate; an instance no candidate touches selects nothing.
    twins = np.stack([rows(2, 2, 0), rows(2, 2, 0)])
    assert oracle_selection(twins, rows(2, 2, 0), rule="best_per_instance") == [0]
    assert oracle_selection(twins, rows(2, 2, 1), rule="best_per_instance") == []
    assert oracle_selection(np.zeros((0, 2, 2), bool), rows(2, 2, 1)) == []
    with pytest.raises(ValueError, match="rule"):
        oracle_selection(twins, rows(2, 2, 0), rule="hungarian")


def test_pool_oracle_metric_needs_no_prediction():
    # A: q1 targets g0+g1 -> c0, c1, c4: union 7 px, I 6, U 7; q2 has no target -> nothing, IoU 1.
    # B has no pool: its query is not scored. gIoU (6/7 + 1) / 2, cIoU 6/7, mean selected 3/2.
    a = Sample(image=np.zeros((4, 4, 3), np.uint8), candidate_masks=POOL, meta={"sample_id": "A"},
               queries=[Query("q1", GT_INSTANCES), Query("q2", np.zeros((0, 4, 4), bool), exists=False)])
    b = one_query_sample(rows(4, 4, 0))
    b.meta["sample_id"] = "B"
    metric = PoolOracleMetric()
    metric.process({"samples": [a, b]}, [{"sample_id": "A"}, {"sample_id": "B"}])
    out = metric.evaluate(size=2)
    assert out["oracle/gIoU"] == pytest.approx((6 / 7 + 1) / 2)
    assert out["oracle/cIoU"] == pytest.approx(6 / 7)
    assert out["oracle/mean_selected"] == 1.5
    assert (out["oracle/n_queries"], out["oracle/n_queries_without_pool"]) == (2, 1)
    best = PoolOracleMetric(rule="best_per_instance")
    best.process({"samples": [a]}, [{"sample_id": "A"}])
    assert best.evaluate(size=1)["oracle/cIoU"] == 1.0   # c0 + c4 = g0 + g1 exactly


def test_pool_oracle_reduction():
    stats = [QueryStats(I=6, U=7, iou=6 / 7, gt_empty=False, pred_empty=False, n_selected=3),
             QueryStats(I=0, U=0, iou=1.0, gt_empty=True, pred_empty=True, n_selected=0)]
    assert summarize_pool_oracle(stats) == pytest.approx(
        {"gIoU": 13 / 14, "cIoU": 6 / 7, "n_queries": 2, "mean_selected": 1.5})


# -- metrics that only score some tasks ------------------------------------------------------------

def test_tasks_filter_keeps_one_entry_per_sample():
    sample, output = gres_batch()
    other = one_query_sample(rows(4, 4, 0), task="res")
    other_out = {"sample_id": "s", "predictions": [QueryPrediction(masks=logits(rows(4, 4, 0)))]}
    metric = GRESMetric(tasks=["gres"])
    metric.process({"samples": [sample, other]}, [output, other_out])
    assert len(metric.results) == 2 and metric.results[1]["queries"] == []
    assert metric.evaluate(size=2)["gres/n_queries"] == 4


# -- distributed evaluation counts every sample once -----------------------------------------------

def dist_dataset():
    """Five samples with 1, 2, 1, 1, 2 queries (7 queries); query k of sample i is perfect iff
    (i + k) is even, else empty, so each sample's contribution is distinguishable. Sample 3's query
    has no target and is rejected (so N-acc is defined)."""
    samples, outputs = [], []
    for i, nq in enumerate([1, 2, 1, 1, 2]):
        qs, ps = [], []
        for k in range(nq):
            if i == 3:
                qs.append(Query(f"q{i}.{k}", np.zeros((0, 2, 2), bool), exists=False))
                ps.append(QueryPrediction(masks=no_mask(2, 2), exists=False))
                continue
            gt = rows(2, 2, 0)
            qs.append(Query(f"q{i}.{k}", gt[None]))
            pred = gt if (i + k) % 2 == 0 else np.zeros((2, 2), bool)
            ps.append(QueryPrediction(masks=logits(pred)))
        samples.append(Sample(image=np.zeros((2, 2, 3), np.uint8), queries=qs, task="gres",
                              meta={"sample_id": f"s{i}"}))
        outputs.append({"sample_id": f"s{i}", "predictions": ps})
    return samples, outputs


def rank_indices(n: int, world_size: int, monkeypatch) -> list[list[int]]:
    """The indices mmengine's DefaultSampler gives each rank (padding wraps around to the start)."""
    import mmengine.dataset.sampler as sampler_mod

    out = []
    for rank in range(world_size):
        monkeypatch.setattr(sampler_mod, "get_dist_info", lambda r=rank: (r, world_size))
        out.append(list(sampler_mod.DefaultSampler(list(range(n)), shuffle=False, seed=0)))
    return out


@pytest.mark.parametrize("metric_cls", [SegIoUMetric, GRESMetric, FalsePremiseMetric])
def test_two_ranks_count_every_sample_once(metric_cls, monkeypatch):
    samples, outputs = dist_dataset()
    per_rank = rank_indices(len(samples), 2, monkeypatch)
    assert per_rank == [[0, 2, 4], [1, 3, 0]]  # rank 1 repeats sample 0 as padding
    rank_results = []
    for indices in per_rank:
        metric = metric_cls()
        for i in indices:  # batch size 1, as a rank's dataloader would feed them
            metric.process({"samples": [samples[i]]}, [outputs[i]])
        rank_results.append(metric.results)
    # What collect_results returns before truncation: the ranks' lists interleaved.
    gathered = [r for group in zip_longest(*rank_results) for r in group if r is not None]
    assert [r["sample_id"] for r in gathered] == ["s0", "s1", "s2", "s3", "s4", "s0"]
    truncated = gathered[: len(samples)]   # evaluate(size) keeps the dataset size
    scores = metric_cls().compute_metrics(truncated)
    single = metric_cls()
    single.process({"samples": samples}, outputs)
    reference = single.compute_metrics(single.results)
    assert scores == reference
    assert scores["n_queries"] == 7
    # Without the truncation sample 0 would count twice.
    assert metric_cls().compute_metrics(gathered)["n_queries"] == 8
