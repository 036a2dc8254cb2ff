"""Data layer v2: gRefCOCO, FP-/R-RefCOCO and MaskGroups loaders, pool labels, MixedDataset, generator v2."""
from __future__ import annotations

import json
import random
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest

from reseg.datasets import (
    REF_PLACEHOLDER,
    DatasetFormatError,
    FPRefCOCODataset,
    GRefCOCODataset,
    MaskGroupsDataset,
    MixedDataset,
    ReasonSegDataset,
    RefCOCODataset,
    decode_rle,
    dump_pickle,
    encode_rle,
    load_pickle,
    match_pool_labels,
    premise_exists,
)
from reseg.datasets.io import coco_segmentation_to_mask, read_json
from reseg.datasets.synthref import generate_synthref
from reseg.datasets.synthref.candidate_pools import candidate_pool, shift_mask, split_halves
from reseg.datasets.synthref.group_language import (
    REF_TOKEN,
    false_premise_variant,
    multi_target_candidates,
    no_target_candidates,
    reference_candidates,
)
from reseg.datasets.synthref.language import RefExpr, group, resolve
from reseg.datasets.synthref.scene import Scene, SceneObject, fill_polygon, sample_scene, shape_vertices
from reseg.registry import DATASETS
from reseg.structures import Sample

GREF = "grefcoco_synth"
FP = "fprefcoco_synth"
FP_REFS = "refs(berkeley_exclude_unified).p"


def gref(root: Path, split: str = "val", **kw) -> GRefCOCODataset:
    return GRefCOCODataset(root / "refer_seg", dataset=GREF, split=split, **kw)


def fpref(root: Path, split: str = "val", **kw) -> FPRefCOCODataset:
    return FPRefCOCODataset(root / "refer_seg", dataset=FP, split=split, **kw)


def groups(root: Path, split: str = "validation", **kw) -> MaskGroupsDataset:
    return MaskGroupsDataset(root / "mask_groups", split=split, **kw)


# -- hand-made masks ---------------------------------------------------------------------------------

H, W = 10, 12


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


TARGET = _box(2, 6, 1, 6)       # 20 px
OTHER = _box(2, 6, 6, 10)       # 16 px, touching TARGET
POOL = np.stack([
    TARGET,                      # 0 exact
    _box(2, 6, 1, 3),            # 1 left part of the target (8 px)
    TARGET | _box(2, 6, 6, 11),  # 2 target + 20 px of other: coverage exactly 0.5
    _box(7, 10, 0, 4),           # 3 background
    TARGET | _box(2, 6, 6, 7),   # 4 target + one column of other (20 / 24)
    np.zeros((H, W), bool),      # 5 empty
])


def test_pool_labels_coverage_rule():
    assert match_pool_labels(POOL, TARGET[None]).tolist() == [1, 1, 0, 0, 1, 0]
    assert match_pool_labels(POOL, TARGET).tolist() == [1, 1, 0, 0, 1, 0]  # [H, W] accepted
    assert match_pool_labels(POOL, TARGET[None], thr=0.45).tolist() == [1, 1, 1, 0, 1, 0]
    # the group's union counts: the merge is fully covered by target + other
    both = np.stack([TARGET, OTHER])
    assert match_pool_labels(POOL, both).tolist() == [1, 1, 1, 0, 1, 0]
    assert match_pool_labels(POOL, np.zeros((0, H, W), bool)).tolist() == [0] * 6  # empty group
    assert match_pool_labels(np.zeros((0, H, W), bool), TARGET[None]).shape == (0,)
    assert match_pool_labels(POOL, TARGET[None]).dtype == np.uint8


def test_pool_labels_iou_rule():
    # IoU with the target: 1, 0.4, 0.5, 0, 20/24, 0
    assert match_pool_labels(POOL, TARGET[None], rule="iou").tolist() == [1, 0, 1, 0, 1, 0]
    assert match_pool_labels(POOL, TARGET[None], rule="iou", thr=0.6).tolist() == [1, 0, 0, 0, 1, 0]
    # per instance, not the union: the merge of two instances (IoU 20/36 and 16/36) matches neither
    both = np.stack([TARGET, OTHER])
    merged = (TARGET | OTHER)[None]
    assert match_pool_labels(merged, both, rule="iou", thr=0.6).tolist() == [0]
    assert match_pool_labels(merged, both, rule="coverage", thr=0.6).tolist() == [1]
    assert match_pool_labels(OTHER[None], both, rule="iou", thr=0.6).tolist() == [1]


def test_pool_labels_reject_bad_input():
    with pytest.raises(ValueError, match="rule"):
        match_pool_labels(POOL, TARGET, rule="best")
    with pytest.raises(ValueError, match="same H, W"):
        match_pool_labels(POOL, np.zeros((1, 3, 3), bool))


def test_rle_round_trip_and_checks():
    for m in (TARGET, OTHER | _box(8, 10, 9, 12), np.zeros((H, W), bool), np.ones((H, W), bool)):
        rle = encode_rle(m)
        assert rle["size"] == [H, W] and isinstance(rle["counts"], str)
        assert (decode_rle(rle, "x") == m).all()
        json.dumps(rle)
    # uncompressed counts (column-major runs, starting with background)
    assert (decode_rle({"size": [2, 3], "counts": [1, 2, 3]}, "x") == np.array([[0, 1, 0], [1, 0, 0]], bool)).all()
    with pytest.raises(DatasetFormatError, match=r"file\.json: mask_pool\[3\].*add up to 5.*\[2, 3\]"):
        decode_rle({"size": [2, 3], "counts": [1, 2, 2]}, "file.json: mask_pool[3]")
    with pytest.raises(DatasetFormatError, match="'size'"):
        decode_rle({"size": [2], "counts": "0"}, "here")
    with pytest.raises(DatasetFormatError, match="'counts'"):
        decode_rle({"size": [2, 3]}, "here")
    bad = dict(encode_rle(TARGET), counts="")
    with pytest.raises(DatasetFormatError, match="add up to 0"):
        decode_rle(bad, "here")


# -- gRefCOCO ----------------------------------------------------------------------------------------


def test_grefcoco_test_mode_on_the_synthetic_split(synth_root, synth_config):
    ds = gref(synth_root, "val", test_mode=True)
    refs = [r for r in read_json(synth_root / f"refer_seg/{GREF}/grefs(unc).json") if r["split"] == "val"]
    coco = read_json(synth_root / f"refer_seg/{GREF}/instances.json")
    area = {a["id"]: a["area"] for a in coco["annotations"]}
    assert len(ds) == synth_config().gref_counts["val"]
    assert ds.info["num_sentences"] == sum(len(r["sentences"]) for r in refs)
    kinds = Counter()
    total = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s.task == "gres" and s.meta["dataset"] == GREF
        for q in s.queries:
            total += 1
            ids = q.meta["ann_ids"]
            if ids == [-1]:
                kinds["none"] += 1
                assert not q.exists and q.masks.shape == (0,) + s.size and not q.target.any()
            else:
                kinds["multi" if len(ids) > 1 else "single"] += 1
                assert q.exists and q.masks.shape == (len(ids),) + s.size
                for m, a in zip(q.masks, ids):
                    assert m.sum() == pytest.approx(area[a], abs=1)
                assert q.target.sum() == sum(area[a] for a in ids)  # visible parts are disjoint
    assert total == ds.info["num_sentences"]
    assert kinds["none"] > 0 and kinds["multi"] > 0 and kinds["single"] > 0


def test_grefcoco_train_mode_and_pickle_fallback(synth_root, tmp_path):
    ds = gref(synth_root, "train", num_queries_per_sample=2, seed=0)
    for i in range(len(ds)):
        ref_ids = [q.meta["ref_id"] for q in ds[i].queries]
        assert 1 <= len(ref_ids) == len(set(ref_ids)) <= 2
    a, b = gref(synth_root, "train", seed=3), gref(synth_root, "train", seed=3)
    assert [q.text for i in range(3) for q in a[i].queries] == [q.text for i in range(3) for q in b[i].queries]
    # grefs(unc).p is read (safely) when there is no JSON
    shutil.copytree(synth_root / "refer_seg", tmp_path / "refer_seg")
    folder = tmp_path / "refer_seg" / GREF
    dump_pickle(read_json(folder / "grefs(unc).json"), folder / "grefs(unc).p")
    (folder / "grefs(unc).json").unlink()
    p = gref(tmp_path, "val", test_mode=True)
    j = gref(synth_root, "val", test_mode=True)
    assert p.refs_file.name == "grefs(unc).p"
    assert [q.text for q in p[0].queries] == [q.text for q in j[0].queries]
    (folder / "grefs(unc).p").unlink()
    with pytest.raises(FileNotFoundError, match=r"grefs\(unc\)\.json.*grefs\(unc\)\.p"):
        gref(tmp_path, "val")


def _tiny_refer(root: Path, dataset: str, refs_name: str, refs: list, annotations: list, h: int = 20, w: int = 30):
    """A one-image REFER-layout dataset under ``root/<dataset>`` with images in ``root/imgs``."""
    (root / dataset).mkdir(parents=True)
    (root / "imgs").mkdir(exist_ok=True)
    cv2.imwrite(str(root / "imgs" / "a.png"), np.full((h, w, 3), 200, np.uint8))
    coco = dict(images=[dict(id=1, file_name="a.png", height=h, width=w)], annotations=annotations,
                categories=[dict(id=1, name="thing")])
    (root / dataset / "instances.json").write_text(json.dumps(coco))
    if refs_name.endswith(".json"):
        (root / dataset / refs_name).write_text(json.dumps(refs))
    else:
        dump_pickle(refs, root / dataset / refs_name)


def test_grefcoco_union_no_target_and_short_polygons(tmp_path):
    anns = [
        # a square plus a 2-point "polygon" that must be dropped (ReLA / GSVA)
        dict(id=10, image_id=1, category_id=1, segmentation=[[2, 2, 8, 2, 8, 8, 2, 8], [20, 15, 25, 18]]),
        dict(id=11, image_id=1, category_id=1, segmentation=[[12, 2, 18, 2, 18, 8, 12, 8]]),
    ]
    refs = [
        dict(ref_id=1, image_id=1, split="val", ann_id=[10, 11], category_id=[1, 1],
             sentences=[dict(sent="Both Squares", sent_id=1), dict(sent="the two squares", sent_id=2)]),
        dict(ref_id=2, image_id=1, split="val", ann_id=[-1], category_id=[-1],
             sentences=[dict(sent="the purple star", sent_id=3)]),
        dict(ref_id=3, image_id=1, split="val", ann_id=[11], category_id=[1],
             sentences=[dict(sent="the right square", sent_id=4)]),
    ]
    _tiny_refer(tmp_path, "grefcoco", "grefs(unc).json", refs, anns)
    ds = GRefCOCODataset(tmp_path, split="val", image_dir="imgs", test_mode=True)
    (s,) = [ds[0]]
    assert [q.text for q in s.queries] == ["both squares", "the two squares", "the purple star", "the right square"]
    both, _, star, right = s.queries
    assert both.masks.shape == (2, 20, 30) and both.exists
    expected = coco_segmentation_to_mask(anns[0]["segmentation"][:1], 20, 30) | coco_segmentation_to_mask(
        anns[1]["segmentation"], 20, 30)
    assert (both.target == expected).all()
    assert not both.masks[0, 15:19, 20:26].any()  # the short polygon was dropped
    assert star.masks.shape == (0, 20, 30) and not star.exists and star.meta["ann_ids"] == [-1]
    assert right.masks.shape == (1, 20, 30)
    # training draws refs without replacement
    train = GRefCOCODataset(tmp_path, split="val", image_dir="imgs", num_queries_per_sample=5, seed=1)
    assert sorted(q.meta["ref_id"] for q in train[0].queries) == [1, 2, 3]
    # unknown annotation ids are reported with the file
    refs[2]["ann_id"] = [99]
    (tmp_path / "grefcoco" / "grefs(unc).json").write_text(json.dumps(refs))
    with pytest.raises(DatasetFormatError, match=r"instances\.json: annotation id 99 \(ref_id 3\)"):
        GRefCOCODataset(tmp_path, split="val", image_dir="imgs")
    (tmp_path / "grefcoco" / "grefs(unc).json").write_text(json.dumps({"refs": refs}))
    with pytest.raises(DatasetFormatError, match="JSON list of refs"):
        GRefCOCODataset(tmp_path, split="val", image_dir="imgs")


# -- FP-RefCOCO / R-RefCOCO -------------------------------------------------------------------------


def test_premise_rule():
    assert premise_exists({"is_false_premise": True, "exist": True}) is False  # is_false_premise first
    assert premise_exists({"is_false_premise": False, "exist": False}) is True
    assert premise_exists({"exist": False}) is False and premise_exists({"exist": True}) is True
    assert premise_exists({"sent": "x"}) is True
    assert premise_exists({"is_false_premise": None, "exist": 0}) is False
    with pytest.raises(DatasetFormatError, match=r"ref 7.*is_false_premise"):
        premise_exists({"is_false_premise": "maybe"}, "ref 7")


def test_fprefcoco_on_the_synthetic_split(synth_root):
    ds = fpref(synth_root, "val", test_mode=True)
    assert ds.split_by == "berkeley_exclude_unified" and ds.refs_file.name == FP_REFS
    refs = [r for r in load_pickle(synth_root / f"refer_seg/{FP}/{FP_REFS}") if r["split"] == "val"]
    n_fp = sum(s["is_false_premise"] for r in refs for s in r["sentences"])
    assert ds.info["num_false_premise"] == n_fp > 0
    seen_fp = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s.task == "fp"
        true_texts = {q.text for q in s.queries if not q.meta["is_false_premise"]}
        for q in s.queries:
            assert "gt_sent" in q.meta and isinstance(q.meta["ann_ids"][0], int) and q.meta["ann_ids"] != [-1]
            if q.meta["is_false_premise"]:
                seen_fp += 1
                assert not q.exists and q.masks.shape == (0,) + s.size
                assert q.meta["gt_sent"] in true_texts and q.meta["gt_sent"] != q.text
            else:
                assert q.exists and q.masks.shape == (1,) + s.size and q.masks.any()
                assert q.meta["gt_sent"] == q.text
    assert seen_fp == n_fp


def test_r_refcoco_exist_field_and_default_split_by(tmp_path):
    anns = [dict(id=10, image_id=1, category_id=1, segmentation=[[2, 2, 8, 2, 8, 8, 2, 8]])]
    refs = [dict(ref_id=1, image_id=1, split="val", ann_id=10, category_id=1, sentences=[
        dict(sent="the square", sent_id=1, exist=True),
        dict(sent="the dog", sent_id=2, exist=False),
        dict(sent="the box", sent_id=3),
        dict(sent="the cat", sent_id=4, is_false_premise=True, gt_sent="the square", exist=True),
    ])]
    _tiny_refer(tmp_path, "R-refcoco", "refs(unc_exclude_unified).p", refs, anns)
    ds = FPRefCOCODataset(tmp_path, dataset="R-refcoco", split="val", image_dir="imgs", test_mode=True)
    assert ds.split_by == "unc_exclude_unified"
    qs = ds[0].queries
    assert [q.exists for q in qs] == [True, False, True, False]
    assert [q.masks.shape[0] for q in qs] == [1, 0, 1, 0]
    assert qs[1].meta["exist"] is False and qs[3].meta["gt_sent"] == "the square"
    assert ds.info["num_false_premise"] == 2


# -- MaskGroups --------------------------------------------------------------------------------------


def _record(rid: str, text: str, image: str = "a.png", pool=POOL, gt=(TARGET, OTHER), group=((0,),), **extra):
    rec = {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": f"<image>\n<mask_pool>\n{text}"},
                          {"from": "gpt", "value": "ok"}],
        "mask_pool": [encode_rle(m) for m in pool],
        "gt_mask_pool": [encode_rle(m) for m in gt],
        "gt_mask_group": [list(g) for g in group],
    }
    rec.update(extra)
    return rec


def _write_groups(root: Path, records: list, name: str = "validation.json", image_dir: str = "images_resized"):
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / image_dir / "a.png"), np.full((H, W, 3), 90, np.uint8))
    cv2.imwrite(str(root / image_dir / "b.png"), np.full((H, W, 3), 90, np.uint8))
    path = root / name
    if name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    else:
        path.write_text(json.dumps(records))
    return path


def test_maskgroups_hand_made_pool(tmp_path):
    recs = [
        _record("q0", "Every shape like <mask-ref>", ref_mask=[1], caption="two boxes"),
        _record("q1", "The left box", group=((0,), (1,))),
        _record("q2", "Nothing", group=((),), image="b.png"),
        _record("q3", "Both boxes", ref_mask=[encode_rle(OTHER)], group=((0, 1),)),
    ]
    _write_groups(tmp_path, recs)
    ds = MaskGroupsDataset(tmp_path, split="validation", ref_token="<mask-ref>", test_mode=True)
    assert ds.image_dir.name == "images_resized"
    assert len(ds) == 2 and ds.info["num_records"] == 4 and ds.info["num_hybrid"] == 2
    a = ds[0]
    assert a.task == "ores" and a.candidate_masks.shape == (6, H, W) and a.candidate_masks.dtype == bool
    assert (a.candidate_masks == POOL).all()
    assert a.meta["record_ids"] == ["q0", "q1", "q3"] and a.meta["caption"] == "two boxes"
    q0, q1, q3 = a.queries
    assert q0.text == f"Every shape like {REF_PLACEHOLDER}" and q0.meta["has_reference"]
    assert (q0.reference_masks == OTHER[None]).all() and q0.meta["ref_indices"] == [1]
    assert (q0.masks == TARGET[None]).all() and q0.exists
    assert q0.pool_labels.tolist() == [1, 1, 0, 0, 1, 0] and q0.meta["response"] == "ok"
    assert q1.reference_masks is None and not q1.meta["has_reference"] and q1.text == "The left box"
    assert (q3.reference_masks == OTHER[None]).all() and "ref_indices" not in q3.meta
    assert q3.masks.shape == (2, H, W) and q3.pool_labels.tolist() == [1, 1, 1, 0, 1, 0]
    (q2,) = ds[1].queries
    assert not q2.exists and q2.masks.shape == (0, H, W) and q2.pool_labels.tolist() == [0] * 6
    # options: the second group, the IoU rule, one record per sample, training sampling
    other = MaskGroupsDataset(tmp_path, split="validation", ref_token="<mask-ref>", test_mode=True,
                              group_index=-1, label_rule="iou", group_by_image=False)
    assert len(other) == 4
    q1b = other[1].queries[0]
    assert (q1b.masks == OTHER[None]).all() and q1b.pool_labels.tolist() == [0, 0, 0, 0, 0, 0]
    assert other[0].queries[0].pool_labels.tolist() == [1, 0, 1, 0, 1, 0]
    train = MaskGroupsDataset(tmp_path, split="validation", ref_token="<mask-ref>", num_queries_per_sample=2,
                              seed=0)
    ids = [q.meta["id"] for q in train[0].queries]
    assert len(ids) == len(set(ids)) == 2 and set(ids) <= {"q0", "q1", "q3"}


def test_maskgroups_jsonl_ann_file_and_image_dir(tmp_path):
    late = _record("q1", "")
    late["conversations"][0]["value"] = "<image> Which boxes touch <mask_ref>?\n<mask_pool>"
    late["ref_mask"] = 1
    _write_groups(tmp_path, [_record("q0", "A box"), late], name="val.jsonl", image_dir="pics")
    ds = MaskGroupsDataset(tmp_path, split="val", image_dir="pics", test_mode=True)
    assert ds.ann_file.name == "val.jsonl" and len(ds[0].queries) == 2
    assert ds[0].queries[1].text == "Which boxes touch <mask_ref>?"
    assert ds[0].queries[1].meta["ref_indices"] == [1]  # a single index is accepted
    ds2 = MaskGroupsDataset(tmp_path, ann_file="val.jsonl", split="other", image_dir="pics")
    assert ds2.info["split"] == "other"
    with pytest.raises(FileNotFoundError, match=r"images_resized, images.*image_dir"):
        MaskGroupsDataset(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match=r"no train\.json or train\.jsonl.*val"):
        MaskGroupsDataset(tmp_path, split="train", image_dir="pics")


@pytest.mark.parametrize("change, pattern", [
    (lambda r: r.pop("gt_mask_group"), r"record #0 \(id 'q0'\): missing key 'gt_mask_group'"),
    (lambda r: r.pop("mask_pool"), r"record #0 \(id 'q0'\): missing key 'mask_pool'"),
    (lambda r: r.update(gt_mask_group=[[0, 5]]), r"'q0'.*'gt_mask_group'\[0\] has indices \[5\] out of range"),
    (lambda r: r.update(gt_mask_group=[]), r"'q0'.*group_index=0 is out of range"),
    (lambda r: r.update(ref_mask=[7]), r"'q0'.*'ref_mask'.*indices \[7\] out of range"),
    (lambda r: r.update(ref_mask=["x"]), r"'q0'.*'ref_mask'.*indices into 'gt_mask_pool' or COCO RLE"),
    (lambda r: r["mask_pool"][2].update(size=[H + 1, W]), r"'q0'.*mask_pool\[2\] has size \[11, 12\]"),
    (lambda r: r["mask_pool"][1].pop("counts"), r"'q0'.*mask_pool\[1\].*'counts'"),
    (lambda r: r.update(conversations=[{"from": "gpt", "value": "hi"}]), r"'q0'.*no human turn"),
    (lambda r: r["conversations"][0].update(value="<image>\n<mask_pool>\n<mask_ref> left"),
     r"'q0'.*contains '<mask_ref>'.*no reference mask in 'ref_mask'"),
])
def test_maskgroups_format_errors_name_file_record_and_field(tmp_path, change, pattern):
    rec = _record("q0", "A box")
    change(rec)
    path = _write_groups(tmp_path, [rec])
    with pytest.raises(DatasetFormatError, match=pattern) as err:
        MaskGroupsDataset(tmp_path, split="validation")
    assert str(path) in str(err.value)


def test_maskgroups_mask_size_must_match_the_image(tmp_path):
    small = [np.zeros((5, 6), bool) for _ in range(2)]
    small[0][1:3, 1:4] = True
    path = _write_groups(tmp_path, [_record("q0", "A box", pool=small, gt=small[:1])])
    ds = MaskGroupsDataset(tmp_path, split="validation", test_mode=True)
    with pytest.raises(DatasetFormatError, match=rf"{re.escape(str(path))}: record #0 \(id 'q0'\): "
                                                 r"mask_pool\[0\] is 5x6.*a\.png is 10x12"):
        ds[0]
    resized = MaskGroupsDataset(tmp_path, split="validation", test_mode=True, mask_size_mismatch="resize")
    s = resized[0]
    assert s.candidate_masks.shape == (2, H, W) and s.candidate_masks[0].sum() == 4 * small[0].sum()
    assert s.queries[0].pool_labels.tolist() == [1, 0]


def test_maskgroups_on_the_synthetic_split(synth_root):
    ds = groups(synth_root, "validation", test_mode=True, dataset_name="maskgroups_synth")
    records = read_json(synth_root / "mask_groups/validation.json")
    assert ds.info["num_records"] == len(records) and len(ds) == ds.info["num_images"]
    by_id = {r["id"]: r for r in records}
    n = Counter()
    for i in range(len(ds)):
        s = ds[i]
        assert s.meta["dataset"] == "maskgroups_synth" and s.meta["caption"]
        assert s.candidate_masks.shape[1:] == s.size and len(s.candidate_masks) >= 3
        for q in s.queries:
            rec = by_id[q.meta["id"]]
            n["queries"] += 1
            assert len(q.pool_labels) == len(s.candidate_masks)
            assert (q.pool_labels == match_pool_labels(s.candidate_masks, q.masks)).all()
            assert q.masks.shape[0] == len(rec["gt_mask_group"][0])
            assert (REF_PLACEHOLDER in q.text) == q.meta["has_reference"] == ("ref_mask" in rec)
            if q.meta["has_reference"]:
                n["hybrid"] += 1
                assert q.reference_masks.shape == (1,) + s.size and q.reference_masks.any()
            n["empty"] += not q.exists
            n["positive"] += bool(q.pool_labels.any())
    assert n["queries"] == len(records)
    assert 0 < n["hybrid"] < n["queries"] and n["empty"] > 0 and n["positive"] > n["queries"] // 2


# -- MixedDataset ------------------------------------------------------------------------------------


def _sources(root: Path) -> list:
    return [
        dict(type="RefCOCODataset", data_root=str(root / "refer_seg"), dataset="synthref", split="train"),
        [dict(type="GRefCOCODataset", data_root=str(root / "refer_seg"), dataset=GREF, split="train"),
         dict(type="FPRefCOCODataset", data_root=str(root / "refer_seg"), dataset=FP, split="train")],
        dict(type="ReasonSegDataset", data_root=str(root / "reason_seg"), split="train"),
        dict(type="MaskGroupsDataset", data_root=str(root / "mask_groups"), split="train"),
    ]


def test_mixed_source_frequencies_follow_the_rates(synth_root):
    ds = MixedDataset(_sources(synth_root), rates=[9, 3, 3, 1], length=4000, seed=0)
    assert len(ds) == 4000
    draws = [ds.draw(i) for i in range(len(ds))]
    freq = Counter(s for s, _, _ in draws)
    for src, rate in enumerate([9, 3, 3, 1]):
        assert freq[src] / len(ds) == pytest.approx(rate / 16, abs=0.025)
    members = Counter(m for s, m, _ in draws if s == 1)  # uniform over the source's datasets
    assert members[0] / freq[1] == pytest.approx(0.5, abs=0.06)
    sizes = ds.info["source_lengths"]
    assert all(0 <= item < sizes[s][m] for s, m, item in draws)
    assert len({item for s, _, item in draws if s == 0}) == sizes[0][0]  # every item gets drawn


def test_mixed_items_are_reproducible(synth_root):
    a = MixedDataset(_sources(synth_root), rates=[1, 1, 1, 1], length=12, seed=5)
    b = DATASETS.build(dict(type="MixedDataset", datasets=_sources(synth_root), rates=[1, 1, 1, 1], length=12, seed=5))

    def key(s: Sample):
        return s.sample_id, s.task, [q.text for q in s.queries], s.meta["mixed"], s.meta["seed"]

    first = [key(a[i]) for i in range(12)]
    assert first == [key(b[i]) for i in range(12)] == [key(a[i]) for i in range(12)]
    assert {t for _, t, _, _, _ in first} >= {"res", "reason", "ores"}
    assert all(m["index"] == i for i, (_, _, _, m, _) in enumerate(first))
    assert len({seed for *_, seed in first}) == 12  # each item seeds the head's choices differently
    # the draws depend on the seed and the epoch
    c = MixedDataset(_sources(synth_root), rates=[1, 1, 1, 1], length=12, seed=6)
    assert [c.draw(i) for i in range(12)] != [a.draw(i) for i in range(12)]
    a.set_epoch(1)
    assert [a.draw(i) for i in range(12)] != [b.draw(i) for i in range(12)]
    # seed=None: from numpy's global state (what mmengine's Runner seeds)
    np.random.seed(123)
    d1 = MixedDataset(_sources(synth_root), length=5)
    np.random.seed(123)
    d2 = MixedDataset(_sources(synth_root), length=5)
    assert d1.base_seed == d2.base_seed and [d1.draw(i) for i in range(5)] == [d2.draw(i) for i in range(5)]
    assert d1.info["probabilities"] == [0.25] * 4
    with pytest.raises(IndexError):
        a[12]


def test_mixed_items_do_not_depend_on_the_worker(synth_root):
    from torch.utils.data import DataLoader

    from reseg.datasets import reseg_collate

    ds = MixedDataset(_sources(synth_root)[:3], rates=[2, 1, 1], length=6, seed=1)
    direct = [[q.text for q in ds[i].queries] for i in range(6)]
    random.seed(99)  # the global RNG does not matter
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=reseg_collate)
    via_worker = [[q.text for q in s.queries] for batch in loader for s in batch["samples"]]
    assert via_worker == direct


def test_mixed_metainfo_and_argument_errors(synth_root):
    from mmengine.dataset import ConcatDataset
    from mmengine.registry import DefaultScope

    refer = RefCOCODataset(synth_root / "refer_seg", dataset="synthref", split="val")
    ds = MixedDataset([refer, ReasonSegDataset(synth_root / "reason_seg", split="val")], length=4, seed=0)
    assert ds.metainfo == refer.metainfo
    with DefaultScope.overwrite_default_scope("reseg"):
        cat = ConcatDataset([
            dict(type="MixedDataset", datasets=_sources(synth_root)[:2], length=3, seed=0),
            dict(type="GRefCOCODataset", data_root=str(synth_root / "refer_seg"), dataset=GREF, split="val"),
        ])
    assert len(cat) == 3 + len(gref(synth_root, "val"))

    class Other:
        metainfo: ClassVar[dict] = {"classes": ("cat",)}

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return i

    with pytest.raises(ValueError, match=r"metainfo of source 1\[0\]"):
        MixedDataset([refer, Other()], seed=0)
    with pytest.raises(ValueError, match="2 rates for 1 sources"):
        MixedDataset([refer], rates=[1, 2], seed=0)
    with pytest.raises(ValueError, match="not all 0"):
        MixedDataset([refer, refer], rates=[0, 0], seed=0)
    with pytest.raises(ValueError, match="not all 0"):
        MixedDataset([refer, refer], rates=[1, -1], seed=0)
    with pytest.raises(ValueError, match="length"):
        MixedDataset([refer], length=0, seed=0)
    with pytest.raises(TypeError, match="source 0"):
        MixedDataset([42], seed=0)
    assert len(MixedDataset([refer, [refer, refer]], seed=0)) == 3 * len(refer)


def test_get_with_rng_restores_the_dataset_rng(synth_root):
    ds = RefCOCODataset(synth_root / "refer_seg", dataset="synthref", split="train", seed=0)
    own = ds._own_rng
    a = ds.get_with_rng(0, random.Random(7))
    b = ds.get_with_rng(0, random.Random(7))
    assert [q.text for q in a.queries] == [q.text for q in b.queries] and ds._own_rng is own


# -- generator v2 ------------------------------------------------------------------------------------


def _files(root: Path, *parts: str) -> dict[str, bytes]:
    out = {}
    for part in parts:
        for p in sorted((root / part).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


V2_PARTS = (f"refer_seg/{GREF}", f"refer_seg/images/{GREF}", f"refer_seg/{FP}", f"refer_seg/images/{FP}",
            "mask_groups")


def test_v2_splits_are_deterministic_and_independent_of_v1(tmp_path, synth_root, synth_config):
    cfg = synth_config(refer_counts={}, reason_counts={})
    meta = generate_synthref(tmp_path / "v2", cfg)
    assert _files(tmp_path / "v2", *V2_PARTS) == _files(synth_root, *V2_PARTS)
    assert not (tmp_path / "v2" / "refer_seg" / "synthref").exists()
    saved = json.loads((synth_root / "synthref_meta.json").read_text())
    for key in ("grefcoco", "fprefcoco", "mask_groups"):
        assert meta[key]["splits"] == saved[key]["splits"]
    assert saved["version"] == "2.0"
    assert saved["mask_groups"]["splits"]["validation"]["images"] == cfg.maskgroups_counts["validation"]
    assert saved["grefcoco"]["splits"]["val"]["refs_no_target"] > 0
    generate_synthref(tmp_path / "seed1", synth_config(seed=1, refer_counts={}, reason_counts={}))
    a, b = _files(synth_root, *V2_PARTS), _files(tmp_path / "seed1", *V2_PARTS)
    assert a.keys() == b.keys() and sum(a[k] != b[k] for k in a) > len(a) // 2


def test_generated_gref_and_fp_files_are_consistent(synth_root):
    coco = read_json(synth_root / f"refer_seg/{GREF}/instances.json")
    anns = {a["id"]: a for a in coco["annotations"]}
    refs = read_json(synth_root / f"refer_seg/{GREF}/grefs(unc).json")
    texts_per_image: dict[int, list[str]] = {}
    for r in refs:
        assert isinstance(r["ann_id"], list) and isinstance(r["category_id"], list)
        if r["ann_id"] != [-1]:
            assert all(anns[a]["image_id"] == r["image_id"] for a in r["ann_id"])
            assert r["category_id"] == [anns[a]["category_id"] for a in r["ann_id"]]
        if r["synth_strategy"] == "colour":  # "all red shapes": exactly the objects of that colour
            colours = {anns[a]["synth"]["colour"] for a in r["ann_id"]}
            (colour,) = colours
            assert sorted(a["id"] for a in anns.values() if a["image_id"] == r["image_id"]
                          and a["synth"]["colour"] == colour) == sorted(r["ann_id"])
        for s in r["sentences"]:
            assert s["tokens"] == s["sent"].split() and s["sent"] == s["sent"].lower()
            texts_per_image.setdefault(r["image_id"], []).append(s["sent"])
    assert all(len(t) == len(set(t)) for t in texts_per_image.values())  # no text means two things
    fp = load_pickle(synth_root / f"refer_seg/{FP}/{FP_REFS}")
    for r in fp:
        true = [s["sent"] for s in r["sentences"] if not s["is_false_premise"]]
        assert true
        for s in r["sentences"]:
            assert s["gt_sent"] in true


def test_generated_maskgroups_records(synth_root):
    records = read_json(synth_root / "mask_groups/train.json")
    how = Counter()
    for r in records:
        assert {"id", "image", "conversations", "mask_pool", "gt_mask_pool", "gt_mask_group", "caption"} <= r.keys()
        human = r["conversations"][0]["value"]
        assert human.startswith("<image>\n<mask_pool>\n")
        assert (REF_TOKEN in human) == ("ref_mask" in r)
        assert all(0 <= g < len(r["gt_mask_pool"]) for g in r["gt_mask_group"][0])
        how.update(h.split(":")[0] for h in r["synth"]["pool_sources"])
    assert {"exact", "half", "eroded", "dilated", "shifted", "background"} <= set(how)
    assert how["exact"] < sum(how.values()) / 2  # mostly imperfect proposals


# -- group language and pools on hand-made scenes -------------------------------------------------------


def _obj(kind: str, colour: str, cx: float, cy: float, r: float, h: int = 120, w: int = 200) -> SceneObject:
    verts = shape_vertices(kind, r, 0.0, np.random.default_rng(0)) + np.array([cx, cy])
    return SceneObject(kind=kind, colour=colour, rgb=(0, 0, 0), center=(cx, cy), radius=r, angle=0.0,
                       vertices=verts, full_mask=fill_polygon(verts, h, w))


def _scene(*objs: SceneObject, h: int = 120, w: int = 200) -> Scene:
    s = Scene(width=w, height=h, background=np.full((h, w, 3), 230, np.uint8), objects=list(objs))
    s.update_visibility()
    return s


def test_group_expressions_on_a_hand_made_scene():
    # two red circles on the left, a blue square on the right
    scene = _scene(_obj("circle", "red", 30, 40, 12), _obj("circle", "red", 40, 90, 12),
                   _obj("square", "blue", 160, 60, 14))
    rng = np.random.default_rng(0)
    multi = multi_target_candidates(scene, rng)
    by_text = {t: c.targets for c in multi for t in c.texts}
    assert by_text["all red shapes"] == (0, 1) and by_text["the two circles"] == (0, 1)
    pattern = r"every shape left of the (blue|square|blue square|blue (shape|object))"
    left = [t for t in by_text if re.fullmatch(pattern, t)]
    assert left and all(by_text[t] == (0, 1) for t in left)
    assert by_text["all shapes"] == (0, 1, 2)
    assert all(len(c.targets) >= 2 for c in multi)
    none = {t for c in no_target_candidates(scene, rng) for t in c.texts}
    assert "the blue circle" in none and "the red square" in none and "the purple shape" in none
    assert "the triangle" in none and "the red circle" not in none
    # nothing is clearly right of the rightmost shape
    assert any(re.fullmatch(r"(every|the) shape (to the )?right of the \w+( \w+)?", t) for t in none)
    fp = false_premise_variant(RefExpr(None, "square"), scene, rng)
    assert fp is not None and fp.kind != "square" and not group(scene, fp.colour, fp.kind)
    assert resolve(fp, scene) is None
    refs = {c.strategy: c.targets for c in reference_candidates(scene, 0)}
    assert refs["ref_colour"] == (0, 1) and refs["ref_colour_other"] == (1,) and refs["ref_kind"] == (0, 1)
    rel = [c for c in reference_candidates(scene, 2) if c.strategy == "ref_relation"]
    assert any(c.targets == (0, 1) and f"every shape left of {REF_TOKEN}" in c.texts for c in rel)


def test_candidate_pool_is_deterministic_and_imperfect():
    scene = sample_scene(np.random.default_rng(4))
    a, how_a = candidate_pool(scene, np.random.default_rng(1))
    b, how_b = candidate_pool(scene, np.random.default_rng(1))
    assert how_a == how_b and all((x == y).all() for x, y in zip(a, b))
    assert all(m.shape == (scene.height, scene.width) and m.sum() >= 20 for m in a)
    m = scene.objects[0].visible_mask
    left, right = split_halves(m, 0.3)
    assert not (left & right).any() and ((left | right) == m).all() and left.any() and right.any()
    moved = shift_mask(m, 3, -2)
    assert moved.sum() <= m.sum() and (np.roll(np.roll(m, 3, axis=1), -2, axis=0) | ~moved).all()
