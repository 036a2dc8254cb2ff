"""Bad input gets a clear error naming the file, key or value at fault, or a documented behaviour.

One table, one row per case (docs/troubleshooting.md lists the same cases). A row either
expects an error (its type and the words its message must contain: the file, the field, the value)
or a documented outcome checked by a function. Never a crash deep in torch or a silent wrong answer.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from reseg.datasets import ReasonSegDataset, RefCOCODataset
from reseg.datasets.io import DatasetFormatError, UnknownSplitError
from reseg.datasets.safe_pickle import UnsafePickleError, dump_pickle, load_pickle
from tiny import tiny_model_cfg, toy_sample


# ----------------------------------------------------------------------------- helpers
class Ctx:
    """A writable copy of the session's synthetic benchmark and helpers to break it."""

    def __init__(self, synth_root: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "data"
        shutil.copytree(synth_root / "refer_seg" / "synthref", self.root / "refer_seg" / "synthref")
        shutil.copytree(synth_root / "refer_seg" / "images" / "synthref",
                        self.root / "refer_seg" / "images" / "synthref")
        shutil.copytree(synth_root / "reason_seg", self.root / "reason_seg")
        self.instances = self.root / "refer_seg" / "synthref" / "instances.json"
        self.refs = self.root / "refer_seg" / "synthref" / "refs(unc).p"

    def refer(self, split: str = "val", **kw) -> RefCOCODataset:
        return RefCOCODataset(str(self.root / "refer_seg"), dataset="synthref", split=split,
                              image_dir=str(self.root / "refer_seg" / "images" / "synthref"), test_mode=True, **kw)

    def reason(self, split: str = "train") -> ReasonSegDataset:
        return ReasonSegDataset(str(self.root / "reason_seg"), split=split, test_mode=True)

    def first_image(self) -> tuple[RefCOCODataset, Path, dict]:
        ds = self.refer()
        info = ds.image_info(0)
        return ds, self.root / "refer_seg" / "images" / "synthref" / info["file_name"], info

    def edit_instances(self, fn: Callable[[dict], None]) -> dict:
        data = json.loads(self.instances.read_text())
        fn(data)
        self.instances.write_text(json.dumps(data))
        return data

    def first_val_ann(self) -> tuple[dict, int]:
        """The first annotation of val image 0, and the index of that image in the val split."""
        ds = self.refer()
        iid = ds.image_info(0)["image_id"]
        data = json.loads(self.instances.read_text())
        ann = next(a for a in data["annotations"] if a["image_id"] == iid)
        return ann, 0

    def set_segmentation(self, seg: Any) -> int:
        ann, _ = self.first_val_ann()

        def edit(d):
            next(a for a in d["annotations"] if a["id"] == ann["id"])["segmentation"] = seg

        self.edit_instances(edit)
        return ann["id"]

    def tiny_model(self):
        from reseg.registry import MODELS

        return MODELS.build(tiny_model_cfg(str(self.tmp / "tok")))


def _rewrite_image(ctx: Ctx, make: Callable[[np.ndarray], Image.Image], **save_kw) -> tuple[RefCOCODataset, np.ndarray]:
    ds, path, _ = ctx.first_image()
    original = ds[0].image
    img = make(original)
    fmt = save_kw.pop("format", None)
    img.save(path, format=fmt or ("PNG" if path.suffix == ".png" else "JPEG"), **save_kw)
    return ds, original


# ----------------------------------------------------------------------------- the cases
def missing_image(ctx):
    _, path, _ = ctx.first_image()
    path.unlink()
    ctx.refer()[0]


def corrupt_image(ctx):
    _, path, _ = ctx.first_image()
    path.write_bytes(b"this is not an image at all")
    ctx.refer()[0]


def truncated_image(ctx):
    _, path, _ = ctx.first_image()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ctx.refer()[0]


def grayscale_image(ctx):
    ds, original = _rewrite_image(ctx, lambda im: Image.fromarray(im).convert("L"), quality=95)
    got = ds[0].image
    assert got.shape == original.shape and got.dtype == np.uint8
    assert np.array_equal(got[..., 0], got[..., 1])  # gray repeated to 3 channels


def rgba_image(ctx):
    ds, original = _rewrite_image(ctx, lambda im: Image.fromarray(im).convert("RGBA"), format="PNG")
    got = ds[0].image
    assert got.shape == original.shape and got.dtype == np.uint8  # alpha dropped


def sixteen_bit_image(ctx):
    def make(im):
        return Image.fromarray(im[..., 0].astype(np.uint16) * 257)  # a 16-bit grayscale PNG

    ds, original = _rewrite_image(ctx, make, format="PNG")
    got = ds[0].image
    assert got.shape == original.shape and got.dtype == np.uint8
    assert np.abs(got[..., 0].astype(int) - original[..., 0].astype(int)).max() <= 1  # scaled to 8 bits


def huge_image(ctx, monkeypatch):
    ds, _, info = ctx.first_image()
    monkeypatch.setenv("RESEG_MAX_IMAGE_PIXELS", str(info["height"] * info["width"] - 1))
    ds[0]


def one_pixel_image(ctx):
    model = ctx.tiny_model()
    model.eval()
    with torch.no_grad():
        out = model.predict([toy_sample(h=1, w=1, n_queries=2)])
    masks = [p.masks for p in out[0]["predictions"]]
    assert [tuple(m.shape) for m in masks] == [(1, 1, 1), (1, 1, 1)] and all(torch.isfinite(m).all() for m in masks)


def exif_rotated_image(ctx):
    """Pixels stored rotated with an EXIF orientation tag: read upright, as OpenCV (and LISA) do."""
    ds, path, _ = ctx.first_image()
    original = ds[0].image
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(original)))  # rotated 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored.save(path, format="JPEG", quality=98, exif=exif)
    got = ds[0].image
    assert got.shape == original.shape
    assert np.abs(got.astype(int) - original.astype(int)).mean() < 8  # upright again (JPEG noise only)


def image_size_mismatch(ctx):
    ds, path, info = ctx.first_image()
    Image.fromarray(np.zeros((info["height"] + 3, info["width"], 3), np.uint8)).save(path, format="JPEG")
    ds[0]


def polygon_with_two_points(ctx):
    ctx.set_segmentation([[1.0, 1.0, 5.0, 5.0]])
    q = ctx.refer()[0].queries
    assert min(int(x.masks.sum()) for x in q) == 0  # dropped (ReLA/GSVA rule): that target is empty


def polygon_outside_the_image(ctx):
    import time

    ctx.set_segmentation([[-1e9, -1e9, 1e9, -1e9, 1e9, 1e9, -1e9, 1e9]])  # covers the whole image
    start = time.time()
    sample = ctx.refer()[0]
    assert time.time() - start < 5  # clipped before rasterising (pycocotools walks every edge pixel)
    h, w = sample.size
    assert max(int(x.masks.sum()) for x in sample.queries) == h * w


def polygon_with_nan(ctx):
    ctx.set_segmentation([[float("nan"), 1.0, 5.0, 5.0, 9.0, 1.0]])
    ctx.refer()[0]


def empty_mask(ctx):
    from pycocotools import mask as mask_utils

    _, _, info = ctx.first_image()
    rle = mask_utils.encode(np.asfortranarray(np.zeros((info["height"], info["width"]), np.uint8)))
    ctx.set_segmentation(dict(size=rle["size"], counts=rle["counts"].decode()))
    q = ctx.refer()[0].queries
    assert min(int(x.masks.sum()) for x in q) == 0  # allowed: a target mask with no pixels


def rle_of_the_wrong_size(ctx):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.ones((5, 7), np.uint8)))
    ctx.set_segmentation(dict(size=rle["size"], counts=rle["counts"].decode()))
    ctx.refer()[0]


def ref_without_its_annotation(ctx):
    refs = load_pickle(ctx.refs)
    val = next(r for r in refs if r["split"] == "val")
    val["ann_id"] = 987654321
    dump_pickle(refs, ctx.refs)
    ctx.refer()


def json_missing_field(ctx):
    js = sorted((ctx.root / "reason_seg" / "ReasonSeg" / "train").glob("*.json"))[0]
    data = json.loads(js.read_text())
    data.pop("text")
    js.write_text(json.dumps(data))
    ctx.reason()


def image_without_its_json(ctx):
    js = sorted((ctx.root / "reason_seg" / "ReasonSeg" / "train").glob("*.json"))[0]
    js.unlink()
    ctx.reason()


def invalid_json(ctx):
    ctx.instances.write_text('{"images": [')
    ctx.refer()


def unknown_split(ctx):
    ctx.refer(split="validation")


def empty_split(ctx):
    for f in (ctx.root / "reason_seg" / "ReasonSeg" / "val").iterdir():
        f.unlink()
    ctx.reason(split="val")


def pickle_that_runs_code(ctx):
    marker = ctx.tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    import pickle

    ctx.refs.write_bytes(pickle.dumps([Evil()]))
    try:
        ctx.refer()
    finally:
        assert not marker.exists()  # refused before anything ran


def query_longer_than_the_context(ctx):
    model = ctx.tiny_model()
    sample = toy_sample(n_queries=1)
    sample.queries[0].text = " ".join(["red"] * 2500)
    model.predict([sample])


def more_seg_tokens_than_masks(ctx):
    model = ctx.tiny_model()
    sample = toy_sample(n_queries=1)
    sample.queries[0].answer = "It is [SEG] and [SEG]."
    model.train()
    model([sample], mode="loss")


def unknown_type_in_config(ctx):
    from reseg.registry import HEADS

    HEADS.build(dict(type="LISAHaed"))


def typo_in_a_config_key(ctx):
    from reseg.registry import HEADS

    HEADS.build(dict(type="LISAHead", dice_wieght=1.0))


def checkpoint_of_another_architecture(ctx):
    from reseg.engine.checkpoint import load_model_weights

    path = ctx.tmp / "other.pth"
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(8, 3, 3, 3)}}, path)
    load_model_weights(ctx.tiny_model(), str(path))


def missing_checkpoint_path(ctx):
    from reseg.registry import MASK_SOURCES

    MASK_SOURCES.build(dict(type="SAMMaskSource", variant="vit_b", checkpoint="/nonexistent/sam_vit_b.pth"))


def checkpoint_that_runs_code(ctx):
    from reseg.engine.checkpoint import load_model_weights

    marker = ctx.tmp / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = ctx.tmp / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": Evil()}, path)
    try:
        load_model_weights(ctx.tiny_model(), str(path))
    finally:
        assert not marker.exists()


def truncated_checkpoint(ctx):
    """A checkpoint cut short is "corrupt or truncated", not a security refusal (kept for real pickles)."""
    from reseg.engine.checkpoint import load_model_weights

    model = ctx.tiny_model()
    path = ctx.tmp / "cut.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(RuntimeError) as err:
        load_model_weights(model, str(path))
    assert "refusing" not in str(err.value) and "plain tensor" not in str(err.value)
    raise err.value


# -- the run's command line and config (issue 29: each used to end in a traceback or a silent surprise)
ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "lisa" / "lisa_tiny_synthref.py"


def _tiny_config(ctx, **options):
    """The tiny LISA config reading the context's data, with ``--cfg-options`` applied."""
    from mmengine.config import Config

    from reseg.cfg_options import merge_cfg_options

    cfg = Config.fromfile(str(TINY_CONFIG))
    merge_cfg_options(cfg, {"data_root": str(ctx.root), **options})
    return cfg


def _argparse_error(parse, argv):
    """Run an argument parser; its one-line error (argparse prints it to stderr and exits) as a ValueError."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parse(argv)
    raise ValueError(err.getvalue().strip().splitlines()[-1])


def unknown_training_loop_key(ctx):
    from reseg.engine.config_check import check_run_config

    check_run_config(_tiny_config(ctx, **{"train_cfg.max_iter": 3}))


def unknown_test_loop_key(ctx):
    from reseg.engine.config_check import check_run_config

    check_run_config(_tiny_config(ctx, **{"test_cfg.max_iters": 3}), training=False)


def cfg_option_without_equals(ctx):
    from reseg.tools.train import parse_args

    _argparse_error(parse_args, [str(TINY_CONFIG), "--cfg-options", "train_cfg.max_iters", "3"])


def cfg_option_without_a_key(ctx):
    from reseg.tools.test import parse_args

    _argparse_error(parse_args, [str(TINY_CONFIG), "x.pth", "--cfg-options", "=3"])


def missing_dataset_folder(ctx):
    from reseg.engine.config_check import check_run_config

    cfg = _tiny_config(ctx)
    shutil.rmtree(ctx.root / "reason_seg")
    check_run_config(cfg)


def missing_tiny_part(ctx, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from reseg.registry import MODELS, SCOPE

    monkeypatch.setenv("RESEG_ROOT", str(ctx.tmp))  # a clone where `make demo` has not run
    cfg = Config.fromfile(str(TINY_CONFIG))
    with DefaultScope.overwrite_default_scope(SCOPE):
        MODELS.build(cfg.model)


def resume_from_a_missing_checkpoint(ctx):
    from reseg.engine.runner import build_runner

    build_runner(_tiny_config(ctx), work_dir=str(ctx.tmp / "work"), resume=str(ctx.tmp / "nope.pth"))


def unknown_strategy(ctx):
    from reseg.tools.train import apply_strategy

    apply_strategy(_tiny_config(ctx), "zero9")


def work_dir_with_checkpoints_without_resume(ctx):
    from reseg.tools import train as train_tool

    work = ctx.tmp / "run"
    work.mkdir()
    (work / "iter_20.pth").write_bytes(b"")
    train_tool.main([str(TINY_CONFIG), "--work-dir", str(work)])


def existing_prediction_dump(ctx):
    from reseg.tools import test as test_tool

    (ctx.tmp / "preds.jsonl").write_text("{}\n")
    (ctx.tmp / "model.pth").write_bytes(b"")
    test_tool.main([str(TINY_CONFIG), str(ctx.tmp / "model.pth"), "--dump-predictions", str(ctx.tmp / "preds.jsonl")])


def empty_checkpoint_file(ctx):
    from reseg.engine.checkpoint import load_model_weights

    path = ctx.tmp / "empty.pth"
    path.write_bytes(b"")
    load_model_weights(ctx.tiny_model(), str(path))


def broken_json_line_in_an_input_file(ctx):
    from reseg.fileio import iter_json_objects

    path = ctx.tmp / "queries.jsonl"
    path.write_text('{"image": "a.png", "query": "x"}\n{"image": "b.png", "query": "y"\n')
    list(iter_json_objects(path, "an object with image and query"))


def transparent_png_for_inference(ctx):
    """A cut-out PNG (transparent background) reaches the model on white, as it looks in a viewer."""
    from reseg.api import as_rgb_image

    _, path, _ = ctx.first_image()
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:4, 2:4] = (10, 20, 30, 255)
    png = path.with_suffix(".png")
    Image.fromarray(rgba, "RGBA").save(png)
    got = as_rgb_image(str(png))
    assert (got[0, 0] == 255).all() and tuple(got[2, 2]) == (10, 20, 30)


def non_image_upload_to_the_web_demo(ctx):
    from reseg.demo import _read_image

    try:
        _read_image(b"%PDF-1.4 not an image", "image")
    except ValueError as err:
        assert "BytesIO" not in str(err) and " at 0x" not in str(err)
        raise


ERR, OK = "error", "ok"

#: (case, expected, exception type, words the message must contain). "{file}" stands for the image
#: file of the broken item; "{instances}" for the annotation file.
CASES = [
    (missing_image, ERR, FileNotFoundError, ["image not found", "{file}"]),
    (corrupt_image, ERR, DatasetFormatError, ["could not be decoded", "{file}"]),
    (truncated_image, ERR, DatasetFormatError, ["truncated", "{file}"]),
    (grayscale_image, OK, None, []),
    (rgba_image, OK, None, []),
    (sixteen_bit_image, OK, None, []),
    (huge_image, ERR, DatasetFormatError, ["more than the limit", "RESEG_MAX_IMAGE_PIXELS", "{file}"]),
    (one_pixel_image, OK, None, []),
    (exif_rotated_image, OK, None, []),
    (image_size_mismatch, ERR, DatasetFormatError, ["{file}", "instances.json", "EXIF"]),
    (polygon_with_two_points, OK, None, []),
    (polygon_outside_the_image, OK, None, []),
    (polygon_with_nan, ERR, DatasetFormatError, ["{instances}", "annotation id", "non-finite"]),
    (empty_mask, OK, None, []),
    (rle_of_the_wrong_size, ERR, DatasetFormatError, ["{instances}", "annotation id", "size [5, 7]"]),
    (ref_without_its_annotation, ERR, DatasetFormatError, ["{instances}", "987654321"]),
    (json_missing_field, ERR, DatasetFormatError, ["synth_train_00000.json", "'text'"]),
    (image_without_its_json, ERR, FileNotFoundError, ["synth_train_00000.json"]),
    (invalid_json, ERR, DatasetFormatError, ["{instances}", "invalid JSON"]),
    (unknown_split, ERR, UnknownSplitError, ["validation", "val", "train"]),
    (empty_split, ERR, FileNotFoundError, ["no .jpg images", "val"]),
    (pickle_that_runs_code, ERR, UnsafePickleError, ["refs(unc).p"]),
    (query_longer_than_the_context, ERR, ValueError, ["model.lmm.max_length", "max_length=2048"]),
    (more_seg_tokens_than_masks, ERR, ValueError, ["[SEG]", "toy0"]),
    (unknown_type_in_config, ERR, KeyError, ["LISAHaed", "Did you mean 'LISAHead'"]),
    (typo_in_a_config_key, ERR, TypeError, ["dice_wieght", "Did you mean 'dice_weight'"]),
    (checkpoint_of_another_architecture, ERR, ValueError, ["other.pth", "missing keys", "unexpected keys",
                                                           "backbone.conv1.weight"]),
    (missing_checkpoint_path, ERR, FileNotFoundError, ["/nonexistent/sam_vit_b.pth", "model.mask_source.checkpoint"]),
    (checkpoint_that_runs_code, ERR, RuntimeError, ["evil.pth", "refusing to load", "Unsupported global"]),
    (truncated_checkpoint, ERR, RuntimeError, ["cut.pth", "is corrupt or truncated", "bytes", "failed finding "
                                               "central directory", "Copy or save it again"]),
    (unknown_training_loop_key, ERR, ValueError, ["train_cfg.max_iter", "IterBasedTrainLoop takes no argument "
                                                  "'max_iter'", "did you mean train_cfg.max_iters?"]),
    (unknown_test_loop_key, ERR, ValueError, ["test_cfg.max_iters", "TestLoop takes no argument 'max_iters'"]),
    (cfg_option_without_equals, ERR, ValueError, ["--cfg-options 'train_cfg.max_iters' has no '='", "KEY=VALUE",
                                                  "did you mean train_cfg.max_iters=3?"]),
    (cfg_option_without_a_key, ERR, ValueError, ["--cfg-options '=3' has no key before '='"]),
    (missing_dataset_folder, ERR, ValueError, ["train_dataloader.dataset.datasets.1.data_root=", "reason_seg",
                                               "no such folder", "data_root"]),
    (missing_tiny_part, ERR, FileNotFoundError, ["vision_tiny.pth", "model.lmm.tiny.vision_checkpoint",
                                                 "`make pretrain-demo`"]),
    (resume_from_a_missing_checkpoint, ERR, FileNotFoundError, ["--resume", "nope.pth", "no such checkpoint"]),
    (unknown_strategy, ERR, SystemExit, ["--strategy 'zero9'", "deepspeed_zero2"]),
    (work_dir_with_checkpoints_without_resume, ERR, SystemExit, ["run", "iter_20.pth", "--resume"]),
    (existing_prediction_dump, ERR, SystemExit, ["preds.jsonl", "exists", "--overwrite-dump"]),
    (empty_checkpoint_file, ERR, RuntimeError, ["empty.pth", "corrupt or truncated"]),
    (broken_json_line_in_an_input_file, ERR, ValueError, ["queries.jsonl, line 2", "not valid JSON",
                                                          "at the end of the line"]),
    (transparent_png_for_inference, OK, None, []),
    (non_image_upload_to_the_web_demo, ERR, ValueError, ["field 'image'", "21 bytes uploaded", "PNG, JPEG"]),
]


def test_the_table_has_at_least_40_cases():
    assert len(CASES) >= 40 and len({c[0].__name__ for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case,expected,exc,words", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(case, expected, exc, words, synth_root, tmp_path, monkeypatch):
    ctx = Ctx(synth_root, tmp_path)
    _, image_file, _ = ctx.first_image()
    takes = case.__code__.co_varnames[: case.__code__.co_argcount]
    kwargs = {"monkeypatch": monkeypatch} if "monkeypatch" in takes else {}
    if expected == OK:
        case(ctx, **kwargs)
        return
    with pytest.raises(exc) as err:
        case(ctx, **kwargs)
    msg = str(err.value)
    for w in words:
        w = w.replace("{file}", image_file.name).replace("{instances}", str(ctx.instances))
        assert w in msg, f"{case.__name__}: {w!r} not in the message:\n{msg}"


def test_troubleshooting_lists_every_case():
    """docs/troubleshooting.md has a row naming each case of the table (its function name, in backticks)."""
    text = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    missing = [c[0].__name__ for c in CASES if f"`{c[0].__name__}`" not in text]
    assert missing == []
