"""Segmentation metrics (specs/seg_token_family.md §1.8, §4.5; platform_research.md §C6).

Every expected value is worked out by hand in the comments next to it.
"""
import numpy as np
import pytest
import torch

import reseg.evaluation  # noqa: F401  (registers the metrics)
from reseg.evaluation.functional import (
    QueryStats,
    binarize,
    intersection_union,
    query_iou,
    query_stats,
    summarize_counts,
    summarize_giou_ciou,
)
from reseg.evaluation.metrics import SegIoUMetric
from reseg.registry import METRICS
from reseg.structures import Query, QueryPrediction, Sample


def rows(h: int, w: int, n: int) -> np.ndarray:
    """``[h, w] bool`` mask whose first ``n`` rows are set."""
    m = np.zeros((h, w), dtype=bool)
    m[:n] = True
    return m


def logits_of(mask: np.ndarray) -> np.ndarray:
    """``[1, H, W]`` float logits that binarise back to ``mask`` (+5 inside, -5 outside)."""
    return np.where(mask, 5.0, -5.0)[None].astype(np.float32)


# Three queries of different sizes, used by the gIoU/cIoU and end-to-end tests:
#   q1  2x2:   gt = pred = 1 pixel            -> I = 1,  U = 1,  IoU = 1
#   q2  4x4:   gt = 2 rows (8), pred = 1 row  -> I = 4,  U = 8,  IoU = 1/2
#   q3 10x10:  gt = 6 rows (60), pred = 4 rows -> I = 40, U = 60, IoU = 2/3
# gIoU = (1 + 1/2 + 2/3) / 3 = 13/18; cIoU = (1 + 4 + 40) / (1 + 8 + 60) = 45/69,
# up to LISA's epsilons (IoU = I / (U + 1e-5), gIoU = sum / (N + 1e-5),
# cIoU = sum I / (sum U + 1e-10)), which the expectations below spell out.
Q1_GT = np.array([[True, False], [False, False]])
Q1_PRED = Q1_GT.copy()
Q2_GT, Q2_PRED = rows(4, 4, 2), rows(4, 4, 1)
Q3_GT, Q3_PRED = rows(10, 10, 6), rows(10, 10, 4)


def lisa_iou(i: int, u: int) -> float:
    return i / (u + 1e-5)


def lisa_giou(*ious: float) -> float:
    return sum(ious) / (len(ious) + 1e-5)


GIOU = lisa_giou(lisa_iou(1, 1), lisa_iou(4, 8), lisa_iou(40, 60))
CIOU = 45 / (69 + 1e-10)


# -- per-query statistics --------------------------------------------------------------------------

def test_intersection_union_counts_foreground_pixels():
    assert intersection_union(Q2_PRED, Q2_GT) == (4, 8)


def test_ignored_pixels_leave_both_intersection_and_union():
    pred = np.ones((2, 2), dtype=bool)
    gt = np.array([[True, True], [False, False]])
    ignore = np.array([[False, True], [True, False]])
    # Without ignore: I = 2, U = 4. Ignoring (0,1) (in both) and (1,0) (pred only): I = 1, U = 2.
    assert intersection_union(pred, gt) == (2, 4)
    assert intersection_union(pred, gt, ignore) == (1, 2)


def test_intersection_union_accepts_torch_and_0_1_integers():
    assert intersection_union(torch.from_numpy(Q2_PRED), Q2_GT.astype(np.uint8)) == (4, 8)


def test_intersection_union_refuses_logits_and_encoded_ignore_labels():
    with pytest.raises(TypeError, match="binarize"):
        intersection_union(np.zeros((2, 2), dtype=np.float32), Q1_GT)
    with pytest.raises(ValueError, match="ignore"):
        intersection_union(Q1_PRED, np.array([[1, 255], [0, 0]], dtype=np.uint8))


def test_intersection_union_refuses_masks_of_different_sizes():
    with pytest.raises(ValueError, match="original image size"):
        intersection_union(Q1_PRED, Q2_GT)


def test_query_iou_uses_lisa_epsilon():
    # LISA: I / (U + 1e-5).
    assert query_iou(4, 8) == pytest.approx(4 / (8 + 1e-5), rel=1e-12)
    assert query_iou(4, 8) < 0.5


def test_both_empty_scores_one_by_default_and_zero_with_the_mmdet_option():
    empty = np.zeros((3, 3), dtype=bool)
    assert query_iou(0, 0) == 1.0
    assert query_iou(0, 0, empty_union_iou=0.0) == 0.0
    s = query_stats(empty, empty)
    assert (s.I, s.U, s.iou, s.gt_empty, s.pred_empty) == (0, 0, 1.0, True, True)
    assert query_stats(empty, empty, empty_union_iou=0.0).iou == 0.0


def test_empty_gt_with_a_predicted_mask_scores_zero_and_adds_its_area_to_the_union():
    pred, gt = rows(3, 3, 1), np.zeros((3, 3), dtype=bool)
    s = query_stats(pred, gt)
    assert (s.I, s.U, s.iou, s.gt_area, s.pred_area) == (0, 3, 0.0, 0, 3)
    assert (s.gt_empty, s.pred_empty) == (True, False)
    # In cIoU that union counts: a perfect 2x2 query (I = U = 1) next to it gives 1 / (1 + 3).
    perfect = query_stats(Q1_PRED, Q1_GT)
    assert summarize_giou_ciou([perfect, s])["cIoU"] == pytest.approx(1 / 4)


def test_query_iou_rejects_impossible_counts():
    with pytest.raises(ValueError):
        query_iou(3, 2)


def test_query_stats_keeps_areas_consistent_with_the_union():
    ignore = np.zeros((10, 10), dtype=bool)
    ignore[:, 0] = True  # drops 6 gt pixels, 4 of them predicted
    s = query_stats(Q3_PRED, Q3_GT, ignore)
    assert (s.I, s.U, s.gt_area, s.pred_area) == (36, 54, 54, 36)
    assert s.U == s.gt_area + s.pred_area - s.I


# -- binarisation ----------------------------------------------------------------------------------

def test_a_logit_of_exactly_zero_is_background_for_lisa_and_foreground_for_gsva():
    logits = np.array([[-0.5, 0.0], [0.0, 0.5]], dtype=np.float32)
    assert binarize(logits).tolist() == [[False, False], [False, True]]
    assert binarize(logits, inclusive=True).tolist() == [[False, True], [True, True]]
    t = torch.from_numpy(logits)
    assert binarize(t).tolist() == [[False, False], [False, True]]
    assert binarize(t, inclusive=True).dtype == torch.bool
    # QueryPrediction.binary_mask follows the same rule.
    pred = QueryPrediction(masks=logits[None])
    assert (pred.binary_mask() == binarize(logits)).all()
    assert (pred.binary_mask(inclusive=True) == binarize(logits, inclusive=True)).all()


def test_binarize_leaves_bool_masks_alone():
    assert binarize(Q1_GT) is Q1_GT


# -- reductions ------------------------------------------------------------------------------------

def test_giou_averages_queries_while_ciou_pools_pixels():
    stats = [query_stats(Q1_PRED, Q1_GT), query_stats(Q2_PRED, Q2_GT), query_stats(Q3_PRED, Q3_GT)]
    out = summarize_giou_ciou(stats)
    assert out["n"] == 3
    assert out["gIoU"] == pytest.approx(GIOU, rel=1e-12)
    assert out["cIoU"] == pytest.approx(CIOU, rel=1e-12)
    assert (GIOU, CIOU) == pytest.approx((13 / 18, 45 / 69), rel=1e-4)
    # The big query dominates cIoU, every query weighs the same in gIoU.
    assert out["gIoU"] > out["cIoU"]


def test_summaries_of_no_query_are_nan():
    out = summarize_giou_ciou([])
    assert out["n"] == 0 and np.isnan(out["gIoU"]) and np.isnan(out["cIoU"])


def test_summarize_counts():
    stats = [QueryStats(I=0, U=0, iou=1.0, gt_empty=True, pred_empty=True),
             QueryStats(I=0, U=3, iou=0.0, gt_empty=True, pred_empty=False),
             QueryStats(I=1, U=2, iou=0.5, gt_empty=False, pred_empty=False)]
    assert summarize_counts(stats) == {"n_queries": 3, "n_empty_gt": 2, "n_empty_pred": 1}


# -- the mmengine metric ---------------------------------------------------------------------------

def make_batch():
    """Two samples: A (4x4 image) with q1-like and q2 queries, B (10x10) with q3 (long query).

    Query a1 lives on a 4x4 image: gt = pixel (0,0), pred = pixel (0,0) plus an ignored pixel (0,1),
    so it still scores I = 1, U = 1.
    """
    a1_gt = np.zeros((4, 4), dtype=bool)
    a1_gt[0, 0] = True
    a1_pred = a1_gt.copy()
    a1_pred[0, 1] = True
    a1_ignore = np.zeros((4, 4), dtype=bool)
    a1_ignore[0, 1] = True
    sample_a = Sample(
        image=np.zeros((4, 4, 3), dtype=np.uint8),
        queries=[
            Query(text="the dot", masks=a1_gt[None], ignore=a1_ignore),
            Query(text="the top", masks=Q2_GT[None]),
        ],
        meta={"sample_id": "a"},
    )
    sample_b = Sample(
        image=np.zeros((10, 10, 3), dtype=np.uint8),
        queries=[Query(text="what keeps the top dry?", masks=Q3_GT[None], is_sentence=True)],
        meta={"sample_id": "b"},
    )
    outputs = [
        {"sample_id": "a", "predictions": [
            QueryPrediction(masks=logits_of(a1_pred)),
            QueryPrediction(masks=torch.from_numpy(logits_of(Q2_PRED))),  # torch logits work too
        ]},
        {"sample_id": "b", "predictions": [QueryPrediction(masks=logits_of(Q3_PRED))]},
    ]
    return [sample_a, sample_b], outputs


def scalar_leaves_only(obj) -> bool:
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return False
    if isinstance(obj, dict):
        return all(scalar_leaves_only(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(scalar_leaves_only(v) for v in obj)
    if isinstance(obj, QueryStats):
        return all(scalar_leaves_only(v) for v in vars(obj).values())
    return obj is None or isinstance(obj, (bool, int, float, str))


def test_metric_is_registered():
    assert METRICS.module_dict["SegIoUMetric"] is SegIoUMetric


def test_metric_end_to_end_reports_giou_ciou_and_counts():
    samples, outputs = make_batch()
    metric = SegIoUMetric()
    metric.process({"samples": samples[:1]}, outputs[:1])
    metric.process({"samples": samples[1:]}, outputs[1:])
    assert len(metric.results) == 2  # one entry per sample, as evaluate(size) expects
    assert scalar_leaves_only(metric.results)
    out = metric.evaluate(size=2)
    assert out["seg/gIoU"] == pytest.approx(GIOU, rel=1e-12)
    assert out["seg/cIoU"] == pytest.approx(CIOU, rel=1e-12)
    assert out["seg/n_queries"] == 3 and out["seg/n_empty_gt"] == 0
    assert all(isinstance(v, (int, float)) for v in out.values())
    assert metric.results == []  # evaluate resets


def test_metric_drops_samples_the_sampler_padded_in():
    samples, outputs = make_batch()
    metric = SegIoUMetric(prefix="val")
    metric.process({"samples": samples}, outputs)
    # A distributed sampler wrapped around and fed sample A once more.
    metric.process({"samples": samples[:1]}, outputs[:1])
    out = metric.evaluate(size=2)
    assert out["val/n_queries"] == 3
    assert out["val/gIoU"] == pytest.approx(GIOU, rel=1e-12)


def test_metric_splits_reasonseg_short_and_long_queries():
    samples, outputs = make_batch()
    metric = SegIoUMetric(split_by="is_sentence")
    metric.process({"samples": samples}, outputs)
    out = metric.evaluate(size=2)
    # short: a1 (I = U = 1) and q2 (4/8) -> gIoU 3/4, cIoU 5/9; long: q3 -> 2/3 and 40/60.
    assert out["seg/short/gIoU"] == pytest.approx(lisa_giou(lisa_iou(1, 1), lisa_iou(4, 8)))
    assert out["seg/short/cIoU"] == pytest.approx(5 / 9)
    assert out["seg/short/n_queries"] == 2
    assert out["seg/long/gIoU"] == pytest.approx(lisa_giou(lisa_iou(40, 60)))
    assert out["seg/long/cIoU"] == pytest.approx(2 / 3)
    assert out["seg/gIoU"] == pytest.approx(GIOU)


def test_metric_empty_union_option_and_no_mask_predictions():
    # An empty-GT query answered with no mask at all (m = 0), next to a perfect query.
    empty_gt = Query(text="the unicorn", masks=np.zeros((0, 2, 2), dtype=bool), exists=False)
    perfect = Query(text="the dot", masks=Q1_GT[None])
    sample = Sample(image=np.zeros((2, 2, 3), dtype=np.uint8), queries=[empty_gt, perfect],
                    meta={"sample_id": "s"})
    output = {"sample_id": "s", "predictions": [
        QueryPrediction(masks=np.zeros((0, 2, 2), dtype=np.float32), exists=False),
        QueryPrediction(masks=logits_of(Q1_PRED)),
    ]}
    lisa, mmdet = SegIoUMetric(), SegIoUMetric(empty_union_iou=0.0)
    for metric in (lisa, mmdet):
        metric.process({"samples": [sample]}, [output])
    records = lisa.results[0]["queries"]
    assert (records[0].gt_exists, records[0].pred_exists) == (False, False)
    lisa_out, mmdet_out = lisa.evaluate(size=1), mmdet.evaluate(size=1)
    # LISA: (1 + 1) / 2 = 1; mmdet: (0 + 1) / 2 = 1/2 (up to eps). cIoU = 1/1 for both.
    assert lisa_out["seg/gIoU"] == pytest.approx(lisa_giou(1.0, lisa_iou(1, 1)))
    assert mmdet_out["seg/gIoU"] == pytest.approx(lisa_giou(0.0, lisa_iou(1, 1)))
    assert lisa_out["seg/cIoU"] == mmdet_out["seg/cIoU"] == pytest.approx(1.0)
    assert lisa_out["seg/n_empty_gt"] == 1 and lisa_out["seg/n_empty_pred"] == 1


def test_metric_inclusive_threshold_counts_zero_logits():
    sample = Sample(image=np.zeros((2, 2, 3), dtype=np.uint8),
                    queries=[Query(text="the dot", masks=Q1_GT[None])], meta={"sample_id": "s"})
    logits = np.array([[[0.0, -1.0], [-1.0, -1.0]]], dtype=np.float32)
    output = {"sample_id": "s", "predictions": [QueryPrediction(masks=logits)]}
    lisa, gsva = SegIoUMetric(), SegIoUMetric(inclusive_threshold=True)
    for metric in (lisa, gsva):
        metric.process({"samples": [sample]}, [output])
    assert lisa.evaluate(size=1)["seg/gIoU"] == 0.0  # 0 > 0 is False: empty prediction
    assert gsva.evaluate(size=1)["seg/gIoU"] == pytest.approx(lisa_giou(lisa_iou(1, 1)))


def test_metric_rejects_a_prediction_count_that_does_not_match_the_queries():
    samples, outputs = make_batch()
    outputs[0]["predictions"] = outputs[0]["predictions"][:1]
    with pytest.raises(ValueError, match="2 queries but the model returned 1"):
        SegIoUMetric().process({"samples": samples}, outputs)


def test_metric_rejects_predictions_not_at_the_original_size():
    samples, outputs = make_batch()
    outputs[1]["predictions"] = [QueryPrediction(masks=np.zeros((1, 5, 5), dtype=np.float32))]
    with pytest.raises(ValueError, match="sample 'b', query 0"):
        SegIoUMetric().process({"samples": samples}, outputs)


def test_metric_rejects_outputs_out_of_order():
    samples, outputs = make_batch()
    with pytest.raises(ValueError, match="order"):
        SegIoUMetric().process({"samples": samples}, outputs[::-1])


# -- additions of the unified evaluator ------------------------------------------------------------

def test_binarize_stack_gives_m_h_w_bool_and_keeps_bool_tensors():
    from reseg.evaluation.functional import binarize_stack

    logits = np.array([[0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    assert binarize_stack(logits).shape == (1, 2, 2)                     # [H, W] -> [1, H, W]
    assert binarize_stack(np.zeros((0, 2, 2), np.float32)).shape == (0, 2, 2)
    assert binarize_stack(torch.from_numpy(logits), inclusive=True).sum() == 3  # 0, 1, 0 >= 0
    # A bool tensor is a finished mask: ">=" must not turn its False pixels (0.0) into True.
    mask = torch.tensor([[[True, False], [False, False]]])
    assert binarize_stack(mask, inclusive=True).tolist() == [[[True, False], [False, False]]]


def test_metric_scores_bool_tensor_masks_the_same_under_both_thresholds():
    sample = Sample(image=np.zeros((2, 2, 3), dtype=np.uint8),
                    queries=[Query(text="the dot", masks=Q1_GT[None])], meta={"sample_id": "s"})
    output = {"sample_id": "s", "predictions": [QueryPrediction(masks=torch.from_numpy(Q1_PRED[None]))]}
    for inclusive in (False, True):
        metric = SegIoUMetric(inclusive_threshold=inclusive)
        metric.process({"samples": [sample]}, [output])
        assert metric.evaluate(size=1)["seg/cIoU"] == pytest.approx(1.0)  # I = U = 1


def test_rejected_prediction_is_empty_even_if_it_carries_a_mask():
    sample = Sample(image=np.zeros((4, 4, 3), dtype=np.uint8),
                    queries=[Query(text="the top", masks=Q2_GT[None])], meta={"sample_id": "s"})
    output = {"sample_id": "s", "predictions": [
        QueryPrediction(masks=logits_of(Q2_GT), exists=False)]}
    metric = SegIoUMetric()
    metric.process({"samples": [sample]}, [output])
    record = metric.results[0]["queries"][0]
    # Scored as an empty mask: I = 0, U = |GT| = 8 (SESAME's "no [SEG] -> zero mask").
    assert (record.I, record.U, record.pred_empty, record.pred_exists) == (0, 8, True, False)


def test_ciou_without_epsilon_and_without_any_union_is_nan():
    empty = QueryStats(I=0, U=0, iou=1.0, gt_empty=True, pred_empty=True)
    assert np.isnan(summarize_giou_ciou([empty], ciou_eps=0.0)["cIoU"])
    assert summarize_giou_ciou([empty])["cIoU"] == 0.0  # LISA's 1e-10 keeps it 0 / 1e-10


def test_seg_metric_conventions():
    conv = SegIoUMetric(split_by="is_sentence", inclusive_threshold=True).conventions()
    assert conv["metric"] == "SegIoUMetric" and conv["prefix"] == "seg"
    assert (conv["empty_union_iou"], conv["iou_eps"], conv["ciou_eps"]) == (1.0, 1e-5, 1e-10)
    assert (conv["inclusive_threshold"], conv["split_by"], conv["use_ignore"]) == (True, "is_sentence", True)
    assert conv["eval_size"] is None and conv["rejected_as_empty"] is True


def test_baselines_largest_and_all_objects_by_hand():
    """An image with a 2x4 object (rows 0-1) and a 1x4 object (row 3), 4x4 pixels. Query A asks for
    the small object, query B for the big one; a third dataset without ``object_masks`` is skipped.

    largest_object predicts the big object: IoU_A = 0 / 12 = 0, IoU_B = 1 -> gIoU 0.5,
    cIoU = (0 + 8) / (12 + 8) = 0.4. all_objects predicts both: IoU_A = 4 / 12 = 1/3, IoU_B = 8 / 12 = 2/3
    -> gIoU 0.5, cIoU = (4 + 8) / (12 + 12) = 0.5 (up to the metric's epsilons)."""
    from reseg.evaluation.baselines import evaluate_baselines

    big, small = rows(4, 4, 2), np.zeros((4, 4), bool)
    small[3] = True

    class WithObjects:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return Sample(image=np.zeros((4, 4, 3), np.uint8), meta=dict(sample_id="a"),
                          queries=[Query("small", small[None]), Query("big", big[None])])

        def object_masks(self, i):
            return np.stack([big, small])

    res = evaluate_baselines(WithObjects(), dict(type="SegIoUMetric", prefix="t"))
    assert res["largest_object"]["t/gIoU"] == pytest.approx(0.5, abs=1e-4)
    assert res["largest_object"]["t/cIoU"] == pytest.approx(8 / 20, abs=1e-4)
    assert res["all_objects"]["t/gIoU"] == pytest.approx((1 / 3 + 2 / 3) / 2, abs=1e-4)
    assert res["all_objects"]["t/cIoU"] == pytest.approx(12 / 24, abs=1e-4)
    assert res["all_objects"]["n_skipped_samples"] == 0
    assert "all_candidates" not in res  # no sample carries a pool


def test_pool_baselines_by_hand():
    """A pool of the big object (rows 0-1) and a 1x4 strip (row 3); the query asks for the strip. The ORES
    scoring has no epsilon. largest_candidate picks the big one: IoU 0; all_candidates predicts both:
    IoU 4 / 12."""
    from reseg.evaluation.baselines import evaluate_baselines

    big, small = rows(4, 4, 2), np.zeros((4, 4), bool)
    small[3] = True

    class WithPool:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return Sample(image=np.zeros((4, 4, 3), np.uint8), meta=dict(sample_id="a"), task="ores",
                          candidate_masks=np.stack([big, small]), queries=[Query("the strip", small[None])])

    res = evaluate_baselines(WithPool(), dict(type="ORESMetric", prefix="o"))
    assert res["largest_candidate"]["o/gIoU"] == 0.0
    assert res["all_candidates"]["o/gIoU"] == pytest.approx(4 / 12)
    assert res["all_candidates"]["o/cIoU"] == pytest.approx(4 / 12)
