"""Prediction dumps: JSON lines written once, atomically, and re-scored to the very same numbers.

The round trip (model outputs -> dump -> tools/evaluate.py) must reproduce in-process scoring
exactly (==, not approx), for every metric and convention.
"""
import importlib
import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

import reseg.evaluation  # noqa: F401  (registers the metrics and the hook)
from reseg.evaluation.dump import (
    DumpPredictionsHook,
    PredictionDumper,
    build_dataset,
    decode_mask,
    encode_mask,
    load_predictions,
    meta_path,
    record_to_prediction,
    rescore,
)
from reseg.registry import DATASETS, HOOKS, METRICS
from reseg.structures import Query, QueryPrediction, Sample


def load_tool(name: str):
    """The code of ``tools/<name>.py``."""
    return importlib.import_module(f"reseg.tools.{name}")


# -- a tiny dataset, registered for these tests ----------------------------------------------------

def px(h, w, *cells):
    m = np.zeros((h, w), dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def rows(h, w, *idx):
    m = np.zeros((h, w), dtype=bool)
    m[list(idx)] = True
    return m


def make_samples(part: str) -> list[Sample]:
    """Deterministic samples covering what the metrics look at: ignore pixels, no-target and false
    premise queries, a candidate pool, reference masks, a non-square image."""
    none4 = np.zeros((0, 4, 4), dtype=bool)
    if part == "a":
        pool = np.stack([rows(5, 3, 0), rows(5, 3, 1, 2), rows(5, 3, 3, 4), px(5, 3, (0, 0))])
        return [
            Sample(image=np.zeros((4, 4, 3), np.uint8), task="gres",
                   meta={"sample_id": "a|0", "dataset": "partA", "split": "test"},
                   queries=[Query("the top row", rows(4, 4, 0)[None], ignore=px(4, 4, (0, 3))),
                            Query("nothing here", none4, exists=False),
                            Query("two things", np.stack([rows(4, 4, 2), px(4, 4, (3, 3))]))]),
            Sample(image=np.zeros((5, 3, 3), np.uint8), task="ores", candidate_masks=pool,
                   meta={"sample_id": "a|1", "dataset": "partA", "split": "test"},
                   queries=[Query("middle band", rows(5, 3, 1, 2)[None]),
                            Query("like this one", rows(5, 3, 3)[None],
                                  reference_masks=rows(5, 3, 4)[None])]),
        ]
    return [
        Sample(image=np.zeros((4, 4, 3), np.uint8), task="fp",
               meta={"sample_id": "b|0", "dataset": "partB", "split": "test"},
               queries=[Query("the purple cat", none4, exists=False),
                        Query("the left column", np.stack([px(4, 4, (0, 0), (1, 0), (2, 0), (3, 0))]))]),
    ]


def lg(*masks, zero=None):
    """``[m, H, W]`` logits: +3 inside, -3 outside, exactly 0.0 on ``zero`` cells."""
    out = np.stack([np.where(m, 3.0, -3.0) for m in masks]).astype(np.float32)
    if zero is not None:
        out[:, zero] = 0.0
    return out


def make_outputs(samples: list[Sample]) -> list[dict]:
    """Model outputs for :func:`make_samples`: several masks per query (first != union), logits of
    exactly 0, rejections that still carry a mask, no mask at all, selections, scores, text."""
    by_id = {
        "a|0": [
            QueryPrediction(masks=lg(rows(4, 4, 0) | px(4, 4, (1, 1)), zero=px(4, 4, (1, 2))),
                            scores=np.array([0.9], np.float32), text="Sure, [SEG]."),
            QueryPrediction(masks=lg(px(4, 4, (2, 2))), exists=False, text="[REJ]"),
            QueryPrediction(masks=lg(rows(4, 4, 2), px(4, 4, (3, 3), (3, 2))),
                            scores=np.array([0.8, 0.4], np.float32)),
        ],
        "a|1": [
            QueryPrediction(masks=lg(rows(5, 3, 1)), selected=[1, 3]),
            QueryPrediction(masks=np.zeros((0, 5, 3), np.float32), selected=[2]),
        ],
        "b|0": [
            QueryPrediction(masks=lg(np.zeros((4, 4), bool), px(4, 4, (0, 1))), text="Yes [SEG]"),
            QueryPrediction(masks=lg(px(4, 4, (0, 0), (1, 0)), rows(4, 4, 3))),
        ],
    }
    return [{"sample_id": s.sample_id, "predictions": by_id[s.sample_id]} for s in samples]


@DATASETS.register_module(name="DumpTestDataset", force=True)
class DumpTestDataset:
    """``len``/``getitem`` over :func:`make_samples` (``part`` "a" or "b"), mmengine-wrapper ready."""

    def __init__(self, part: str = "a", test_mode: bool = True) -> None:
        self.part = part

    @property
    def metainfo(self) -> dict:
        return {"platform": "reseg-test"}

    def full_init(self) -> None:
        pass

    def __len__(self) -> int:
        return len(make_samples(self.part))

    def __getitem__(self, i: int) -> Sample:
        return make_samples(self.part)[i]


DATASET_CFG = dict(type="ConcatDataset", datasets=[dict(type="DumpTestDataset", part="a"),
                                                   dict(type="DumpTestDataset", part="b")])
EVALUATOR_CFG = [
    dict(type="SegIoUMetric", split_by="dataset"),
    dict(type="SegIoUMetric", prefix="seg480", eval_size=[8, 8], empty_union_iou=0.0),
    dict(type="GRESMetric", pr_thresholds=[0.5, 0.7]),
    dict(type="FalsePremiseMetric"),
    dict(type="ORESMetric"),
    dict(type="PoolOracleMetric"),
]


def all_samples() -> list[Sample]:
    return make_samples("a") + make_samples("b")


def score_in_process(metric_cfgs, samples, outputs, batch_size: int = 2) -> dict:
    metrics = [METRICS.build(dict(c)) for c in metric_cfgs]
    for start in range(0, len(samples), batch_size):
        batch = {"samples": samples[start:start + batch_size]}
        for m in metrics:
            m.process(batch, outputs[start:start + batch_size])
    scores = {}
    for m in metrics:
        scores.update(m.evaluate(len(samples)))
    return scores


def dump(path, samples, outputs, **kwargs) -> PredictionDumper:
    dumper = PredictionDumper(str(path), **kwargs)
    dumper.add({"samples": samples[:2]}, outputs[:2])
    dumper.add({"samples": samples[2:]}, outputs[2:])
    dumper.write()
    return dumper


def assert_same(a: dict, b: dict) -> None:
    """Exactly equal metric dicts (nan == nan)."""
    assert sorted(a) == sorted(b)
    for k in a:
        both_nan = isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])
        assert both_nan or a[k] == b[k], (k, a[k], b[k])


# -- RLE -------------------------------------------------------------------------------------------

def test_rle_is_coco_column_major():
    # 3x4 mask with pixel (1, 2): column-major index 2 * 3 + 1 = 7 -> runs 7 zeros, 1 one, 4 zeros.
    m = px(3, 4, (1, 2))
    assert encode_mask(m) == {"size": [3, 4], "counts": "714"}
    assert (decode_mask({"size": [3, 4], "counts": "714"}) == m).all()
    assert (decode_mask({"size": [3, 4], "counts": [7, 1, 4]}) == m).all()  # uncompressed


def test_rle_round_trips_odd_shapes_and_empty_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 3), (7, 11)]:
        m = rng.random(shape) > 0.5
        assert (decode_mask(encode_mask(m)) == m).all()
        assert not decode_mask(encode_mask(np.zeros(shape, bool))).any()


# -- the records -----------------------------------------------------------------------------------

def test_records_hold_the_binarised_union_and_the_first_mask_when_they_differ(tmp_path):
    samples, outputs = all_samples(), make_outputs(all_samples())
    dumper = dump(tmp_path / "p.jsonl", samples, outputs)
    recs = dumper.records
    assert len(recs) == 7  # 3 + 2 + 2 queries, one line each
    first = recs[0]
    assert (first["sample_id"], first["dataset"], first["split"], first["task"]) == \
        ("a|0", "partA", "test", "gres")
    assert (first["query_index"], first["query"], first["threshold"], first["inclusive_threshold"]) == \
        (0, "the top row", 0.0, False)
    # Logit exactly 0 at (1, 2) is background under "> 0": the union is row 0 + (1, 1).
    assert (decode_mask(first["mask_rle"]) == (rows(4, 4, 0) | px(4, 4, (1, 1)))).all()
    assert first["first_mask_rle"] is None and first["num_masks"] == 1
    assert first["scores"] == [pytest.approx(0.9)] and first["text"] == "Sure, [SEG]."
    # Two masks whose union differs from the first: both kept.
    third = recs[2]
    assert third["num_masks"] == 2
    assert (decode_mask(third["first_mask_rle"]) == rows(4, 4, 2)).all()
    assert (decode_mask(third["mask_rle"]) == (rows(4, 4, 2) | px(4, 4, (3, 3), (3, 2)))).all()
    assert recs[1]["exists"] is False and recs[3]["selected"] == [1, 3]
    assert recs[4]["num_masks"] == 0 and recs[4]["selected"] == [2]
    # With GSVA's ">=" the 0-logit pixel is foreground.
    inclusive = PredictionDumper(str(tmp_path / "q.jsonl"), inclusive_threshold=True)
    rec = inclusive.encode_sample(samples[0], outputs[0])[0]
    assert decode_mask(rec["mask_rle"])[1, 2] and rec["inclusive_threshold"] is True


def test_a_record_reads_back_as_the_prediction_the_metrics_need():
    rec = {"sample_id": "x", "query_index": 0, "mask_rle": encode_mask(rows(2, 2, 0)),
           "first_mask_rle": encode_mask(px(2, 2, (0, 0))), "num_masks": 3, "exists": False,
           "text": "t", "selected": [4]}
    pred = record_to_prediction(rec, (2, 2))
    assert pred.masks.shape == (2, 2, 2) and pred.masks.dtype == bool
    assert (pred.masks[0] == px(2, 2, (0, 0))).all() and (pred.masks.any(0) == rows(2, 2, 0)).all()
    assert (pred.exists, pred.text, pred.selected) == (False, "t", [4])
    # Minimal external line: only the required keys.
    minimal = record_to_prediction({"sample_id": "x", "query_index": 0,
                                    "mask_rle": encode_mask(rows(2, 2, 1))}, (2, 2))
    assert minimal.masks.shape == (1, 2, 2) and minimal.exists is True
    assert record_to_prediction({"sample_id": "x", "query_index": 0, "mask_rle": None},
                                (2, 2)).masks.shape == (0, 2, 2)
    with pytest.raises(ValueError, match="image is"):
        record_to_prediction(rec, (3, 2))


# -- writing: never overwrite, never leave half a file ---------------------------------------------

def test_an_existing_dump_is_never_overwritten_unless_asked(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("keep me\n")
    with pytest.raises(FileExistsError, match="overwrite"):
        PredictionDumper(str(path))
    with pytest.raises(FileExistsError, match="overwrite"):
        DumpPredictionsHook(out_file=str(path))
    samples, outputs = all_samples(), make_outputs(all_samples())
    dump(path, samples, outputs, overwrite=True)
    assert len(path.read_text().splitlines()) == 7
    assert sorted(os.listdir(tmp_path)) == ["p.jsonl"]  # no temporary file left behind


def test_a_dump_appearing_meanwhile_is_not_overwritten(tmp_path):
    path = tmp_path / "p.jsonl"
    dumper = PredictionDumper(str(path))
    path.write_text("written by someone else\n")
    with pytest.raises(FileExistsError):
        dumper.write(meta={"config": "x"})
    assert path.read_text() == "written by someone else\n"
    assert not os.path.exists(meta_path(str(path)))


# -- the round trip --------------------------------------------------------------------------------

def test_rescoring_a_dump_gives_identical_numbers(tmp_path):
    samples, outputs = all_samples(), make_outputs(all_samples())
    expected = score_in_process(EVALUATOR_CFG, samples, outputs)
    dump(tmp_path / "p.jsonl", samples, outputs)
    dataset = build_dataset(DATASET_CFG)
    metrics = [METRICS.build(dict(c)) for c in EVALUATOR_CFG]
    scores, report = rescore(dataset, metrics, load_predictions(str(tmp_path / "p.jsonl")))
    assert_same(scores, expected)
    assert report == {"n_samples": 3, "n_queries": 7, "n_missing": 0, "n_unmatched_samples": 0}
    # Every metric and split produced numbers (the round trip is not vacuous).
    for key in ("seg/partA/cIoU", "seg480/gIoU", "gres/N-acc", "gres/Pr@0.5", "fp/See",
                "ores/hybrid/cIoU", "oracle/cIoU"):
        assert key in scores and not math.isnan(scores[key]), key


def test_evaluate_tool_rescores_with_the_config_and_metric_options(tmp_path):
    samples, outputs = all_samples(), make_outputs(all_samples())
    preds = tmp_path / "p.jsonl"
    dump(preds, samples, outputs)
    config = tmp_path / "cfg.py"
    config.write_text(f"test_dataloader = dict(dataset={DATASET_CFG!r})\n"
                      f"test_evaluator = {EVALUATOR_CFG!r}\n")
    evaluate = load_tool("evaluate")

    out = tmp_path / "m.json"
    assert evaluate.main([str(preds), "--config", str(config), "--out-metrics", str(out)]) == 0
    result = json.loads(out.read_text())
    assert_same(result["metrics"], score_in_process(EVALUATOR_CFG, samples, outputs))
    assert result["report"]["n_queries"] == 7
    assert [c["metric"] for c in result["conventions"]][:3] == \
        ["SegIoUMetric", "SegIoUMetric", "GRESMetric"]
    assert result["conventions"][2]["nt_mode"] == "rela"

    # --metric-options reach the metrics that have them, by name or by "Type.name".
    gsva = tmp_path / "g.json"
    evaluate.main([str(preds), "--config", str(config), "--out-metrics", str(gsva),
                   "--metric-options", "nt_mode=gsva", "GRESMetric.grefcoco=false"])
    changed = [dict(c, nt_mode="gsva", grefcoco=False) if c["type"] == "GRESMetric" else c
               for c in EVALUATOR_CFG]
    result = json.loads(gsva.read_text())
    assert_same(result["metrics"], score_in_process(changed, samples, outputs))
    assert result["conventions"][2]["nt_mode"] == "gsva"
    with pytest.raises(SystemExit, match="no_such_option"):
        evaluate.main([str(preds), "--config", str(config), "--metric-options", "no_such_option=1"])


def test_missing_and_mismatched_predictions_are_reported(tmp_path):
    samples, outputs = all_samples(), make_outputs(all_samples())
    preds = tmp_path / "p.jsonl"
    dump(preds, samples, outputs)
    lines = preds.read_text().splitlines()
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines[1:]) + "\n")  # drop sample a|0, query 0
    table = load_predictions(str(short))
    dataset = build_dataset(DATASET_CFG)
    with pytest.raises(ValueError, match=r"1 of 7 queries have no prediction.*a\|0#0"):
        rescore(dataset, [METRICS.build(dict(type="SegIoUMetric"))], table)
    scores, report = rescore(dataset, [METRICS.build(dict(type="SegIoUMetric"))], table,
                             missing="empty")
    assert report["n_missing"] == 1 and scores["seg/n_queries"] == 7

    swapped = json.loads(lines[0])
    swapped["query"] = "another query"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([json.dumps(swapped)] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match="another dataset config"):
        rescore(dataset, [METRICS.build(dict(type="SegIoUMetric"))], load_predictions(str(bad)))

    dup = tmp_path / "dup.jsonl"
    dup.write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(ValueError, match="duplicate prediction for sample 'a\\|0', query 0"):
        load_predictions(str(dup))


def test_an_external_model_dump_needs_only_ids_and_masks(tmp_path):
    # An external model answers every query of part B: the false premise with nothing, the
    # column query with the exact column. See 1, Segment 4/4.
    lines = [{"sample_id": "b|0", "query_index": 0, "mask_rle": None, "exists": False},
             {"sample_id": "b|0", "query_index": 1,
              "mask_rle": encode_mask(px(4, 4, (0, 0), (1, 0), (2, 0), (3, 0)))}]
    path = tmp_path / "ext.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    dataset = build_dataset(dict(type="DumpTestDataset", part="b"))
    scores, _ = rescore(dataset, [METRICS.build(dict(type="FalsePremiseMetric"))],
                        load_predictions(str(path)))
    assert scores["fp/See"] == 1.0 and scores["fp/Segment"] == pytest.approx(1.0)


# -- the runner hook -------------------------------------------------------------------------------

def fake_runner(metrics, dataset):
    cfg = Config(dict(test_dataloader=dict(dataset=DATASET_CFG), test_evaluator=EVALUATOR_CFG,
                      load_from="ckpt.pth", model=dict(val_mode="teacher_forcing")))
    return SimpleNamespace(test_evaluator=SimpleNamespace(metrics=metrics),
                           test_dataloader=SimpleNamespace(dataset=dataset), cfg=cfg,
                           logger=MMLogger.get_instance("reseg_test_dump"))


def test_hook_dumps_with_the_metrics_threshold_and_rescoring_matches(tmp_path):
    assert HOOKS.get("DumpPredictionsHook") is DumpPredictionsHook
    cfgs = [dict(c, inclusive_threshold=True) for c in EVALUATOR_CFG]
    samples, outputs = all_samples(), make_outputs(all_samples())
    metrics = [METRICS.build(dict(c)) for c in cfgs]
    dataset = build_dataset(DATASET_CFG)
    runner = fake_runner(metrics, dataset)
    path = tmp_path / "hook.jsonl"
    hook = HOOKS.build(dict(type="DumpPredictionsHook", out_file=str(path)))
    hook.before_test(runner)
    for start in range(0, 3, 2):  # the test loop: evaluator and hook see the same batches
        batch = {"samples": samples[start:start + 2]}
        for m in metrics:
            m.process(batch, outputs[start:start + 2])
        hook.after_test_iter(runner, start // 2, batch, outputs[start:start + 2])
    expected = {}
    for m in metrics:
        expected.update(m.evaluate(len(dataset)))
    hook.after_test_epoch(runner, expected)

    table = load_predictions(str(path))
    assert {r["inclusive_threshold"] for per in table.values() for r in per.values()} == {True}
    meta = json.loads(Path(meta_path(str(path))).read_text())
    assert (meta["format"], meta["num_samples"], meta["num_queries"]) == ("reseg-predictions/1", 3, 7)
    assert meta["checkpoint"] == "ckpt.pth" and meta["conventions"][2]["metric"] == "GRESMetric"
    scores, _ = rescore(dataset, [METRICS.build(dict(c)) for c in cfgs], table)
    assert_same(scores, expected)


def test_hook_refuses_metrics_that_binarise_differently(tmp_path):
    metrics = [METRICS.build(dict(type="SegIoUMetric")),
               METRICS.build(dict(type="GRESMetric", inclusive_threshold=True))]
    hook = DumpPredictionsHook(out_file=str(tmp_path / "p.jsonl"))
    with pytest.raises(ValueError, match="binarise masks differently"):
        hook.before_test(fake_runner(metrics, build_dataset(DATASET_CFG)))
    explicit = DumpPredictionsHook(out_file=str(tmp_path / "p.jsonl"), threshold=0.0,
                                   inclusive_threshold=False)
    explicit.before_test(fake_runner(metrics, build_dataset(DATASET_CFG)))
    assert explicit.dumper.inclusive_threshold is False


def test_test_tool_refuses_to_overwrite_a_dump(tmp_path):
    test_tool = load_tool("test")
    config, ckpt, preds = tmp_path / "c.py", tmp_path / "w.pth", tmp_path / "p.jsonl"
    config.write_text("model = dict()\n")
    ckpt.write_bytes(b"")
    preds.write_text("old\n")
    args = test_tool.parse_args([str(config), str(ckpt), "--dump-predictions", str(preds)])
    assert args.dump_predictions == str(preds) and args.overwrite_dump is False
    with pytest.raises(SystemExit, match="--overwrite-dump"):
        test_tool.main([str(config), str(ckpt), "--dump-predictions", str(preds)])
    assert preds.read_text() == "old\n"
