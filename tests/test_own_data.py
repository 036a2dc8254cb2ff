"""Own data (docs/own_data.md): JSONL -> gRefCOCO layout -> the existing GRefCOCODataset, and back.

Every test builds its own small PNG images and JSONL in ``tmp_path``; the converted files are read with
the unchanged loader (and through the example config), so the masks, texts and empty targets a user
wrote are exactly what training sees.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from reseg.datasets import GRefCOCODataset
from reseg.datasets.io import encode_rle
from reseg.datasets.own_data import (
    COPY_MARKER,
    OwnDataError,
    assign_splits,
    convert_own_data,
    read_own_data,
)

ROOT = Path(__file__).resolve().parents[1]
H, W = 40, 60

#: The RLE object of kitchen.png: an L shape (not a polygon a rasteriser could reproduce by accident).
L_SHAPE = np.zeros((H, W), dtype=bool)
L_SHAPE[20:35, 30:36] = True
L_SHAPE[30:35, 36:55] = True


def _write_image(path: Path, h: int = H, w: int = W, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _lines() -> list[dict]:
    """Single-target, multi-target (polygon + RLE), no-target and sentence queries; three shape kinds."""
    mask_png = np.zeros((H, W), dtype=np.uint8)
    mask_png[2:10, 40:58] = 255
    return [
        {"image": "imgs/kitchen.png", "split": "train",
         "objects": [{"id": 1, "polygon": [[10, 5], [30, 5], [30, 20], [10, 20]], "category": "mug"},
                     {"id": "pot", "rle": encode_rle(L_SHAPE), "category": "teapot"}],
         "queries": [{"text": "The red mug", "objects": [1]},
                     {"text": ["What would keep coffee hot?", "what holds a hot drink?"], "objects": [1, "pot"],
                      "is_sentence": True},
                     {"text": "the giraffe", "objects": []}]},
        {"image": "imgs/desk.png", "split": "val",
         "objects": [{"id": 1, "polygon": [[2, 2, 12, 2, 12, 12, 2, 12], [40, 25, 55, 25, 55, 38, 40, 38]]},
                     {"id": 2, "mask": "masks/desk_2.png"}],
         "queries": [{"text": "both boxes", "objects": [1]}, {"text": "the lamp", "objects": [2]}]},
        # the mask file is written by _dataset_dir (cv2 needs the array)
        {"image": "imgs/sub/hall.png", "objects": [], "queries": [{"text": "a unicorn", "objects": []}],
         "split": "val", "_mask_png": mask_png},
    ]


def _dataset_dir(tmp_path: Path, lines: list | None = None) -> Path:
    """``tmp_path/src`` with the images, the mask PNG and ``data.jsonl``; returns the JSONL path."""
    src = tmp_path / "src"
    lines = [dict(line) for line in (lines if lines is not None else _lines())]
    for k, line in enumerate(lines):
        png = line.pop("_mask_png", None)
        if png is not None:
            (src / "masks").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(src / "masks" / "desk_2.png"), png)
        if isinstance(line.get("image"), str) and not os.path.isabs(line["image"]):
            _write_image(src / line["image"], seed=k)
    return _write_jsonl(src / "data.jsonl", lines)


def _load(out: Path, split: str) -> dict[str, object]:
    """``file_name -> Sample`` of a converted split, read by the unchanged loader in test mode."""
    ds = GRefCOCODataset(out / "refer_seg", dataset="own_data", split=split, image_dir="images/own_data",
                         test_mode=True)
    return {ds[i].meta["file_name"]: ds[i] for i in range(len(ds))}


@pytest.fixture()
def converted(tmp_path: Path) -> Path:
    jsonl = _dataset_dir(tmp_path)
    convert_own_data(jsonl, tmp_path / "out")
    return tmp_path / "out"


# -- round trip through the existing loader ----------------------------------------------------------


def test_rle_masks_round_trip_pixel_exact_and_polygons_closely(converted: Path):
    kitchen = _load(converted, "train")["imgs/kitchen.png"]
    by_text = {q.text: q for q in kitchen.queries}
    mug = by_text["the red mug"].masks
    assert mug.shape == (1, H, W)
    rect = np.zeros((H, W), dtype=bool)
    rect[5:20, 10:30] = True  # the polygon's area, rasterised by hand (pycocotools may add an edge row/column)
    iou = (mug[0] & rect).sum() / (mug[0] | rect).sum()
    assert iou > 0.85 and rect.sum() <= mug[0].sum() <= 1.25 * rect.sum()
    both = by_text["what would keep coffee hot?"].masks
    assert both.shape == (2, H, W)
    assert np.array_equal(both[0], mug[0])
    assert np.array_equal(both[1], L_SHAPE)  # RLE: pixel-exact


def test_multi_part_polygon_and_mask_png_objects(converted: Path):
    desk = _load(converted, "val")["imgs/desk.png"]
    boxes, lamp = desk.queries
    assert boxes.masks.shape == (1, H, W)  # one object made of two parts
    assert boxes.masks[0, 5, 5] and boxes.masks[0, 30, 45] and not boxes.masks[0, 20, 25]
    expected = np.zeros((H, W), dtype=bool)
    expected[2:10, 40:58] = True
    assert np.array_equal(lamp.masks[0], expected)


def test_query_texts_phrasings_sentence_flags_and_empty_targets(converted: Path):
    kitchen = _load(converted, "train")["imgs/kitchen.png"]
    got = [(q.text, q.is_sentence, q.exists, q.num_targets) for q in kitchen.queries]
    assert got == [  # the loader lower-cases (REFER convention); each phrasing is a query in test mode
        ("the red mug", False, True, 1),
        ("what would keep coffee hot?", True, True, 2),
        ("what holds a hot drink?", True, True, 2),
        ("the giraffe", False, False, 0),
    ]
    assert kitchen.task == "gres" and kitchen.image.shape == (H, W, 3)
    assert [q.meta["ann_ids"] for q in kitchen.queries][-1] == [-1]
    hall = _load(converted, "val")["imgs/sub/hall.png"]
    assert [(q.text, q.exists, q.masks.shape) for q in hall.queries] == [("a unicorn", False, (0, H, W))]


def test_training_mode_draws_one_phrasing_per_query(converted: Path):
    ds = GRefCOCODataset(converted / "refer_seg", dataset="own_data", split="train", image_dir="images/own_data",
                         num_queries_per_sample=3, seed=0)
    texts = {q.text for q in ds[0].queries}
    assert len(ds[0].queries) == 3 and len(texts & {"what would keep coffee hot?", "what holds a hot drink?"}) == 1


def test_output_files_are_the_grefcoco_layout(converted: Path):
    ann = converted / "refer_seg" / "own_data"
    refs = json.loads((ann / "grefs(unc).json").read_text())
    coco = json.loads((ann / "instances.json").read_text())
    assert [r["ann_id"] for r in refs if r["split"] == "train"] == [[1], [1, 2], [-1]]
    assert [c["name"] for c in coco["categories"]] == ["mug", "object", "teapot"]
    assert {i["file_name"] for i in coco["images"]} == {"imgs/kitchen.png", "imgs/desk.png", "imgs/sub/hall.png"}
    link = converted / "refer_seg" / "images" / "own_data"
    assert link.is_symlink() and (link / "imgs" / "kitchen.png").is_file()  # referenced, not copied
    summary = json.loads((ann / "conversion.json").read_text())
    assert summary["images"] == "link" and summary["splits"]["train"]["multi_target"] == 1


# -- splits -------------------------------------------------------------------------------------------


def _unsplit_lines(n: int) -> list[dict]:
    return [{"image": f"imgs/{k:02d}.png", "queries": [{"text": f"q{k}", "objects": []}]} for k in range(n)]


def test_lines_without_split_are_split_by_seed_whatever_the_line_order(tmp_path: Path):
    jsonl = _dataset_dir(tmp_path, _unsplit_lines(20))

    def splits(seed: int, lines_reversed: bool = False) -> dict[str, str]:
        if lines_reversed:
            rows = jsonl.read_text().splitlines()[::-1]
            jsonl.write_text("\n".join(rows) + "\n")
        images = read_own_data(jsonl)
        assign_splits(images, val_fraction=0.2, seed=seed)
        return {img.file_name: img.split for img in images}

    first = splits(0)
    assert sorted(first.values()).count("val") == 4
    assert splits(0, lines_reversed=True) == first
    assert splits(1) != first


def test_explicit_splits_are_kept_and_a_small_file_still_gets_one_val_image(tmp_path: Path):
    lines = _unsplit_lines(3)
    images = read_own_data(_dataset_dir(tmp_path, lines))
    assign_splits(images, val_fraction=0.1, seed=0)
    assert sorted(img.split for img in images) == ["train", "train", "val"]
    lines[0]["split"] = "val"
    images = read_own_data(_dataset_dir(tmp_path, lines))
    assign_splits(images, val_fraction=0.1, seed=0)
    assert [img.split for img in images] == ["val", "train", "train"]
    assign_splits(images, val_fraction=0.0)  # nothing left to assign: no change
    assert [img.split for img in images] == ["val", "train", "train"]


# -- errors: file, line, field, what was expected -----------------------------------------------------

def _set(path: list, value):
    def edit(lines: list[dict]) -> None:
        node = lines
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


BAD_INPUT = {
    "missing image": (_set([0, "image"], "imgs/nope.png"), ["line 1", "field 'image'", "not found", "nope.png"]),
    "polygon with 2 points": (_set([0, "objects", 0, "polygon"], [[1, 1], [5, 5]]),
                              ["line 1", "objects[0].polygon", "2 point(s)", "at least 3 points"]),
    "flat part with 2 points": (_set([1, "objects", 0, "polygon"], [[2, 2, 12, 2, 12, 12], [1, 1, 4, 4]]),
                                ["line 2", "objects[0].polygon[1]", "at least 3 points"]),
    "rle of another size": (_set([0, "objects", 1, "rle"], encode_rle(np.ones((H, W + 1), dtype=bool))),
                            ["line 1", "objects[1].rle.size", f"[{H}, {W + 1}]", f"[{H}, {W}]"]),
    "malformed rle": (_set([0, "objects", 1, "rle"], {"size": [H, W], "counts": [5, 3]}),
                      ["line 1", "objects[1].rle", "add up to 8 pixels"]),
    "unknown object id": (_set([0, "queries", 0, "objects"], [7]),
                          ["line 1", "queries[0].objects", "unknown object id 7", "[1, 'pot']"]),
    "object id that is a list": (_set([0, "queries", 0, "objects"], [[1]]),
                                 ["queries[0].objects", "unknown object id [1]"]),
    "split with a space": (_set([0, "split"], "my val"), ["line 1", "field 'split'"]),
    "duplicate object id": (_set([0, "objects", 1, "id"], 1), ["line 1", "objects[1].id", "duplicate id 1"]),
    "empty queries": (_set([1, "queries"], []), ["line 2", "field 'queries'", "a non-empty list"]),
    "empty text": (_set([0, "queries", 0, "text"], "  "), ["line 1", "queries[0].text"]),
    "no objects key in query": (lambda ls: ls[0]["queries"][0].pop("objects"),
                                ["line 1", "queries[0]", "missing 'objects'", "[] for a query without target"]),
    "two shapes": (_set([0, "objects", 0, "rle"], encode_rle(L_SHAPE)), ["objects[0]", "exactly one"]),
    "empty mask": (_set([0, "objects", 0, "polygon"], [[100, 100], [120, 100], [120, 120]]),
                   ["objects[0].polygon", "covers no pixel"]),
    "is_sentence not a bool": (_set([0, "queries", 1, "is_sentence"], "yes"),
                               ["queries[1].is_sentence", "true or false"]),
    "unknown key": (_set([1, "querys"], []), ["line 2", "unknown key(s) ['querys']"]),
    "image outside the root": (_set([1, "image"], "../elsewhere.png"), ["line 2", "outside the image root"]),
    "same image twice": (_set([1, "image"], "imgs/kitchen.png"), ["line 2", "also on line 1"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_names_file_line_and_field_and_writes_nothing(tmp_path: Path, case: str):
    edit, fragments = BAD_INPUT[case]
    lines = _lines()
    jsonl = _dataset_dir(tmp_path, lines)  # images written from the valid lines
    lines = [{k: v for k, v in line.items() if k != "_mask_png"} for line in lines]
    edit(lines)
    _write_jsonl(jsonl, lines)
    with pytest.raises(OwnDataError) as err:
        convert_own_data(jsonl, tmp_path / "out")
    msg = str(err.value)
    assert str(jsonl) in msg and "nothing was written" in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)
    assert not (tmp_path / "out").exists()


def test_every_invalid_line_is_listed_and_invalid_json_stops_the_read(tmp_path: Path):
    lines = _lines()
    jsonl = _dataset_dir(tmp_path, lines)
    lines = [{k: v for k, v in line.items() if k != "_mask_png"} for line in lines]
    lines[0]["queries"] = []
    lines[1]["objects"][0]["id"] = True
    _write_jsonl(jsonl, lines + ['{"image": "imgs/desk.png", '])
    with pytest.raises(OwnDataError, match=r"3 invalid line\(s\)") as err:
        read_own_data(jsonl)
    assert "line 1: field 'queries'" in str(err.value) and "line 2: field 'objects[0].id'" in str(err.value)
    assert "line 4: not valid JSON" in str(err.value)


def test_a_non_bool_is_sentence_in_a_refs_file_is_a_loader_error(converted: Path):
    refs_file = converted / "refer_seg" / "own_data" / "grefs(unc).json"
    refs = json.loads(refs_file.read_text())
    refs[0]["sentences"][0]["is_sentence"] = "yes"
    refs_file.write_text(json.dumps(refs))
    with pytest.raises(ValueError, match=r"sentence #0: 'is_sentence' must be true or false"):
        _load(converted, "train")


# -- never overwrite without --overwrite; never delete the user's images ------------------------------


def test_existing_output_needs_overwrite_and_the_linked_images_survive_it(tmp_path: Path, converted: Path):
    jsonl = tmp_path / "src" / "data.jsonl"
    before = (converted / "refer_seg" / "own_data" / "instances.json").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_own_data(jsonl, converted)
    assert (converted / "refer_seg" / "own_data" / "instances.json").read_bytes() == before
    convert_own_data(jsonl, converted, overwrite=True, val_fraction=0.0)
    assert (tmp_path / "src" / "imgs" / "kitchen.png").is_file()  # the link was replaced, not followed
    assert set(_load(converted, "val")) == {"imgs/desk.png", "imgs/sub/hall.png"}


def test_copy_images_makes_a_self_contained_output(tmp_path: Path):
    jsonl = _dataset_dir(tmp_path)
    out = tmp_path / "out"
    summary = convert_own_data(jsonl, out, copy_images=True)
    image_dir = out / "refer_seg" / "images" / "own_data"
    assert summary["images"] == "copy" and not image_dir.is_symlink() and (image_dir / COPY_MARKER).is_file()
    moved = tmp_path / "moved"
    (tmp_path / "src").rename(tmp_path / "src_gone")  # the originals are not needed any more
    out.rename(moved)
    assert _load(moved, "train")["imgs/kitchen.png"].image.shape == (H, W, 3)
    (tmp_path / "src_gone").rename(tmp_path / "src")
    convert_own_data(jsonl, moved, copy_images=True, overwrite=True)  # copies it made may be replaced


def test_a_folder_the_converter_did_not_fill_is_never_deleted(tmp_path: Path):
    jsonl = _dataset_dir(tmp_path)
    foreign = tmp_path / "out" / "refer_seg" / "images" / "own_data"
    _write_image(foreign / "precious.png")
    with pytest.raises(FileExistsError, match="did not fill"):
        convert_own_data(jsonl, tmp_path / "out", overwrite=True)
    assert (foreign / "precious.png").is_file()


def test_images_already_in_the_output_folder_are_used_in_place(tmp_path: Path):
    jsonl = _dataset_dir(tmp_path)
    image_dir = tmp_path / "out" / "refer_seg" / "images" / "own_data"
    image_dir.parent.mkdir(parents=True)
    (tmp_path / "src").rename(image_dir)  # images, masks and the JSONL now live in the output's image folder
    jsonl = image_dir / jsonl.name
    summary = convert_own_data(jsonl, tmp_path / "out")  # the image root defaults to the JSONL's folder
    assert summary["images"] == "in_place" and not image_dir.is_symlink()
    convert_own_data(jsonl, tmp_path / "out", overwrite=True)
    assert (image_dir / "imgs" / "kitchen.png").is_file()
    assert "imgs/kitchen.png" in _load(tmp_path / "out", "train")


# -- the command line and the example config ----------------------------------------------------------


def test_cli_converts_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    from reseg.tools import convert_own_data as tool

    jsonl = _dataset_dir(tmp_path)
    assert tool.main([str(jsonl), "--out", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["val"]["images"] == 2
    with pytest.raises(SystemExit, match=r"error: .*already holds a conversion.*--overwrite"):
        tool.main([str(jsonl), "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("config", ["lisa/lisa_tiny_own-data.py", "ras/ras_tiny_own-data.py"])
def test_example_configs_read_the_converted_data_via_data_root(converted: Path, config: str):
    from mmengine.config import Config

    from reseg.cfg_options import merge_cfg_options
    from reseg.registry import DATASETS

    cfg = Config.fromfile(str(ROOT / "configs" / config))
    merge_cfg_options(cfg, {"data_root": str(converted)})  # as tools/train.py --cfg-options data_root=...
    train, val, test = (DATASETS.build(dict(cfg[f"{s}_dataloader"].dataset)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1, 2, 2) and not train.test_mode and val.test_mode
    sample = val[0]
    assert sample.task == "gres" and sample.meta["dataset"] == "own_data" and sample.queries
    if config.startswith("ras"):
        assert cfg.model.mask_source.proposer.pool_file == [f"{converted}/pools/train.jsonl",
                                                            f"{converted}/pools/val.jsonl"]


def test_the_documented_example_converts_as_docs_own_data_md_says(tmp_path: Path):
    summary = convert_own_data(ROOT / "docs" / "examples" / "own_data" / "data.jsonl", tmp_path / "out")
    assert summary["splits"]["train"] == dict(images=3, objects=8, queries=10, phrasings=11, no_target=1,
                                              single_target=6, multi_target=3, is_sentence=3)
    assert summary["splits"]["val"]["images"] == 1 and summary["categories"] == ["circle", "square", "triangle"]
    for split in ("train", "val"):
        for sample in _load(tmp_path / "out", split).values():
            fg = (sample.image != 240).any(axis=2)  # the example's shapes on a flat grey background
            for q in sample.queries:
                assert q.num_targets == 0 or (q.target & fg).sum() >= 0.97 * q.target.sum()
