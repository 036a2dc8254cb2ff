"""The inference API (``reseg.load_model`` / ``Segmenter``) and ``tools/infer.py`` on tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from script_runner import run_script
from tiny import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
HEADS = ("LISAHead", "READHead", "AnchorSegHead")


def _image(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = (220, 30, 30)
    cv2.imwrite(str(path), img[..., ::-1])  # PNG: lossless, so file / PIL / array give the same pixels
    return img


@pytest.fixture(scope="module")
def lisa(tmp_path_factory):
    """A LISA config, its .pth checkpoint, the loaded Segmenter and two PNG images of different sizes."""
    from reseg import load_model

    tmp = tmp_path_factory.mktemp("api")
    cfg_path, ckpt, _ = write_tiny_model(tmp, "LISAHead", "pth")
    images = [(tmp / "a.png", _image(tmp / "a.png", 48, 64, 1)), (tmp / "b.png", _image(tmp / "b.png", 40, 30, 2))]
    return dict(tmp=tmp, cfg=cfg_path, ckpt=ckpt, seg=load_model(cfg_path, ckpt, device="cpu"), images=images)


@pytest.mark.parametrize("head", HEADS)
def test_path_pil_and_array_give_the_same_mask_at_the_original_size(tmp_path, head):
    from reseg import load_model

    cfg_path, ckpt, model = write_tiny_model(tmp_path, head, "safetensors")
    seg = load_model(cfg_path, ckpt)
    assert not seg.model.training and seg.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    path = tmp_path / "img.png"
    img = _image(path, 45, 70, 3)
    by_path = seg.segment(str(path), "the red square")
    with Image.open(path) as pil:
        by_pil = seg.segment(pil, "the red square")
    by_array = seg.segment(img, "the red square")
    for r in (by_path, by_pil, by_array):
        assert r.mask.dtype == bool and r.mask.shape == (45, 70)
        assert isinstance(r.exists, bool) and r.score is None and r.text is None  # teacher forcing
    assert np.array_equal(by_path.mask, by_pil.mask) and np.array_equal(by_path.mask, by_array.mask)
    # the checkpoint was loaded: the same answer as the model that wrote it
    from reseg.structures import Query, Sample

    q = Query(text="the red square", masks=np.zeros((0, 45, 70), bool))
    with torch.no_grad():
        ref = model.predict([Sample(image=img, queries=[q])])[0]["predictions"][0]
    assert np.array_equal(by_array.mask, ref.binary_mask() if ref.exists else np.zeros((45, 70), bool))
    generated = seg.segment(img, ["the red square", "what is red?"], generate=True)
    for r in generated:
        assert isinstance(r.text, str) and r.mask.shape == (45, 70) and (r.exists or not r.mask.any())


def test_a_batch_gives_the_same_masks_as_one_by_one_calls(lisa):
    seg = lisa["seg"]
    (pa, a), (_, b) = lisa["images"]
    queries = [["the red square", "what is red here?"], ["the left thing", "the background"]]
    batched = seg.segment_batch([str(pa), b], queries, batch_size=2)
    assert [len(r) for r in batched] == [2, 2]
    for img, qs, res in zip((a, b), queries, batched):
        for q, r in zip(qs, res):
            one = seg.segment(img, q)
            assert r.query == q and r.mask.shape == img.shape[:2]
            assert np.array_equal(r.mask, one.mask) and r.exists == one.exists
    assert any(r.mask.any() for res in batched for r in res)  # not a vacuous comparison
    many = seg.segment(a, queries[0])  # a list of queries about one image: a list of results
    assert [r.query for r in many] == queries[0]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(many, batched[0]))


def test_bad_arguments_name_the_argument_and_what_was_expected(lisa, tmp_path):
    seg = lisa["seg"]
    img = lisa["images"][0][1]
    with pytest.raises(TypeError, match=r"image: expected an image file path .*PIL.*uint8.* got int"):
        seg.segment(123, "q")
    with pytest.raises(FileNotFoundError, match=r"image: image file not found: .*nope\.png"):
        seg.segment(str(tmp_path / "nope.png"), "q")
    with pytest.raises(ValueError, match=r"image: expected an \[H, W, 3\] uint8 .*shape \(48, 64\)"):
        seg.segment(img[..., 0], "q")
    with pytest.raises(ValueError, match=r"dtype float32"):
        seg.segment(img.astype(np.float32), "q")
    with pytest.raises(ValueError, match=r"query\[0\]: expected a non-empty query string"):
        seg.segment(img, ["  "])
    with pytest.raises(TypeError, match=r"images\[1\]: expected an image file path"):
        seg.segment_batch([img, None], ["a", "b"])
    with pytest.raises(ValueError, match=r"queries: expected one entry per image \(2 images\), got 1"):
        seg.segment_batch([img, img], ["a"])
    with pytest.raises(ValueError, match=r"reference_masks: expected \[r, H, W\].*\(48, 64\)"):
        seg.segment(img, "a", reference_masks=np.zeros((2, 10, 10), bool))


def test_bf16_precision_runs_the_forward_under_autocast_and_returns_float32(lisa):
    from reseg import load_model
    from reseg.api import resolve_precision

    assert lisa["seg"].precision == "fp32"  # 'auto' on a CPU
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match=r"precision: expected 'auto', 'fp32' or 'bf16', got 'fp16'"):
        load_model(lisa["cfg"], lisa["ckpt"], device="cpu", precision="fp16")
    seg = load_model(lisa["cfg"], lisa["ckpt"], device="cpu", precision="bf16")
    seen = []
    linear = next(m for m in seg.model.lmm.modules() if isinstance(m, torch.nn.Linear))
    hook = linear.register_forward_hook(
        lambda mod, args, out: seen.append((torch.get_autocast_dtype("cpu"), out.dtype)))
    img = lisa["images"][0][1]
    try:
        r = seg.segment(img, "the red square")
    finally:
        hook.remove()
    assert seen and all(s == (torch.bfloat16, torch.bfloat16) for s in seen)  # the LMM's layers ran in bf16
    assert r.prediction.masks.dtype == torch.float32 and r.mask.shape == img.shape[:2]
    ref = lisa["seg"].segment(img, "the red square")
    # same decision on nearly every pixel (random weights: logits near 0 can flip with bf16 rounding)
    assert np.mean(r.mask == ref.mask) > 0.9


def test_reference_masks_are_passed_on_as_query_reference_masks(lisa, monkeypatch):
    seg = lisa["seg"]
    img = lisa["images"][0][1]
    seen = []
    predict = seg.model.predict
    monkeypatch.setattr(seg.model, "predict", lambda samples, generate=False: seen.extend(samples) or
                        predict(samples, generate=generate))
    ref = np.zeros((48, 64), bool)
    ref[5:10, 5:10] = True
    seg.segment(img, ["a", "b"], reference_masks=ref)
    refs = [q.reference_masks for q in seen[0].queries]
    assert all(r.shape == (1, 48, 64) and r.dtype == bool and np.array_equal(r[0], ref) for r in refs)


def test_a_checkpoint_of_another_model_is_refused(lisa, tmp_path):
    from reseg import load_model

    _, other, _ = write_tiny_model(tmp_path, "AnchorSegHead", "safetensors")
    with pytest.raises(ValueError, match="does not fit this model"):
        load_model(lisa["cfg"], other)


def test_candidate_masks_are_refused_for_heads_that_do_not_select_from_a_pool(lisa):
    seg = lisa["seg"]
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(ValueError, match="LISAHead does not select from a pool"):
        seg.segment(image, "the red circle", candidate_masks=np.zeros((2, 20, 30), bool))
    with pytest.raises(ValueError, match=r"candidate_masks: expected one entry .* \(1 images\), got 2"):
        seg.segment_batch([image], ["x"], candidate_masks=[None, None])


def test_import_reseg_stays_cheap():
    code = ("import sys, reseg; assert 'reseg.api' not in sys.modules and 'torch' not in sys.modules; "
            "assert callable(reseg.load_model) and 'reseg.api' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


# ---------------------------------------------------------------------------- tools/infer.py
def _decode(rle: dict) -> np.ndarray:
    import warnings

    from pycocotools import mask as mask_utils

    with warnings.catch_warnings():  # pycocotools 2.0.x vs numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _check_outputs(out: Path, expected: list[tuple[str, str, np.ndarray]]) -> None:
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(x["image"], x["query"]) for x in lines] == [(i, q) for i, q, _ in expected]
    for x, (_, _, mask) in zip(lines, expected):
        assert isinstance(x["mask_rle"]["counts"], str) and x["mask_rle"]["size"] == list(mask.shape)
        assert np.array_equal(_decode(x["mask_rle"]), mask)
        png = cv2.imread(str(out / x["mask_png"]), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(png > 0, mask)
        overlay = cv2.imread(str(out / x["overlay_png"]))
        assert overlay is not None and overlay.shape[0] > mask.shape[0]
        s = max(1, -(-256 // mask.shape[0]))  # overlay_panel's upscale; two panels: image | prediction
        assert overlay.shape[1] == 2 * mask.shape[1] * s + 4
        assert set(x) >= {"exists", "score", "text"} and x["text"] is None


def test_infer_cli_on_one_image_writes_pngs_and_rle_matching_the_api(lisa):
    (pa, a), _ = lisa["images"]
    out = lisa["tmp"] / "cli_one"
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), lisa["cfg"], lisa["ckpt"], "--image", str(pa),
           "--query", "the red square", "--out-dir", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    _check_outputs(out, [(str(pa), "the red square", lisa["seg"].segment(a, "the red square").mask)])
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "--overwrite" in again.stderr  # refuses before loading anything


def test_infer_cli_on_jsonl_and_overwrite(lisa, monkeypatch):
    tmp = lisa["tmp"]
    (_, a), (_, b) = lisa["images"]
    monkeypatch.chdir(tmp)  # "a.png" is found from the current directory, "sub/../b.png" from the JSONL's
    (tmp / "sub").mkdir(exist_ok=True)
    jsonl = tmp / "sub" / "q.jsonl"
    jsonl.write_text(json.dumps({"image": "a.png", "query": "the red square"}) + "\n\n"
                     + json.dumps({"image": "../b.png", "queries": ["the dog", "what is red?"]}) + "\n")
    out = tmp / "cli_jsonl"
    argv = [lisa["cfg"], lisa["ckpt"], "--input", str(jsonl), "--out-dir", str(out), "--batch-size", "2"]
    assert run_script("tools/infer.py", argv) == 0
    seg = lisa["seg"]
    _check_outputs(out, [("a.png", "the red square", seg.segment(a, "the red square").mask),
                         ("../b.png", "the dog", seg.segment(b, "the dog").mask),
                         ("../b.png", "what is red?", seg.segment(b, "what is red?").mask)])
    before = (out / "results.jsonl").read_text()
    with pytest.raises(SystemExit, match=r"results.jsonl.*--overwrite"):
        run_script("tools/infer.py", argv)
    assert (out / "results.jsonl").read_text() == before
    mine = out / "masks" / "notes.txt"
    mine.write_text("kept")  # not listed in results.jsonl: never removed
    assert run_script("tools/infer.py", argv + ["--overwrite", "--no-overlay"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    assert sorted(p.name for p in (out / "overlays").iterdir()) == []  # the replaced run's overlays are gone
    assert len(list((out / "masks").glob("*.png"))) == 3 and mine.read_text() == "kept"
    # a smaller run replaces a larger one: only its own PNGs stay
    jsonl.write_text(json.dumps({"image": "a.png", "query": "the red square"}) + "\n")
    assert run_script("tools/infer.py", argv + ["--overwrite"]) == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 1
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == sorted(
        [lines[0]["mask_png"], lines[0]["overlay_png"]])


@pytest.mark.parametrize("line, message", [
    ('{"image": "a.png", "query": "x"', r"line 2: not valid JSON \(Expecting ',' delimiter at the end of the line\)"),
    ('{"image": "a.png", "query": x}', r"line 2: not valid JSON \(Expecting value at column 29\)"),
    ('{"query": "x"}', r"line 2: field 'image' must be an image path"),
    ('{"image": "missing.png", "query": "x"}', r"line 2: field 'image': file not found: 'missing.png'"),
    ('{"image": "a.png"}', r"line 2: give exactly one of the fields 'query'"),
    ('{"image": "a.png", "queries": ["ok", 3]}', r"line 2: field 'queries\[1\]' must be a non-empty string"),
    ('["a.png", "x"]', r"line 2: expected a JSON object"),
])
def test_infer_cli_names_the_file_line_and_field_of_a_bad_input_line(lisa, monkeypatch, line, message):
    monkeypatch.chdir(lisa["tmp"])
    jsonl = lisa["tmp"] / "bad.jsonl"
    jsonl.write_text(json.dumps({"image": "a.png", "query": "fine"}) + "\n" + line + "\n")
    with pytest.raises(SystemExit, match=r"bad\.jsonl, " + message):
        run_script("tools/infer.py",
                   [lisa["cfg"], lisa["ckpt"], "--input", str(jsonl), "--out-dir", str(lisa["tmp"] / "bad_out")])
    assert not (lisa["tmp"] / "bad_out").exists()  # checked before the model is loaded


def test_infer_cli_names_the_line_of_a_corrupt_image_and_leaves_no_results(lisa, monkeypatch):
    monkeypatch.chdir(lisa["tmp"])
    (lisa["tmp"] / "corrupt.png").write_bytes(b"not an image")
    jsonl = lisa["tmp"] / "corrupt.jsonl"
    jsonl.write_text(json.dumps({"image": "corrupt.png", "query": "x"}) + "\n")
    out = lisa["tmp"] / "corrupt_out"
    with pytest.raises(SystemExit, match=r"corrupt\.jsonl, line 1, field 'image': .*corrupt\.png"):
        run_script("tools/infer.py", [lisa["cfg"], lisa["ckpt"], "--input", str(jsonl), "--out-dir", str(out)])
    assert not (out / "results.jsonl").exists() and not (out / "results.jsonl.partial").exists()


@pytest.mark.parametrize("batch_size", ["1", "2"])
def test_infer_cli_skips_and_reports_a_line_too_long_for_the_model_and_goes_on(lisa, monkeypatch, capsys, batch_size):
    monkeypatch.chdir(lisa["tmp"])
    jsonl = lisa["tmp"] / "long.jsonl"
    long_query = " ".join(["red"] * 2500)  # 10,000 characters: past the tiny model's max_length of 2048 tokens
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in (
        {"image": "a.png", "query": "the red square"}, {"image": "b.png", "query": long_query},
        {"image": "b.png", "query": "the dog"})))
    out = lisa["tmp"] / f"long_out{batch_size}"
    code = run_script("tools/infer.py", [lisa["cfg"], lisa["ckpt"], "--input", str(jsonl), "--out-dir", str(out),
                                         "--batch-size", batch_size])
    err = capsys.readouterr().err
    assert code == 1
    assert "long.jsonl, line 2: skipped: conversation is" in err and "max_length=2048 (model.lmm.max_length)" in err
    assert "1 of 3 lines skipped" in err and "Traceback" not in err
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(x["input_line"], x["query"]) for x in lines] == [(1, "the red square"), (3, "the dog")]


def test_exists_is_false_exactly_when_the_mask_is_empty(lisa, monkeypatch):
    """LISA never rejects a query (its prediction's flag is always True): an empty mask is reported as
    ``exists: False``, never ``exists: True`` with no pixel."""
    seg = lisa["seg"]
    img = lisa["images"][0][1]
    r = seg.segment(img, "the red square")
    assert r.mask.any() and r.exists and r.prediction.exists
    monkeypatch.setattr(seg, "threshold", 1e9)  # no logit passes: an empty mask
    r = seg.segment(img, "the red square")
    assert not r.mask.any() and r.exists is False and r.prediction.exists  # the head's own flag is kept
    assert r.to_dict()["exists"] is False and r.to_dict()["area"] == 0


def test_a_transparent_background_is_composited_on_white(tmp_path):
    from reseg.api import as_rgb_image
    from reseg.datasets.io import read_image_rgb

    rgba = np.zeros((20, 30, 4), np.uint8)  # transparent black, as image editors store it
    rgba[5:10, 5:15] = (200, 30, 30, 255)   # an opaque red object
    rgba[12:15, 20:25] = (0, 0, 200, 128)   # half transparent blue
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    with Image.open(path) as pil:
        by_pil = as_rgb_image(pil)
    for got in (as_rgb_image(str(path)), by_pil):
        assert got.shape == (20, 30, 3) and got.dtype == np.uint8
        assert (got[0, 0] == 255).all() and (got[19, 29] == 255).all()      # transparent: white, not black
        assert tuple(got[7, 7]) == (200, 30, 30)                             # opaque: unchanged
        assert tuple(got[13, 22]) == (127, 127, 227)                         # half: blended with white
    assert (read_image_rgb(path)[0, 0] == 0).all()  # the datasets read as LISA does (alpha dropped)
