"""The web demo (``tools/demo.py``, ``reseg.demo``): the HTTP API in-process, then the page end to end in
headless Chromium (Debian's ``chromium`` driven by Playwright with the system browser).

The browser tests need ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it and
sets ``RESEG_REQUIRE_BROWSER=1``, under which a missing browser fails the tests instead of skipping them).
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tiny import ras_model_cfg, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RESEG_CHROMIUM", "/usr/bin/chromium")
# what a root process on a closed network needs (machine notes): no sandbox, no GPU, no background traffic
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _png_url(a: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _decode_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _scene(h: int = 48, w: int = 64, seed: int = 3) -> np.ndarray:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = (220, 30, 30)
    return img


# ------------------------------------------------------------------ in-process server
class _Server:
    def __init__(self, app):
        import threading

        from reseg.demo import make_server

        self.httpd = make_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as r:
                return r.status, r.read(), r.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("Content-Type")

    def post(self, path: str, body, raw: bytes | None = None):
        data = raw if raw is not None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def lisa(tmp_path_factory):
    from reseg import load_model
    from reseg.demo import DemoApp

    tmp = tmp_path_factory.mktemp("demo")
    cfg, ckpt, _ = write_tiny_model(tmp, "LISAHead")
    seg = load_model(cfg, ckpt, device="cpu")
    server = _Server(DemoApp(seg, config_name="LISAHead.py"))
    yield dict(tmp=tmp, cfg=cfg, ckpt=ckpt, seg=seg, server=server)
    server.close()


def test_page_and_info(lisa):
    status, body, ctype = lisa["server"].get("/")
    assert status == 200 and ctype.startswith("text/html")
    page = body.decode()
    for element in ('id="image-input"', 'id="query"', 'id="submit"', 'id="result-overlay"', 'id="ref-canvas"'):
        assert element in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from the internet
    # no result caption before a result: the mask's figure (with its caption) is hidden until one arrives
    figure = re.search(r'<figure id="result-mask-figure"[^>]*>.*?</figure>', page).group(0)
    assert 'style="display:none"' in figure.split(">")[0] and "<figcaption>mask</figcaption>" in figure
    assert page.count("<figcaption>") == 1 and '$("result-mask-figure").style.display = "block"' in page
    status, body, _ = lisa["server"].get("/api/info")
    info = json.loads(body)
    assert status == 200
    assert info == dict(config="LISAHead.py", head="LISAHead", mask_source="SAMMaskSource", uses_pools=False,
                        generates_by_default=False, device="cpu", precision="fp32")
    status, body, _ = lisa["server"].get("/nope")
    assert status == 404 and "/nope" in json.loads(body)["error"]


def test_segment_returns_the_api_mask_as_png_and_rle(lisa):
    from pycocotools import mask as mask_utils

    img = _scene()
    status, out = lisa["server"].post("/api/segment", dict(image=_png_url(img), query="the red square"))
    assert status == 200, out
    expected = lisa["seg"].segment(img, "the red square")
    mask = _decode_url(out["mask_png"]) > 0
    assert mask.shape == img.shape[:2]
    assert np.array_equal(mask, expected.mask)
    rle = dict(out["mask_rle"], counts=out["mask_rle"]["counts"].encode())
    assert np.array_equal(mask_utils.decode(rle).astype(bool), expected.mask)
    assert out["exists"] == expected.exists and out["text"] is None and out["pool"] is None
    overlay = _decode_url(out["overlay_png"])
    assert overlay.ndim == 3 and overlay.shape[0] > img.shape[0]  # upscaled panels + the text band
    assert out["query"] == "the red square" and out["seconds"] > 0


def test_generate_flag_returns_the_generated_text(lisa):
    img = _scene()
    status, out = lisa["server"].post("/api/segment", dict(image=_png_url(img), query="the red square",
                                                           generate=True))
    assert status == 200, out
    expected = lisa["seg"].segment(img, "the red square", generate=True)
    assert isinstance(out["text"], str) and out["text"] == expected.text


@pytest.mark.parametrize("body, status, message", [
    (dict(query="x"), 400, "field 'image' is missing"),
    (dict(image="photo.png", query="x"), 400, "field 'image': expected a data URL"),
    (dict(image="data:image/gif;base64,R0lG", query="x"), 400, "unsupported type 'image/gif'"),
    (dict(image="data:image/png;base64,@@@", query="x"), 400, "field 'image': the base64 data does not decode"),
    (dict(image="data:image/png;base64," + base64.b64encode(b"not a png").decode(), query="x"), 400,
     "field 'image': the 9 bytes uploaded are not an image Pillow can read (expected a PNG, JPEG, BMP or WebP"),
    (dict(image="data:image/png;base64," + base64.b64encode(base64.b64decode(_png_url(_scene())[22:])[:300]).decode(),
          query="x"), 400, "field 'image': the image data is damaged or truncated"),
    (dict(image=_png_url(_scene()), query="  "), 400, "field 'query': expected a non-empty string"),
    (dict(image=_png_url(_scene()), query="x", generate="yes"), 400, "field 'generate'"),
    (dict(image=_png_url(_scene()), query="x", colour="red"), 400, "unknown field(s) ['colour']"),
    (dict(image=_png_url(_scene()), query="x", reference_mask=_png_url(np.ones((48, 64), np.uint8) * 255)), 400,
     "field 'reference_mask': LISAHead does not read reference masks"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_bad_requests_name_the_field(lisa, body, status, message):
    got, out = lisa["server"].post("/api/segment", body)
    assert got == status
    assert message in out["error"], out["error"]
    assert "<_io." not in out["error"] and " object at 0x" not in out["error"]


def test_a_body_that_is_not_json_or_too_large_is_refused(lisa, monkeypatch):
    import reseg.demo

    got, out = lisa["server"].post("/api/segment", None, raw=b"{not json")
    assert got == 400 and "not JSON" in out["error"]
    monkeypatch.setattr(reseg.demo, "MAX_BODY_BYTES", 100)
    got, out = lisa["server"].post("/api/segment", dict(image=_png_url(_scene()), query="x"))
    assert got == 413 and "at most 100" in out["error"]


def test_reference_mask_from_a_drawing_uses_alpha_and_is_resized_to_the_image():
    from reseg.demo import reference_mask_from_png

    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[2:5, 4:9] = (0, 200, 255, 255)
    rgba[7, 15] = (0, 0, 0, 10)  # faint but drawn
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    m = reference_mask_from_png(buf.getvalue(), (10, 20))
    expected = np.zeros((10, 20), bool)
    expected[2:5, 4:9] = True
    expected[7, 15] = True
    assert np.array_equal(m, expected)
    up = reference_mask_from_png(buf.getvalue(), (20, 40))  # drawn at half the image size
    assert up.shape == (20, 40) and np.array_equal(up[::2, ::2], expected)
    gray = io.BytesIO()
    Image.fromarray(expected.astype(np.uint8) * 255).save(gray, format="PNG")  # no alpha: non-zero pixels
    assert np.array_equal(reference_mask_from_png(gray.getvalue(), (10, 20)), expected)


@pytest.mark.parametrize("head, name", [("READHead", "similarity"), ("AnchorSegHead", "prior")])
def test_heads_with_maps_show_them(tmp_path, head, name):
    from reseg import load_model
    from reseg.demo import DemoApp

    cfg, ckpt, _ = write_tiny_model(tmp_path, head)
    app = DemoApp(load_model(cfg, ckpt, device="cpu"))
    img = _scene()
    out = app.segment(dict(image=_png_url(img), query="the red square"))
    assert list(out["maps"]) == [name]
    heat = _decode_url(out["maps"][name])
    assert heat.shape == (48, 64, 3) and not np.array_equal(heat, img)  # the map blended over the image


# ------------------------------------------------------------------ pool-based head (RAS)
_SAM_SIZES = dict(image_size=64, prompt_dim=32, encoder=dict(embed_dim=32, depth=1, num_heads=2),
                  decoder_depth=2, decoder_mlp_dim=64, decoder_heads=2, iou_head_hidden_dim=32)


def _tiny_amg_proposer(sam_checkpoint: str) -> dict:
    """SAM automatic masks from a random tiny SAM (saved, so that the demo process proposes the same
    pool), with the filters open so that it proposes something."""
    return dict(type="SAMAutomaticProposer", variant="custom", checkpoint=sam_checkpoint, multimask_output=False,
                amg=dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9),
                min_area=1, nms_iou=0.95, max_candidates=8, **_SAM_SIZES)


@pytest.fixture(scope="module")
def ras(tmp_path_factory):
    import torch

    from reseg import load_model
    from reseg.demo import DemoApp
    from reseg.models.mask_sources.sam import build_sam

    tmp = tmp_path_factory.mktemp("demo_ras")
    torch.manual_seed(1)
    sam_ckpt = str(tmp / "sam_random.pth")
    torch.save(build_sam("custom", **_SAM_SIZES).state_dict(), sam_ckpt)
    cfg = ras_model_cfg(str(tmp / "tok"))
    cfg["mask_source"]["proposer"] = None  # as the tiny RAS configs (dataset pools): --proposer replaces it
    cfg, ckpt, _ = write_tiny_model(tmp, "RASHead", model_cfg=cfg)
    seg = load_model(cfg, ckpt, device="cpu",
                     cfg_options={"model.mask_source.proposer": _tiny_amg_proposer(sam_ckpt)})
    server = _Server(DemoApp(seg, config_name="RASHead.py"))
    yield dict(tmp=tmp, cfg=cfg, ckpt=ckpt, seg=seg, server=server, sam_ckpt=sam_ckpt)
    server.close()


def test_pool_head_takes_a_drawn_reference_mask_and_shows_its_pool(ras):
    img = _scene()
    assert json.loads(ras["server"].get("/api/info")[1])["uses_pools"] is True
    drawing = np.zeros((48, 64, 4), np.uint8)
    drawing[12:24, 16:32] = (0, 200, 255, 255)
    status, out = ras["server"].post("/api/segment", dict(image=_png_url(img), query="everything like this",
                                                          reference_mask=_png_url(drawing)))
    assert status == 200, out
    ref = np.zeros((1, 48, 64), bool)
    ref[0, 12:24, 16:32] = True
    expected = ras["seg"].segment(img, "everything like this", reference_masks=ref)
    pool = expected.prediction.extras["candidate_masks"]
    assert len(pool) > 0  # the proposer made a pool for the uploaded image
    assert out["pool"] == dict(size=len(pool), selected=list(expected.prediction.selected))
    sel = expected.prediction.selected
    union = pool[sel].any(0) if sel else np.zeros((48, 64), bool)
    assert np.array_equal(_decode_url(out["mask_png"]) > 0, union)
    assert any(name.startswith(f"pool of {len(pool)}") for name in out["maps"])
    # the drawing reached the model as the query's reference mask
    seen = []
    model = ras["seg"].model
    orig = model.predict

    def spy(samples, *a, **k):
        seen.extend(q.reference_masks for s in samples for q in s.queries)
        return orig(samples, *a, **k)

    model.predict = spy
    try:
        ras["server"].post("/api/segment", dict(image=_png_url(img), query="x", reference_mask=_png_url(drawing)))
    finally:
        del model.predict
    assert seen and seen[0] is not None and np.array_equal(seen[0], ref)


def test_demo_cli_refuses_a_pool_model_without_a_proposer(ras):
    r = subprocess.run([sys.executable, str(ROOT / "tools/demo.py"), ras["cfg"], ras["ckpt"], "--port", "0"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode != 0
    assert "has no proposer" in r.stderr and "--proposer" in r.stderr


# ------------------------------------------------------------------ the page in headless Chromium
def _need_browser():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e .[test]")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        msg = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set RESEG_CHROMIUM)"
        if os.environ.get("RESEG_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


class _DemoProcess:
    """``tools/demo.py`` in a subprocess on a free port."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tools/demo.py"), *args, "--port", "0", "--quiet"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, HF_HUB_OFFLINE="1"))
        line = self.proc.stdout.readline()
        if not line.startswith("reseg demo: http://"):
            self.proc.kill()
            raise AssertionError(f"tools/demo.py did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split(": ", 1)[1].strip()

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _browser_session(url: str, run, tmp: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            out = run(page)
            page.screenshot(path=str(tmp / "demo.png"), full_page=True)
            assert not errors, errors
            return out
        finally:
            browser.close()


def _browser_setup(tmp: Path) -> tuple[np.ndarray, Path]:
    """Skip/fail without a browser (:func:`_need_browser`); the test scene and its PNG file."""
    _need_browser()
    img = _scene()
    path = tmp / "scene.png"
    Image.fromarray(img).save(path)
    return img, path


@pytest.mark.browser
def test_browser_one_query_end_to_end(lisa, tmp_path):
    img, path = _browser_setup(tmp_path)
    demo = _DemoProcess(lisa["cfg"], lisa["ckpt"])

    def run(page):
        page.wait_for_function("document.getElementById('model-info').textContent.includes('LISAHead')")
        assert page.is_hidden("#ref-tools")  # LISA reads no reference masks: no drawing tools
        page.set_input_files("#image-input", str(path))
        page.wait_for_function("document.getElementById('preview').naturalWidth === 64")
        page.fill("#query", "the red square")
        page.click("#submit")
        page.wait_for_function("document.getElementById('result-overlay').naturalWidth > 0", timeout=120_000)
        return dict(status=page.inner_text("#status"), answer_visible=page.is_visible("#answer-box"),
                    mask=page.get_attribute("#result-mask", "src"))

    try:
        out = _browser_session(demo.url, run, tmp_path)
    finally:
        demo.close()
    assert out["status"].startswith("done in") and out["answer_visible"]
    assert np.array_equal(_decode_url(out["mask"]) > 0, lisa["seg"].segment(img, "the red square").mask)
    assert (tmp_path / "demo.png").stat().st_size > 0


@pytest.mark.browser
def test_browser_draws_a_reference_mask_for_a_pool_head(ras, tmp_path):
    img, path = _browser_setup(tmp_path)
    prop = tmp_path / "proposer.py"
    prop.write_text(f"proposer = {_tiny_amg_proposer(ras['sam_ckpt'])!r}\n")
    demo = _DemoProcess(ras["cfg"], ras["ckpt"], "--proposer", str(prop))

    def run(page):
        page.wait_for_function("document.getElementById('model-info').textContent.includes('RASHead')")
        page.set_input_files("#image-input", str(path))
        page.wait_for_function("document.getElementById('preview').naturalWidth === 64")
        box = page.locator("#ref-canvas").bounding_box()
        # one stroke across the upper-left quarter of the image
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.35)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.4, steps=5)
        page.mouse.up()
        page.fill("#query", "everything like this")
        page.click("#submit")
        page.wait_for_function("document.getElementById('result-overlay').naturalWidth > 0", timeout=120_000)
        drawn = page.evaluate("document.getElementById('ref-canvas').toDataURL('image/png')")
        return dict(status=page.inner_text("#status"), drawn=drawn, mask=page.get_attribute("#result-mask", "src"),
                    maps=page.locator("#maps figure").count())

    try:
        out = _browser_session(demo.url, run, tmp_path)
    finally:
        demo.close()
    assert "pool of" in out["status"]
    from reseg.demo import decode_data_url, reference_mask_from_png

    ref = reference_mask_from_png(decode_data_url(out["drawn"], "drawn"), img.shape[:2])
    assert 0 < ref.sum() < ref.size / 4 and ref[:24, :32].sum() > 0.9 * ref.sum()  # where the stroke went
    expected = ras["seg"].segment(img, "everything like this", reference_masks=ref[None])
    assert np.array_equal(_decode_url(out["mask"]) > 0, expected.mask)
    assert out["maps"] >= 1  # the pool panel
