"""tools/analyze_predictions.py: per-kind gIoU and same-image overlap of a RES prediction dump."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reseg.tools import analyze_predictions as ap


def test_mask_iou_and_the_empty_union_convention():
    a = np.zeros((2, 4), bool)
    b = a.copy()
    assert ap.mask_iou(a, b) == 1.0  # both empty: they agree
    a[0, :2] = True
    b[0, 1:3] = True
    assert ap.mask_iou(a, b) == pytest.approx(1 / 3)


def test_per_kind_means_and_same_image_overlap_on_hand_made_masks():
    full, empty = np.ones((2, 2), bool), np.zeros((2, 2), bool)
    half = np.array([[1, 1], [0, 0]], bool)
    by_kind = ap.iou_by_kind([("colour", full, full), ("colour", half, full), ("position", empty, full)])
    assert by_kind == pytest.approx({"all": 0.5, "colour": 0.75, "position": 0.0})
    overlap, pairs = ap.same_image_overlap({"a": [full, half, full], "b": [empty]})
    assert pairs == 3 and overlap == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_ground_truth_dump_of_the_synthetic_refer_split_scores_one_everywhere(synth_root, tmp_path, capsys):
    from pycocotools.coco import COCO

    from reseg.datasets.safe_pickle import load_pickle
    from reseg.evaluation.dump import encode_mask

    root = synth_root / "refer_seg" / "synthref"
    coco = COCO(str(root / "instances.json"))
    lines, kinds = [], set()
    for r in [r for r in load_pickle(root / "refs(unc).p") if r["split"] == "val"][:12]:
        gt = coco.annToMask(coco.anns[r["ann_id"]]).astype(bool)
        for k, s in enumerate(r["sentences"]):
            kinds.add(r["synth_strategies"][k])
            lines.append(dict(sample_id=f"synthref|unc|val|{r['image_id']}", dataset="synthref",
                              query=s["sent"], mask_rle=encode_mask(gt)))
    dump = tmp_path / "preds.jsonl"
    dump.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert ap.main([str(dump), "--refer-root", str(synth_root / "refer_seg")]) == 0
    out = capsys.readouterr().out
    for kind in kinds | {"all"}:
        assert f"gIoU {kind:10s} 1.000" in out
    assert "mask IoU between two queries of one image" in out

    lines[0]["query"] = "a sentence nobody wrote"
    dump.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(SystemExit, match="a sentence nobody wrote"):
        ap.main([str(dump), "--refer-root", str(synth_root / "refer_seg")])
