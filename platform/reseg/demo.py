"""The local web demo of ``tools/demo.py``: a page to upload an image, type a query, optionally draw a
reference mask (pool-based heads), and see the mask, the answer and the head's maps.

It is a small HTTP server from the standard library (``http.server``) in front of a
:class:`reseg.api.Segmenter`, and one self-contained page (``reseg/demo.html``: no external scripts,
fonts or styles, so it works offline, where a Gradio front end would try to fetch its assets). The
model runs one request at a time (a lock); the page waits for its answer.

Routes:

* ``GET /``: the page.
* ``GET /api/info``: JSON ``{config, head, mask_source, uses_pools, generates_by_default, device,
  precision}``.
* ``POST /api/segment``: JSON in, JSON out. In: ``image`` (a ``data:image/...;base64,`` URL of a PNG,
  JPEG, BMP or WebP file), ``query`` (text), optional ``generate`` (bool; default: the config's
  ``model.val_mode``), optional ``is_sentence`` (bool; default :func:`reseg.api.looks_like_sentence`),
  optional ``reference_mask`` (a PNG data URL; pixels with alpha > 0, or any non-zero channel when the
  PNG has no alpha, are the mask; resized to the image with nearest neighbour; only for pool-based
  heads). Out: ``query``, ``exists``, ``score``, ``text``, ``seconds``, ``mask_png`` and
  ``overlay_png`` (PNG data URLs; the overlay is :func:`reseg.engine.visualization.result_panel`),
  ``maps`` (``{name: PNG data URL}``: the head's heat-maps and, for pool heads, the pool with the
  selected group), ``pool`` (``{size, selected}`` or null) and ``mask_rle`` (COCO RLE). A bad request
  gets status 400 (413 when too large) and ``{"error": message}`` naming the field at fault.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import numpy as np

#: Largest request body accepted (bytes); a 4000 x 3000 JPEG as base64 is ~5 MB.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Longest query accepted (characters).
MAX_QUERY_CHARS = 2000
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/webp")


class DemoRequestError(ValueError):
    """A bad request: the message names the field and what was expected (HTTP ``status``)."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = int(status)


def decode_data_url(value: Any, field: str, types: tuple[str, ...] = IMAGE_TYPES) -> bytes:
    """The bytes of a ``data:<type>;base64,...`` URL; :class:`DemoRequestError` naming ``field`` otherwise."""
    if not isinstance(value, str) or not value.startswith("data:"):
        got = repr(value[:40]) + "..." if isinstance(value, str) else type(value).__name__
        raise DemoRequestError(f"field {field!r}: expected a data URL 'data:image/png;base64,...', got {got}")
    head, sep, payload = value.partition(",")
    mime = head[5:].split(";")[0].strip().lower()
    if not sep or not head.endswith(";base64"):
        raise DemoRequestError(f"field {field!r}: expected a base64 data URL ('data:<type>;base64,<data>')")
    if mime not in types:
        raise DemoRequestError(f"field {field!r}: unsupported type {mime!r}; expected one of {list(types)}")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DemoRequestError(f"field {field!r}: the base64 data does not decode ({err})") from None


def png_data_url(rgb_or_gray: np.ndarray) -> str:
    """A PNG data URL of an ``[H, W, 3]`` RGB or ``[H, W]`` uint8/bool array."""
    from PIL import Image

    a = np.asarray(rgb_or_gray)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _read_image(data: bytes, field: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError:  # Pillow's text names its BytesIO object, not the upload
        raise DemoRequestError(f"field {field!r}: the {len(data)} bytes uploaded are not an image Pillow can read "
                               "(expected a PNG, JPEG, BMP or WebP file)") from None
    except (OSError, ValueError) as err:
        raise DemoRequestError(f"field {field!r}: the image data is damaged or truncated ({err})") from None
    return img


def reference_mask_from_png(data: bytes, size: tuple[int, int], field: str = "reference_mask") -> np.ndarray:
    """``[H, W] bool`` at ``size`` from a drawn PNG: alpha > 0 where there is an alpha channel, else any
    non-zero channel; resized with nearest neighbour when the drawing has another size."""
    from PIL import Image

    img = _read_image(data, field)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        m = np.asarray(img.convert("RGBA"))[..., 3] > 0
    else:
        m = np.asarray(img.convert("L")) > 0
    h, w = size
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
    return m


class DemoApp:
    """What the server does, without HTTP (tested on its own).

    Args:
        segmenter: a loaded :class:`reseg.api.Segmenter`.
        config_name: shown on the page.
    """

    def __init__(self, segmenter: Any, config_name: str = "") -> None:
        self.segmenter = segmenter
        self.config_name = config_name
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        model = self.segmenter.model
        return dict(config=self.config_name, head=type(model.head).__name__,
                    mask_source=type(model.mask_source).__name__, uses_pools=bool(self.segmenter.uses_pools),
                    generates_by_default=bool(self.segmenter.generates_by_default),
                    device=str(self.segmenter.device), precision=getattr(self.segmenter, "precision", "fp32"))

    def segment(self, payload: Any) -> dict[str, Any]:
        """Answer one ``POST /api/segment`` body (a parsed JSON object)."""
        from reseg.engine.visualization import heatmap_overlay, pool_overlay, prediction_heatmaps, result_panel
        from reseg.masks.rle import encode_rle

        if not isinstance(payload, dict):
            raise DemoRequestError(f"the request body must be a JSON object, got {type(payload).__name__}")
        unknown = sorted(set(payload) - {"image", "query", "generate", "is_sentence", "reference_mask"})
        if unknown:
            raise DemoRequestError(f"unknown field(s) {unknown}; expected image, query, generate, is_sentence, "
                                   "reference_mask")
        if "image" not in payload:
            raise DemoRequestError("field 'image' is missing: expected a data URL of the image")
        query = payload.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DemoRequestError(f"field 'query': expected a non-empty string, got {query!r}")
        if len(query) > MAX_QUERY_CHARS:
            raise DemoRequestError(f"field 'query': {len(query)} characters; at most {MAX_QUERY_CHARS}")
        flags = {}
        for key in ("generate", "is_sentence"):
            v = payload.get(key)
            if v is not None and not isinstance(v, bool):
                raise DemoRequestError(f"field {key!r}: expected true, false or null, got {v!r}")
            flags[key] = v
        from reseg.datasets.io import pil_to_rgb

        rgb = pil_to_rgb(_read_image(decode_data_url(payload["image"], "image"), "image"))  # transparent: white
        refs = None
        if payload.get("reference_mask") is not None:
            if not self.segmenter.uses_pools:
                raise DemoRequestError(
                    f"field 'reference_mask': {type(self.segmenter.model.head).__name__} does not read reference "
                    "masks (only pool-based heads such as RAS do)")
            ref = reference_mask_from_png(decode_data_url(payload["reference_mask"], "reference_mask",
                                                          ("image/png",)), rgb.shape[:2])
            refs = ref[None] if ref.any() else None  # an empty drawing is no reference
        t0 = time.perf_counter()
        with self._lock:
            try:
                r = self.segmenter.segment(rgb, query, reference_masks=refs, generate=flags["generate"],
                                           is_sentence=flags["is_sentence"])
            except ValueError as err:  # e.g. a pool head without a proposer: the user's setup, not a crash
                raise DemoRequestError(str(err), HTTPStatus.UNPROCESSABLE_ENTITY) from None
        seconds = time.perf_counter() - t0
        pred = r.prediction
        extras = getattr(pred, "extras", None) or {}
        maps = {name: png_data_url(heatmap_overlay(rgb, m)) for name, m in prediction_heatmaps(extras).items()}
        pool = None
        cands = extras.get("candidate_masks")
        if cands is not None:
            selected = [int(i) for i in (pred.selected or [])]
            pool = dict(size=len(cands), selected=selected)
            maps[f"pool of {len(cands)}, selected {selected}"] = png_data_url(pool_overlay(rgb, cands, selected))
        return dict(query=r.query, exists=bool(r.exists), score=r.score, text=r.text, seconds=seconds,
                    mask_png=png_data_url(r.mask), overlay_png=png_data_url(result_panel(rgb, r)),
                    maps=maps, pool=pool, mask_rle=encode_rle(r.mask))


def page_html() -> bytes:
    """The demo page (``reseg/demo.html``)."""
    return resources.files("reseg").joinpath("demo.html").read_bytes()


def make_handler(app: DemoApp, log: Any | None = None) -> type:
    """A ``BaseHTTPRequestHandler`` class serving ``app`` (``log(message)`` receives the access log;
    None keeps it quiet)."""
    page = page_html()

    class Handler(BaseHTTPRequestHandler):
        server_version = "reseg-demo"

        def log_message(self, fmt: str, *args: Any) -> None:
            if log is not None:
                log(f"{self.address_string()} {fmt % args}")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif path == "/api/info":
                self._json(HTTPStatus.OK, app.info())
            else:
                self._json(HTTPStatus.NOT_FOUND, dict(error=f"no page {path!r}; the demo serves / and /api/*"))

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            if path != "/api/segment":
                self._json(HTTPStatus.NOT_FOUND, dict(error=f"no endpoint {path!r}; POST /api/segment"))
                return
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                self._json(HTTPStatus.LENGTH_REQUIRED, dict(error="a Content-Length header is required"))
                return
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the body is not read
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           dict(error=f"request body of {length} bytes; at most {MAX_BODY_BYTES}"))
                return
            raw = self.rfile.read(length)
            try:
                try:
                    payload = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise DemoRequestError(f"the request body is not JSON ({err})") from None
                self._json(HTTPStatus.OK, app.segment(payload))
            except DemoRequestError as err:
                self._json(err.status, dict(error=str(err)))
            except Exception as err:  # a model failure: report it to the page and the log, keep serving
                if log is not None:
                    log(f"error while segmenting: {type(err).__name__}: {err}")
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, dict(error=f"{type(err).__name__}: {err}"))

    return Handler


def make_server(app: DemoApp, host: str = "127.0.0.1", port: int = 7860, log: Any | None = None):
    """A ``ThreadingHTTPServer`` serving ``app`` (``port=0`` picks a free port: see ``server_address``).
    Call ``serve_forever()`` on it; ``shutdown()`` from another thread stops it."""
    server = ThreadingHTTPServer((host, int(port)), make_handler(app, log))
    server.daemon_threads = True
    return server
