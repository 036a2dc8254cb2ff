"""The synthetic benchmark generator: determinism, geometry, unambiguous language, file layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reseg.datasets.io import coco_segmentation_to_mask, labelme_shapes_to_mask, read_json
from reseg.datasets.safe_pickle import load_pickle
from reseg.datasets.synthref import GENERATOR_VERSION, META_FILE, SynthRefConfig, generate_synthref
from reseg.datasets.synthref.language import (
    ReasonRule,
    RefExpr,
    candidate_rules,
    choose_sentences,
    describe,
    referring_exprs,
    resolve,
    rule_target,
    rule_texts,
)
from reseg.datasets.synthref.scene import (
    KINDS,
    Scene,
    SceneObject,
    fill_polygon,
    mask_to_coco_polygons,
    mask_to_pixel_polygons,
    render_scene,
    sample_scene,
    shape_vertices,
)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _object(kind: str, colour: str, cx: float, cy: float, r: float, h: int = 120, w: int = 160) -> SceneObject:
    verts = shape_vertices(kind, r, 0.0, np.random.default_rng(0)) + np.array([cx, cy])
    return SceneObject(kind=kind, colour=colour, rgb=(0, 0, 0), center=(cx, cy), radius=r, angle=0.0,
                       vertices=verts, full_mask=fill_polygon(verts, h, w))


def _scene(*objs: SceneObject, h: int = 120, w: int = 160) -> Scene:
    s = Scene(width=w, height=h, background=np.full((h, w, 3), 230, np.uint8), objects=list(objs))
    s.update_visibility()
    return s


# -- determinism -------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tmp_path, synth_root, synth_config):
    generate_synthref(tmp_path / "again", synth_config())
    assert _files(tmp_path / "again") == _files(synth_root)


def test_different_seed_gives_different_files(tmp_path, synth_root, synth_config):
    generate_synthref(tmp_path / "other", synth_config(seed=1))
    a, b = _files(synth_root), _files(tmp_path / "other")
    assert a.keys() == b.keys()  # same layout and names
    differing = [k for k in a if a[k] != b[k]]
    assert "refer_seg/synthref/instances.json" in differing
    assert len(differing) > len(a) // 2


def test_output_does_not_depend_on_workers(tmp_path, synth_config):
    cfg = synth_config(refer_counts={"train": 20, "val": 0, "testA": 0, "testB": 0},
                       reason_counts={"train": 0, "val": 20, "test": 0})
    generate_synthref(tmp_path / "one", cfg, workers=1)
    generate_synthref(tmp_path / "two", cfg, workers=2)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_split_images_do_not_depend_on_other_splits_counts(tmp_path, synth_root, synth_config):
    cfg = synth_config(refer_counts={"train": 3, "val": 6, "testA": 0, "testB": 0})
    generate_synthref(tmp_path / "g", cfg)
    small, full = _files(tmp_path / "g"), _files(synth_root)
    val_images = [k for k in full if k.startswith("refer_seg/images/synthref/synthref_02")]
    assert val_images and all(small[k] == full[k] for k in val_images)


def test_existing_benchmark_needs_overwrite(tmp_path, synth_config):
    cfg = synth_config(refer_counts={"train": 2}, reason_counts={"val": 2})
    generate_synthref(tmp_path, cfg)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_synthref(tmp_path, cfg)
    (tmp_path / "reason_seg" / "ReasonSeg" / "val" / "stale.jpg").write_bytes(b"x")
    generate_synthref(tmp_path, cfg, overwrite=True)
    assert not (tmp_path / "reason_seg" / "ReasonSeg" / "val" / "stale.jpg").exists()


def test_unknown_split_in_config_is_rejected():
    with pytest.raises(ValueError, match="testC"):
        SynthRefConfig(refer_counts={"testC": 3})


# -- layout and formats ------------------------------------------------------------------------------


def test_layout_and_meta(synth_root, synth_config):
    meta = json.loads((synth_root / META_FILE).read_text())
    cfg = synth_config()
    assert meta["version"] == GENERATOR_VERSION and meta["seed"] == cfg.seed
    for split, n in cfg.refer_counts.items():
        assert meta["refer"]["splits"][split]["images"] == n
    for split, n in cfg.reason_counts.items():
        assert meta["reason"]["splits"][split]["images"] == n
        assert len(list((synth_root / "reason_seg/ReasonSeg" / split).glob("*.jpg"))) == n
        assert len(list((synth_root / "reason_seg/ReasonSeg" / split).glob("*.json"))) == n
    assert len(list((synth_root / "refer_seg/images/synthref").glob("*.jpg"))) == sum(cfg.refer_counts.values())


def test_refer_files_have_the_real_fields(synth_root):
    coco = read_json(synth_root / "refer_seg/synthref/instances.json")
    refs = load_pickle(synth_root / "refer_seg/synthref/refs(unc).p")
    assert {c["name"] for c in coco["categories"]} == set(KINDS)
    img = coco["images"][0]
    assert {"id", "file_name", "height", "width"} <= img.keys()
    assert 128 <= img["width"] <= 192
    ann = coco["annotations"][0]
    assert {"id", "image_id", "segmentation", "bbox", "area", "iscrowd", "category_id"} <= ann.keys()
    assert isinstance(ann["segmentation"], list) and len(ann["segmentation"][0]) >= 6
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    ann_ids = {a["id"] for a in coco["annotations"]}
    per_image: dict[int, int] = {}
    for r in refs:
        assert {"ref_id", "ann_id", "image_id", "category_id", "split", "sentences", "file_name"} <= r.keys()
        assert r["ann_id"] in ann_ids
        assert 1 <= len(r["sentences"]) <= 3
        for s in r["sentences"]:
            assert {"sent", "raw", "tokens", "sent_id"} <= s.keys()
            assert s["tokens"] == s["sent"].split() and s["sent"] == s["sent"].lower()
        per_image[r["image_id"]] = per_image.get(r["image_id"], 0) + 1
    assert max(per_image.values()) >= 2  # several refs per image
    # every object is annotated (not only referred ones): enough for a largest-object baseline
    assert len(coco["annotations"]) >= len(refs)


def test_reasonseg_json_is_labelme_style(synth_root):
    jsons = sorted((synth_root / "reason_seg/ReasonSeg").rglob("*.json"))
    kinds = set()
    for p in jsons:
        d = read_json(p)
        assert 1 <= len(d["text"]) <= 3 and isinstance(d["is_sentence"], bool)
        labels = [s["label"] for s in d["shapes"]]
        assert "target" in labels and set(labels) <= {"target", "ignore"}
        assert all(s["shape_type"] == "polygon" for s in d["shapes"])
        kinds.add(d["is_sentence"])
    assert kinds == {True, False}
    assert any(any(s["label"] == "ignore" for s in read_json(p)["shapes"]) for p in jsons)


def test_make_synthref_tool(tmp_path):
    from reseg.tools import make_synthref as tool

    rc = tool.main(["--out", str(tmp_path / "b"), "--seed", "3", "--num-train", "2", "--num-val", "1",
                    "--num-testA", "1", "--num-testB", "0", "--reason-train", "1", "--reason-val", "1",
                    "--reason-test", "0", "--gref-train", "0", "--gref-val", "2", "--gref-testA", "0",
                    "--gref-testB", "0", "--fp-train", "0", "--fp-val", "0", "--fp-testA", "0", "--fp-testB", "0",
                    "--mg-train", "0", "--mg-validation", "1"])
    assert rc == 0
    meta = json.loads((tmp_path / "b" / META_FILE).read_text())
    assert meta["seed"] == 3 and meta["refer"]["splits"]["train"]["images"] == 2
    assert "testB" not in meta["refer"]["splits"]
    assert meta["grefcoco"]["splits"] == {"val": meta["grefcoco"]["splits"]["val"]}
    assert meta["grefcoco"]["splits"]["val"]["images"] == 2
    assert meta["fprefcoco"]["splits"] == {}  # every count 0: no files at all
    assert not (tmp_path / "b" / "refer_seg" / "fprefcoco_synth").exists()
    assert meta["mask_groups"]["splits"]["validation"]["images"] == 1
    assert (tmp_path / "b" / "mask_groups" / "validation.json").is_file()
    assert not (tmp_path / "b" / "mask_groups" / "train.json").exists()


# -- geometry ----------------------------------------------------------------------------------------


def test_scenes_have_bounded_occlusion_and_visible_masks():
    for i in range(20):
        scene = sample_scene(np.random.default_rng(i))
        assert 128 <= scene.width <= 192 and 2 <= len(scene.objects) <= 5
        covered = np.zeros((scene.height, scene.width), bool)
        for o in scene.objects:
            assert o.visible_fraction >= 0.6
            assert not (o.visible_mask & covered).any()  # visible parts are disjoint
            covered |= o.visible_mask


def test_polygon_round_trip_matches_visible_masks():
    """COCO polygons (pycocotools) and labelme polygons (LISA's rasteriser) give back the visible part."""
    occluded = 0
    for i in range(15):
        scene = sample_scene(np.random.default_rng(100 + i))
        for o in scene.objects:
            vis = o.visible_mask
            occluded += o.visible_fraction < 1.0
            coco = coco_segmentation_to_mask(mask_to_coco_polygons(vis), scene.height, scene.width)
            assert _iou(coco, vis) > 0.9
            shapes = [{"label": "target", "points": p.tolist()} for p in mask_to_pixel_polygons(vis)]
            lisa = labelme_shapes_to_mask(shapes, scene.height, scene.width) == 1
            assert _iou(lisa, vis) > 0.9
    assert occluded > 0  # the sample includes partially hidden objects


def test_rendered_pixels_have_the_object_colour():
    scene = sample_scene(np.random.default_rng(7))
    img = render_scene(scene)
    for o in scene.objects:
        assert np.abs(img[o.visible_mask].astype(int) - np.array(o.rgb)).max() == 0


# -- language ----------------------------------------------------------------------------------------


def test_size_needs_a_clear_difference():
    big, small = _object("circle", "red", 40, 60, 25), _object("circle", "red", 120, 60, 12)
    scene = _scene(big, small)
    assert resolve(RefExpr("red", "circle", size="big"), scene) == 0
    assert resolve(RefExpr("red", "circle", size="small"), scene) == 1
    assert resolve(RefExpr("red", "circle"), scene) is None  # two red circles
    same = _scene(_object("circle", "red", 40, 60, 20), _object("circle", "red", 120, 60, 21))
    assert resolve(RefExpr("red", "circle", size="big"), same) is None
    text = describe(RefExpr("red", "circle", size="big"), scene, np.random.default_rng(0))
    assert text.startswith("the ") and text.endswith("red circle")


def test_position_and_relation():
    a = _object("square", "blue", 30, 60, 12)
    b = _object("circle", "green", 80, 60, 12)
    c = _object("circle", "yellow", 130, 60, 12)
    scene = _scene(a, b, c)
    assert resolve(RefExpr(None, None, extreme="left"), scene) == 0
    assert resolve(RefExpr(None, "circle", extreme="right"), scene) == 2
    assert resolve(RefExpr(None, "circle", relation="right", landmark=RefExpr("blue", "square")), scene) is None
    assert resolve(RefExpr(None, "circle", relation="left", landmark=RefExpr("yellow", None)), scene) == 1
    diag = _scene(_object("circle", "red", 30, 15, 10), _object("square", "blue", 110, 105, 10))
    # more up than left: "above" the square, not "left of" it
    assert resolve(RefExpr(None, "circle", relation="left", landmark=RefExpr("blue", None)), diag) is None
    assert resolve(RefExpr(None, "circle", relation="above", landmark=RefExpr("blue", None)), diag) == 0


def test_every_generated_sentence_resolves_to_its_target():
    for i in range(25):
        rng = np.random.default_rng(200 + i)
        scene = sample_scene(rng)
        for t in range(len(scene.objects)):
            assert all(resolve(e, scene) == t for e in referring_exprs(scene, t))
            chosen = choose_sentences(scene, t, rng)
            assert len(chosen) <= 3 and len({s for s, _ in chosen}) == len(chosen)
            assert all(resolve(e, scene) == t for _, e in chosen)


def test_reasoning_rules():
    scene = _scene(_object("circle", "yellow", 30, 60, 14), _object("triangle", "red", 80, 60, 14),
                   _object("hexagon", "blue", 130, 60, 14))
    assert rule_target(ReasonRule("colour", colour="yellow"), scene) == 0
    assert rule_target(ReasonRule("shape", kind="triangle"), scene) == 1
    assert rule_target(ReasonRule("superlative", superlative="most_corners"), scene) == 2
    star = _scene(_object("star", "red", 30, 60, 14), _object("hexagon", "blue", 90, 60, 14))
    assert rule_target(ReasonRule("superlative", superlative="most_corners"), star) is None
    texts = rule_texts(ReasonRule("colour", colour="yellow"), np.random.default_rng(0), long=False, n=2)
    assert len(texts) == 2 and all("like" in t or "colour" in t for t in texts)
    long = rule_texts(ReasonRule("shape", kind="circle"), np.random.default_rng(0), long=True, n=1)
    assert long[0].endswith((".", "?")) and long[0][0].isupper()
    for r in candidate_rules(scene):
        assert rule_target(r, scene) is not None
