"""Dataset loaders (REFER, ReasonSeg), the safe unpickler, mask rasterisation and collation."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from reseg.datasets import (
    DatasetFormatError,
    ReasonSegDataset,
    RefCOCODataset,
    UnknownSplitError,
    UnsafePickleError,
    dump_pickle,
    load_pickle,
    reseg_collate,
)
from reseg.datasets.io import (
    coco_segmentation_to_mask,
    labelme_shapes_to_mask,
    read_json,
)
from reseg.registry import DATASETS, FUNCTIONS
from reseg.structures import Query, Sample

DATASETS_SRC = Path(__file__).resolve().parents[1] / "platform" / "reseg" / "datasets"


def refer(root: Path, split: str = "val", **kw) -> RefCOCODataset:
    return RefCOCODataset(root / "refer_seg", dataset="synthref", split_by="unc", split=split, **kw)


def reason(root: Path, split: str = "val", **kw) -> ReasonSegDataset:
    return ReasonSegDataset(root / "reason_seg", split=split, **kw)


@pytest.fixture
def refer_copy(synth_root, tmp_path) -> Path:
    """A writable copy of the synthetic benchmark's REFER part (``<tmp>/refer_seg``)."""
    shutil.copytree(synth_root / "refer_seg", tmp_path / "refer_seg")
    return tmp_path


@pytest.fixture
def reason_copy(synth_root, tmp_path) -> Path:
    """A writable copy of the synthetic benchmark's ReasonSeg part (``<tmp>/reason_seg``)."""
    shutil.copytree(synth_root / "reason_seg", tmp_path / "reason_seg")
    return tmp_path


# -- safe pickle -------------------------------------------------------------------------------------

REFS = [{"ref_id": 1, "ann_id": 10, "image_id": 5, "category_id": 1, "split": "val", "file_name": "a_10.jpg",
         "sentences": [{"sent": "the red circle", "raw": "The red circle.", "tokens": ["the", "red", "circle"],
                        "sent_id": 7}], "score": 0.5, "flag": True, "none": None}]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_pickle_loads_refer_style_pickles(tmp_path, protocol):
    p = tmp_path / "refs(unc).p"
    p.write_bytes(pickle.dumps(REFS, protocol=protocol))
    assert load_pickle(p) == REFS


def test_safe_pickle_round_trips_dump_pickle(tmp_path):
    dump_pickle(REFS, tmp_path / "sub" / "refs.p")
    assert load_pickle(tmp_path / "sub" / "refs.p") == REFS


def test_safe_pickle_reads_python2_byte_strings(tmp_path):
    # Python 2, protocol 2: {'sent': 'caf\xe9'} with SHORT_BINSTRING (latin-1 byte, not UTF-8)
    data = b"\x80\x02}q\x00(U\x04sentq\x01U\x04caf\xe9q\x02U\x02idK\x07u."
    (tmp_path / "py2.p").write_bytes(data)
    assert load_pickle(tmp_path / "py2.p") == {"sent": "caf\u00e9", "id": 7}
    ascii_data = b"\x80\x02]q\x00}q\x01U\x04sentq\x02U\x03redq\x03sa."
    (tmp_path / "py2b.p").write_bytes(ascii_data)
    assert load_pickle(tmp_path / "py2b.p") == [{"sent": "red"}]
    # Python 2, protocol 0 (what `pickle.dump(refs, f)` wrote by default): text opcodes
    text_data = b"(lp0\n(dp1\nS'sent'\np2\nS'caf\\xe9 man'\np3\nsS'ref_id'\np4\nI12\nsa."
    (tmp_path / "py2c.p").write_bytes(text_data)
    assert load_pickle(tmp_path / "py2c.p") == [{"sent": "caf\u00e9 man", "ref_id": 12}]


class _WritesAFile:
    def __init__(self, target: str, how: str) -> None:
        self.target, self.how = target, how

    def __reduce__(self):
        if self.how == "open":
            return (open, (self.target, "w"))
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("how, global_name", [("open", "io.open"), ("system", f"{os.name}.system")])
def test_safe_pickle_refuses_code_and_never_runs_it(tmp_path, how, global_name):
    target = tmp_path / "pwned.txt"
    p = tmp_path / "refs(unc).p"
    p.write_bytes(pickle.dumps([{"ref_id": 1}, _WritesAFile(str(target), how)], protocol=2))
    with pytest.raises(UnsafePickleError) as err:
        load_pickle(p)
    assert not target.exists()
    msg = str(err.value)
    assert global_name in msg and str(p) in msg
    assert err.value.global_name == global_name


def test_safe_pickle_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing.p"):
        load_pickle(tmp_path / "missing.p")
    p = tmp_path / "cut.p"
    p.write_bytes(pickle.dumps(REFS, protocol=2)[:40])
    with pytest.raises(pickle.UnpicklingError, match=r"cut.p"):
        load_pickle(p)


def test_no_direct_unpickling_in_the_data_layer():
    """Only safe_pickle.py may unpickle (spec: REFER pickles are untrusted input)."""
    pattern = re.compile(r"pickle\.(load|loads|Unpickler)\b")
    for path in DATASETS_SRC.glob("*.py"):
        if path.name != "safe_pickle.py":
            assert not pattern.search(path.read_text()), path


# -- rasterisation -----------------------------------------------------------------------------------


def test_labelme_rasterisation_follows_lisa():
    """spec seg_token_family.md §5.1: skip 'flag', larger first, ignore = 255, else 1."""
    big = [[0, 0], [9, 0], [9, 9], [0, 9]]
    small = [[2, 2], [4, 2], [4, 4], [2, 4]]
    far = [[15, 15], [18, 15], [18, 18], [15, 18]]
    shapes = [
        {"label": "Ignore_blurry", "points": small},  # drawn after "big" (smaller), so it stays 255
        {"label": "target", "points": big},
        {"label": "FLAG", "points": far},             # skipped
    ]
    m = labelme_shapes_to_mask(shapes, 20, 20)
    assert m.dtype == np.uint8 and m.shape == (20, 20)
    assert m[5, 5] == 1 and m[0, 0] == 1 and m[9, 9] == 1  # polylines: the boundary is filled too
    assert (m[2:5, 2:5] == 255).all()
    assert m[16, 16] == 0
    assert set(np.unique(m)) == {0, 1, 255}


def test_coco_masks_from_polygons_and_rle():
    from pycocotools import mask as mask_utils

    ref = np.zeros((30, 40), dtype=bool)
    ref[5:15, 10:30] = True
    ref[20:25, 2:6] = True
    rle = mask_utils.encode(np.asfortranarray(ref.astype(np.uint8)))
    assert (coco_segmentation_to_mask(rle, 30, 40) == ref).all()
    as_str = dict(rle, counts=rle["counts"].decode("ascii"))
    assert (coco_segmentation_to_mask(as_str, 30, 40) == ref).all()
    # two polygons -> union; a 2-point "polygon" is dropped (spec §5.3)
    polys = [[10, 5, 30, 5, 30, 15, 10, 15], [2, 20, 6, 20, 6, 25, 2, 25], [0, 0, 1, 1]]
    m = coco_segmentation_to_mask(polys, 30, 40)
    assert m.dtype == bool and m.shape == (30, 40)
    assert m[10, 20] and m[22, 4] and not m[0, 39]
    # uncompressed RLE (counts as a list)
    unc = {"size": [2, 3], "counts": [1, 2, 3]}
    assert coco_segmentation_to_mask(unc, 2, 3).sum() == 2


# -- RefCOCO loader ----------------------------------------------------------------------------------


def test_refcoco_test_mode_has_every_sentence(synth_root, synth_config):
    ds = refer(synth_root, "val", test_mode=True)
    refs = [r for r in load_pickle(synth_root / "refer_seg/synthref/refs(unc).p") if r["split"] == "val"]
    assert len(ds) == synth_config().refer_counts["val"] == ds.info["num_images"]
    total, ids = 0, set()
    for i in range(len(ds)):
        s = ds[i]
        assert isinstance(s, Sample) and s.task == "res"
        h, w = s.size
        assert s.image.dtype == np.uint8 and s.image.shape == (h, w, 3)
        assert {"dataset", "split", "image_id", "file_name", "sample_id"} <= s.meta.keys()
        assert s.meta["dataset"] == "synthref" and s.meta["split"] == "val"
        ids.add(s.sample_id)
        for q in s.queries:
            assert q.masks.dtype == bool and q.masks.shape == (1, h, w) and q.masks.any()
            assert q.text == q.text.strip().lower() and not q.is_sentence and q.exists
            assert {"ref_id", "sent_id", "ann_ids"} <= q.meta.keys()
        total += len(s.queries)
    assert total == sum(len(r["sentences"]) for r in refs) == ds.info["num_sentences"]
    assert len(ids) == len(ds)


def test_refcoco_masks_match_the_annotations(synth_root):
    ds = refer(synth_root, "val", test_mode=True)
    coco = read_json(synth_root / "refer_seg/synthref/instances.json")
    area = {a["id"]: a["area"] for a in coco["annotations"]}
    s = ds[0]
    for q in s.queries:
        assert q.masks.sum() == pytest.approx(area[q.meta["ann_ids"][0]], abs=1)
    objs = ds.object_masks(0)
    n_anns = sum(a["image_id"] == s.meta["image_id"] for a in coco["annotations"])
    assert objs.shape == (n_anns,) + s.size and objs.dtype == bool


def test_refcoco_train_mode_samples_refs_without_replacement(synth_root):
    ds = refer(synth_root, "train", num_queries_per_sample=3, seed=0)
    refs = [r for r in load_pickle(synth_root / "refer_seg/synthref/refs(unc).p") if r["split"] == "train"]
    per_image = {}
    for r in refs:
        per_image.setdefault(r["image_id"], {})[r["ref_id"]] = {s["sent"] for s in r["sentences"]}
    for _ in range(3):
        for i in range(len(ds)):
            s = ds[i]
            avail = per_image[s.meta["image_id"]]
            ref_ids = [q.meta["ref_id"] for q in s.queries]
            assert len(ref_ids) == len(set(ref_ids)) == min(3, len(avail))
            for q in s.queries:
                assert q.text in avail[q.meta["ref_id"]]
    one = refer(synth_root, "train", num_queries_per_sample=1)
    assert all(len(one[i].queries) == 1 for i in range(len(one)))
    a, b = refer(synth_root, "train", seed=5), refer(synth_root, "train", seed=5)
    assert [q.text for i in range(4) for q in a[i].queries] == [q.text for i in range(4) for q in b[i].queries]


def test_refcoco_test_split_is_testA_plus_testB(synth_root, synth_config):
    counts = synth_config().refer_counts
    assert len(refer(synth_root, "test", test_mode=True)) == counts["testA"] + counts["testB"]


def test_refcoco_image_dir_relative_to_data_root_or_reseg_root(synth_root, monkeypatch, tmp_path):
    assert len(refer(synth_root, image_dir="images/synthref")) == len(refer(synth_root))
    monkeypatch.setenv("RESEG_ROOT", str(synth_root.parent))  # a config's relative paths: under the reseg root
    monkeypatch.chdir(tmp_path)  # not the current folder
    rel = Path(synth_root.name) / "refer_seg" / "images" / "synthref"  # config style: data_root + '/images/...'
    ds = RefCOCODataset(Path(synth_root.name) / "refer_seg", dataset="synthref", split="val", image_dir=rel)
    assert ds[0].image.ndim == 3


def test_refcoco_generic_refs_lower_case_multi_and_no_target(refer_copy):
    """gRefCOCO-style list ann_ids (union; [-1] = no target) and sentence normalisation (spec §1.8)."""
    refs_file = refer_copy / "refer_seg/synthref/refs(unc).p"
    refs = load_pickle(refs_file)
    coco = read_json(refer_copy / "refer_seg/synthref/instances.json")
    image_id = next(r["image_id"] for r in refs if r["split"] == "val")
    anns = [a["id"] for a in coco["annotations"] if a["image_id"] == image_id]
    new = [
        {"ref_id": 1, "ann_id": [-1], "image_id": image_id, "category_id": 1, "split": "val",
         "sentences": [{"sent": "  The PURPLE Giraffe ", "sent_id": 11, "is_false_premise": True}]},
        {"ref_id": 2, "ann_id": anns[:2], "image_id": image_id, "category_id": 1, "split": "val",
         "sentences": [{"sent": "both", "sent_id": 12}]},
    ]
    dump_pickle(new, refs_file)
    ds = RefCOCODataset(refer_copy / "refer_seg", dataset="synthref", split="val", test_mode=True)
    s = ds[0]
    none, both = s.queries
    assert none.text == "the purple giraffe" and none.masks.shape == (0,) + s.size and not none.exists
    assert none.meta["is_false_premise"] is True
    assert both.masks.shape == (2,) + s.size and both.exists and not none.target.any()


def test_refcoco_errors_are_explicit(refer_copy):
    root = refer_copy / "refer_seg"
    with pytest.raises(UnknownSplitError, match=r"testC.*valid splits: testA, testB, train, val"):
        RefCOCODataset(root, dataset="synthref", split="testC")
    with pytest.raises(FileNotFoundError, match=r"refs\(umd\)\.p.*refs\(unc\)\.p"):
        RefCOCODataset(root, dataset="synthref", split_by="umd")
    with pytest.raises(FileNotFoundError, match="refcoco"):
        RefCOCODataset(root, dataset="refcoco")
    with pytest.raises(FileNotFoundError, match="image_dir"):
        RefCOCODataset(root, dataset="synthref", image_dir="nowhere")
    ds = RefCOCODataset(root, dataset="synthref", split="val", test_mode=True)
    img = root / "images/synthref" / ds.image_info(0)["file_name"]
    img.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(img.name)):
        ds[0]
    img.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetFormatError, match=re.escape(img.name)):
        ds[0]
    refs = load_pickle(root / "synthref/refs(unc).p")
    del refs[0]["sentences"]
    dump_pickle(refs, root / "synthref/refs(unc).p")
    with pytest.raises(DatasetFormatError, match="'sentences'"):
        RefCOCODataset(root, dataset="synthref")
    (root / "synthref/instances.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"instances.json"):
        RefCOCODataset(root, dataset="synthref")


# -- ReasonSeg loader --------------------------------------------------------------------------------


def test_reasonseg_test_mode(synth_root, synth_config):
    ds = reason(synth_root, "val", test_mode=True)
    assert len(ds) == synth_config().reason_counts["val"]
    split_dir = synth_root / "reason_seg/ReasonSeg/val"
    with_ignore = 0
    for i in range(len(ds)):
        s = ds[i]
        assert s.task == "reason" and s.meta["dataset"] == "ReasonSeg"
        d = read_json(split_dir / f"{s.meta['image_id']}.json")
        (q,) = s.queries
        assert q.text == d["text"][0] and q.is_sentence == d["is_sentence"]
        assert q.masks.shape == (1,) + s.size and q.masks.dtype == bool and q.masks.any()
        assert q.ignore is not None and q.ignore.shape == s.size and q.ignore.dtype == bool
        assert not (q.ignore & q.target).any()
        if any(sh["label"] == "ignore" for sh in d["shapes"]):
            with_ignore += 1
            assert q.ignore.sum() > 0
        else:
            assert not q.ignore.any()
    assert with_ignore > 0 and with_ignore == ds.info["num_with_ignore"]


def test_reasonseg_train_mode(synth_root):
    ds = reason(synth_root, "train", seed=0)
    split_dir = synth_root / "reason_seg/ReasonSeg/train"
    for i in range(len(ds)):
        s = ds[i]
        texts = read_json(split_dir / f"{s.meta['image_id']}.json")["text"]
        (q,) = s.queries
        assert q.text in texts and q.ignore is None and q.masks.shape[0] == 1
    many = reason(synth_root, "train", num_queries_per_sample=3)
    for i in range(len(many)):
        texts = [q.text for q in many[i].queries]
        assert 1 <= len(texts) == len(set(texts)) <= 3
    # ignore pixels are background in training (mask == 1, spec §1.7)
    test = reason(synth_root, "train", test_mode=True)
    for i in range(len(ds)):
        assert (ds[i].queries[0].masks == test[i].queries[0].masks).all()


def test_reasonseg_root_can_be_the_ReasonSeg_folder(synth_root):
    a = ReasonSegDataset(synth_root / "reason_seg" / "ReasonSeg", split="test")
    b = reason(synth_root, "test")
    assert len(a) == len(b) and a[0].meta["image_id"] == b[0].meta["image_id"]


def _write_labelme(path: Path, text, shapes, encoding="utf-8", is_sentence=False) -> None:
    body = json.dumps({"text": text, "is_sentence": is_sentence, "shapes": shapes}, ensure_ascii=False)
    path.write_bytes(body.encode(encoding))


def test_reasonseg_edge_cases(tmp_path):
    split = tmp_path / "ReasonSeg" / "test"
    split.mkdir(parents=True)
    img = np.full((20, 30, 3), 200, np.uint8)
    for name in ("a", "b"):
        cv2.imwrite(str(split / f"{name}.jpg"), img)
    # cp1252 text (0x92 = right single quote, invalid UTF-8); polygons: target + flag
    _write_labelme(split / "a.json", ["what\u2019s red?", "second"], [
        {"label": "target", "points": [[2, 2], [10, 2], [10, 10], [2, 10]]},
        {"label": "flag", "points": [[20, 10], [25, 10], [25, 15]]},
    ], encoding="cp1252", is_sentence=True)
    _write_labelme(split / "b.json", ["nothing here"], [])  # no polygons: empty target
    ds = ReasonSegDataset(tmp_path, split="test", test_mode=True)
    assert ds.info["num_empty_targets"] == 1
    a, b = ds[0], ds[1]
    assert a.queries[0].text == "what\u2019s red?" and a.queries[0].is_sentence
    assert a.queries[0].masks.sum() == 81 and not a.queries[0].masks[0, 12, 22]
    assert b.queries[0].masks.shape == (0, 20, 30) and not b.queries[0].exists
    assert not b.queries[0].target.any()


def test_reasonseg_errors_are_explicit(reason_copy):
    root = reason_copy / "reason_seg"
    with pytest.raises(UnknownSplitError, match=r"valid splits: test, train, val"):
        ReasonSegDataset(root, split="testA")
    split_dir = root / "ReasonSeg" / "val"
    first = sorted(split_dir.glob("*.json"))[0]
    d = read_json(first)
    del d["text"]
    first.write_text(json.dumps(d))
    with pytest.raises(DatasetFormatError, match=rf"{re.escape(first.name)}.*'text'"):
        ReasonSegDataset(root, split="val")
    first.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(first.name)):
        ReasonSegDataset(root, split="val")
    ds = ReasonSegDataset(root, split="train")
    jpg = sorted((root / "ReasonSeg" / "train").glob("*.jpg"))[0]
    jpg.write_bytes(b"")
    with pytest.raises(DatasetFormatError, match=re.escape(jpg.name)):
        ds[0]


# -- registry, metainfo, batching ----------------------------------------------------------------------


def test_registered_and_buildable_from_configs(synth_root):
    assert "RefCOCODataset" in DATASETS.module_dict and "ReasonSegDataset" in DATASETS.module_dict
    assert FUNCTIONS.module_dict["reseg_collate"] is reseg_collate
    ds = DATASETS.build(dict(type="ReasonSegDataset", data_root=str(synth_root / "reason_seg"), split="val"))
    assert isinstance(ds, ReasonSegDataset)


def test_loaders_mix_in_mmengine_concat_dataset(synth_root):
    """The configs mix loaders with mmengine's ConcatDataset, which needs equal metainfo."""
    from mmengine.dataset import ConcatDataset
    from mmengine.registry import DefaultScope

    a, b = refer(synth_root, "val", test_mode=True), reason(synth_root, "val", test_mode=True)
    assert a.metainfo == b.metainfo and isinstance(a.metainfo, dict)
    a.metainfo["platform"] = "changed"  # a copy: the dataset is not modified
    assert a.metainfo == b.metainfo
    with DefaultScope.overwrite_default_scope("reseg"):  # the Runner sets default_scope='reseg'
        cat = ConcatDataset([
            dict(type="RefCOCODataset", data_root=str(synth_root / "refer_seg"), dataset="synthref", split="val"),
            dict(type="ReasonSegDataset", data_root=str(synth_root / "reason_seg"), split="val"),
        ])
    assert len(cat) == len(a) + len(b)
    assert cat[len(a)].meta["dataset"] == "ReasonSeg"


def test_collate_and_dataloader(synth_root):
    from torch.utils.data import DataLoader

    ds = reason(synth_root, "val", test_mode=True)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=reseg_collate)))
    assert list(batch) == ["samples"] and len(batch["samples"]) == 3
    assert all(isinstance(s, Sample) for s in batch["samples"])
    with pytest.raises(TypeError, match="Sample"):
        reseg_collate([Query(text="x", masks=np.zeros((0, 2, 2), bool))])


def test_mmengine_runner_finds_the_collate_function(synth_root):
    """Runner.build_dataloader resolves collate_fn types in mmengine's root registry."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    with DefaultScope.overwrite_default_scope("reseg"):
        loader = Runner.build_dataloader(dict(
            batch_size=2, num_workers=0,
            sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="reseg_collate"),
            dataset=dict(type="ReasonSegDataset", data_root=str(synth_root / "reason_seg"), split="val",
                         test_mode=True),
        ))
    batch = next(iter(loader))
    assert len(batch["samples"]) == 2 and batch["samples"][0].meta["dataset"] == "ReasonSeg"


def test_clip_polygon_keeps_the_part_inside_exactly():
    """Clipping far-outside vertices keeps the mask: pycocotools' rounding along the cut edges may move
    a few pixels (2 of 1012 here), nothing more."""
    from reseg.datasets.io import clip_polygon, coco_segmentation_to_mask

    h, w = 40, 50
    tri = np.array([[10.0, 5.0], [200.0, 20.0], [15.0, 35.0]])  # one vertex far to the right
    clipped = clip_polygon(tri, w, h)
    assert clipped[:, 0].max() <= w + 1 and len(clipped) >= 3
    from pycocotools import mask as mask_utils

    def raster(poly):
        return mask_utils.decode(mask_utils.frPyObjects([poly.reshape(-1).tolist()], h, w))[..., 0].astype(bool)

    a, b = raster(clipped), raster(tri)
    assert b.sum() > 900 and (a != b).sum() <= 0.005 * b.sum()
    inside = np.array([[1.0, 1.0], [20.0, 1.0], [20.0, 20.0]])
    assert np.array_equal(clip_polygon(inside, w, h), inside)  # nothing outside: unchanged
    assert len(clip_polygon(np.array([[100.0, 100.0], [120.0, 100.0], [110.0, 130.0]]), w, h)) == 0
    assert coco_segmentation_to_mask([[100.0, 100.0, 120.0, 100.0, 110.0, 130.0]], h, w).sum() == 0
