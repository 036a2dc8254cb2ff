"""Python inference API: load a trained model once, segment images with free-form queries.

::

    from reseg import load_model

    seg = load_model("configs/lisa/lisa_tiny_synthref.py", "work_dirs/lisa_tiny_synthref/iter_400.pth")
    r = seg.segment("street.jpg", "the man on the left")        # one SegmentationResult
    r.mask, r.exists, r.score, r.text                             # [H, W] bool at the image's size, ...
    rs = seg.segment(image_array, ["the dog", "what keeps people dry?"])   # one result per query
    rss = seg.segment_batch(["a.jpg", "b.png"], [["the dog"], ["the cat", "the sofa"]])  # per image, per query

Every method whose head predicts from an image and a text (LISA, READ, AnchorSeg, and any plugin head
of the ``sam_decoder`` kind) works the same way: the queries become :class:`~reseg.structures.Sample`
objects as the datasets build them and go through :meth:`ReasoningSegmentor.predict`, so the
vision tower and the mask encoder run once per image however many queries it has.

Conventions (the same as ``tools/test.py``'s default evaluation):

* ``mask`` is the union of the head's masks binarised at ``logits > threshold`` (0, LISA's rule);
  it is all False when the model rejected the query (``exists`` False), as the metrics score it
  (``rejected_as_empty``). The raw :class:`~reseg.structures.QueryPrediction` stays available as
  ``result.prediction`` (logits, extras such as AnchorSeg's prior).
* ``generate=None`` follows the config (``model.val_mode``): teacher forcing unless the config says
  ``'generate'``. Under teacher forcing no text is produced (``text`` is None).
* A query that ends like a sentence (``.``, ``?`` or ``!``) is asked with the long-query template
  (ReasonSeg's ``is_sentence``), anything else with the short one; pass ``is_sentence`` to choose.
"""
from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SegmentationResult", "Segmenter", "as_rgb_image", "load_model", "looks_like_sentence"]

ImageLike = str | os.PathLike | np.ndarray | Any  # Any: a PIL image
QueriesLike = str | Sequence[str]


@dataclass
class SegmentationResult:
    """The answer to one query.

    Attributes:
        query: the query text as given.
        mask: ``[H, W] bool`` at the original image size (all False when ``exists`` is False).
        exists: whether the model found a target: it did not reject the query (the head's decision,
            ``prediction.exists``; LISA, READ and AnchorSeg never reject) *and* its mask has a pixel at
            the threshold. So ``exists`` is False exactly when ``mask`` is empty.
        score: the head's confidence of the mask (the highest of its mask scores), or None when the
            head gives none (LISA, READ and AnchorSeg give none).
        text: the generated answer when generating, else None.
        prediction: the head's raw :class:`~reseg.structures.QueryPrediction`.
    """

    query: str
    mask: np.ndarray
    exists: bool
    score: float | None = None
    text: str | None = None
    prediction: Any = field(default=None, repr=False)

    def __repr__(self) -> str:
        h, w = self.mask.shape
        return (f"SegmentationResult(query={self.query!r}, exists={self.exists}, score={self.score}, "
                f"text={self.text!r}, mask=<{h}x{w} bool, {int(self.mask.sum())} px>)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the mask as its shape and pixel count, not the pixels)."""
        return dict(query=self.query, exists=self.exists, score=self.score, text=self.text,
                    size=list(self.mask.shape), area=int(self.mask.sum()))


# ---------------------------------------------------------------------------- inputs
def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__name__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__name__}"


def as_rgb_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """``[H, W, 3] uint8`` RGB from a file path, a PIL image or an ``[H, W, 3] uint8`` array.

    Files are read as the datasets read them (:func:`reseg.datasets.io.read_image_rgb`: OpenCV, EXIF
    orientation applied), except that an image with transparency (a PNG's alpha) is composited on
    white, file or PIL image alike: its transparent background is white, not black. ``name`` is the
    argument named in errors.
    """
    if isinstance(image, (str, os.PathLike)):
        from reseg.datasets.io import read_image_rgb

        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: image file not found: {str(path)!r}")
        return read_image_rgb(path, alpha="white")  # a transparent background is white, not black
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{name}: expected an [H, W, 3] uint8 RGB array, got an array of shape "
                             f"{tuple(image.shape)} and dtype {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"{name}: the image array is empty (shape {tuple(image.shape)})")
        return np.ascontiguousarray(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from reseg.datasets.io import pil_to_rgb

        return pil_to_rgb(image)  # a writable copy; transparency composited on white
    raise TypeError(f"{name}: expected an image file path (str or os.PathLike), a PIL.Image.Image or an "
                    f"[H, W, 3] uint8 numpy array, got {_type_name(image)}")


def _as_query_list(queries: QueriesLike, name: str) -> list[str]:
    if isinstance(queries, str):
        queries = [queries]
    elif not isinstance(queries, (list, tuple)):
        raise TypeError(f"{name}: expected a query string or a list of strings, got {_type_name(queries)}")
    out = []
    for k, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{name}[{k}]: expected a non-empty query string, got {q!r}")
        out.append(q)
    if not out:
        raise ValueError(f"{name}: no query given (an empty list)")
    return out


def _as_reference_masks(masks: Any, size: tuple[int, int], name: str) -> np.ndarray | None:
    if masks is None:
        return None
    m = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(size):
        raise ValueError(f"{name}: expected [r, H, W] (or [H, W]) masks at the image size {tuple(size)}, "
                         f"got shape {tuple(m.shape)}")
    return m.astype(bool)


def _as_pool(masks: Any, size: tuple[int, int], name: str) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim != 3 or tuple(m.shape[1:]) != tuple(size):
        raise ValueError(f"{name}: expected an [N, H, W] pool at the image size {size}, got shape {m.shape}")
    return m.astype(bool)


def looks_like_sentence(text: str) -> bool:
    """The default ``is_sentence``: the query ends with ``.``, ``?`` or ``!`` (a question or an
    instruction rather than a referring phrase)."""
    return text.rstrip().endswith((".", "?", "!"))


# ---------------------------------------------------------------------------- the model
class Segmenter:
    """A loaded :class:`~reseg.models.segmentor.ReasoningSegmentor` in eval mode, ready to answer queries.

    Build it with :func:`load_model`. Args:
        model: the segmentor (already on its device, in eval mode).
        threshold: binarisation threshold of the mask logits (``logits > threshold``).
        batch_size: images per forward in :meth:`segment_batch` (all queries of an image go together).
        cfg: the config the model was built from (for the record).
        precision: ``'fp32'`` or ``'bf16'`` (the forward runs under ``torch.autocast`` with bfloat16 on
            the model's device; masks and scores come back in float32). :func:`load_model` resolves
            ``'auto'``: bf16 on a CUDA device that supports it, else fp32.
    """

    def __init__(self, model: Any, threshold: float = 0.0, batch_size: int = 4, cfg: Any = None,
                 precision: str = "fp32") -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16' (load_model also takes 'auto'), got {precision!r}")
        self.precision = precision
        self.model = model
        self.threshold = float(threshold)
        self.batch_size = int(batch_size)
        self.cfg = cfg
        self._count = 0

    @property
    def device(self):
        import torch

        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def generates_by_default(self) -> bool:
        return getattr(self.model, "val_mode", "teacher_forcing") == "generate"

    # -------------------------------------------------------------- public
    @property
    def uses_pools(self) -> bool:
        """True for heads that select from a candidate mask pool (RAS)."""
        return getattr(getattr(self.model, "head", None), "mask_source_kind", None) == "candidate_pool"

    def segment(self, image: ImageLike, query: QueriesLike, reference_masks: Any = None,
                generate: bool | None = None, is_sentence: bool | None = None,
                candidate_masks: Any = None):
        """Segment ``query`` in ``image``.

        Args:
            image: a file path, a PIL image or an ``[H, W, 3] uint8`` RGB array.
            query: one query (returns one :class:`SegmentationResult`) or a list of queries about the
                same image (returns a list, one result per query, computed in one forward).
            reference_masks: ``[r, H, W]`` (or ``[H, W]``) masks given as input with the query (ORES
                hybrid prompts), the same for every query; passed on as ``Query.reference_masks``.
                The built-in heads (LISA, READ, AnchorSeg) do not read them.
            generate: free generation (the model writes its answer, ``text`` is set) or teacher
                forcing; None follows the config's ``model.val_mode``.
            is_sentence: use the long-query template; None decides per query (:func:`looks_like_sentence`).
            candidate_masks: ``[N, H, W]`` candidate pool for pool-based heads (RAS); None lets the
                model's proposer make one (an error if the config has none). The result's
                ``prediction.selected`` indexes it.
        """
        single = isinstance(query, str)
        refs = None if reference_masks is None else [reference_masks]
        pools = None if candidate_masks is None else [candidate_masks]
        out = self.segment_batch([image], [query], reference_masks=refs, generate=generate,
                                 is_sentence=is_sentence, candidate_masks=pools,
                                 _names=("image", "query", "reference_masks"))[0]
        return out[0] if single else out

    def segment_batch(self, images: Sequence[ImageLike], queries: Sequence[QueriesLike],
                      reference_masks: Sequence[Any] | None = None, generate: bool | None = None,
                      is_sentence: bool | None = None, batch_size: int | None = None,
                      candidate_masks: Sequence[Any] | None = None,
                      _names: tuple[str, str, str] = ("images", "queries", "reference_masks"),
                      ) -> list[list[SegmentationResult]]:
        """Segment several images, each with its own queries.

        Args:
            images: the images (paths, PIL images or arrays, mixed as you like).
            queries: per image, a query string or a list of query strings.
            reference_masks: None, or per image None or ``[r, H, W]`` masks (see :meth:`segment`).
            generate, is_sentence: see :meth:`segment`.
            batch_size: images per forward (default: the segmenter's ``batch_size``).
            candidate_masks: None, or per image None or an ``[N, H, W]`` pool (see :meth:`segment`).
        Returns:
            Per image, a list with one :class:`SegmentationResult` per query (even for a single
            query string), in the order given. The results do not depend on how the images are
            batched (up to float rounding of logits at the threshold).
        """
        iname, qname, rname = _names
        if isinstance(images, (str, os.PathLike, np.ndarray)) or not isinstance(images, Sequence):
            raise TypeError(f"{iname}: expected a list of images, got {_type_name(images)} "
                            "(use segment() for one image)")
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise TypeError(f"{qname}: expected a list with one query string or list of strings per image, "
                            f"got {_type_name(queries)}")
        if len(queries) != len(images):
            raise ValueError(f"{qname}: expected one entry per image ({len(images)} images), got {len(queries)}")
        if reference_masks is not None and len(reference_masks) != len(images):
            raise ValueError(f"{rname}: expected one entry (None or masks) per image ({len(images)} images), "
                             f"got {len(reference_masks)}")
        if candidate_masks is not None and len(candidate_masks) != len(images):
            raise ValueError(f"candidate_masks: expected one entry (None or an [N, H, W] pool) per image "
                             f"({len(images)} images), got {len(candidate_masks)}")
        if candidate_masks is not None and not self.uses_pools and any(p is not None for p in candidate_masks):
            raise ValueError(f"candidate_masks: {type(self.model.head).__name__} does not select from a pool; "
                             "only pool-based heads (RAS) read candidate masks")
        bs = self.batch_size if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        gen = self.generates_by_default if generate is None else bool(generate)
        single = len(images) == 1
        results: list[list[SegmentationResult]] = []
        for start in range(0, len(images), bs):
            samples = []
            for i in range(start, min(start + bs, len(images))):
                where = "" if single else f"[{i}]"
                refs = reference_masks[i] if reference_masks is not None else None
                sample = self._sample(images[i], queries[i], refs, is_sentence,
                                      (f"{iname}{where}", f"{qname}{where}", f"{rname}{where}"))
                pool = candidate_masks[i] if candidate_masks is not None else None
                if pool is not None:
                    sample.candidate_masks = _as_pool(pool, sample.size, f"candidate_masks{where}")
                samples.append(sample)
            results.extend(self._run(samples, gen))
        return results

    # -------------------------------------------------------------- internals
    def _sample(self, image: ImageLike, queries: QueriesLike, reference_masks: Any,
                is_sentence: bool | None, names: tuple[str, str, str]):
        from reseg.structures import Query, Sample

        iname, qname, rname = names
        texts = _as_query_list(queries, qname)
        rgb = as_rgb_image(image, iname)
        h, w = rgb.shape[:2]
        refs = _as_reference_masks(reference_masks, (h, w), rname)
        if refs is not None and "reference_masks" not in getattr(Query, "__dataclass_fields__", {}):
            raise NotImplementedError(  # pragma: no cover - Query has the field in this version
                f"{rname}: this reseg's Query has no reference_masks; pool-based heads (RAS) and hybrid "
                "prompts are not supported in this version")
        empty = np.zeros((0, h, w), dtype=bool)  # no ground truth at inference
        qs = [Query(text=t.strip(), masks=empty, is_sentence=looks_like_sentence(t) if is_sentence is None
                    else bool(is_sentence), reference_masks=None if refs is None else refs.copy(),
                    meta=dict(query_index=k))
              for k, t in enumerate(texts)]
        self._count += 1
        meta = dict(dataset="inference", split="inference", image_id=f"image{self._count}",
                    sample_id=f"inference|{self._count}", height=h, width=w)
        if isinstance(image, (str, os.PathLike)):
            meta["file_name"] = str(image)
        sample = Sample(image=rgb, queries=qs, task="res", meta=meta)
        sample.meta["query_texts"] = texts  # as given (not stripped), for the results
        return sample

    def _autocast(self):
        import contextlib

        import torch

        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run(self, samples: list, generate: bool) -> list[list[SegmentationResult]]:
        import torch

        with torch.no_grad(), self._autocast():
            outputs = self.model.predict(samples, generate=generate)
        results = []
        for sample, out in zip(samples, outputs):
            preds = out["predictions"]
            if len(preds) != len(sample.queries):
                raise RuntimeError(f"{type(self.model.head).__name__} returned {len(preds)} predictions for "
                                   f"{len(sample.queries)} queries")
            results.append([self._result(text, sample.size, p, generate)
                            for text, p in zip(sample.meta["query_texts"], preds)])
        return results

    def _result(self, text: str, size: tuple[int, int], pred: Any, generate: bool) -> SegmentationResult:
        exists = bool(pred.exists)
        mask = pred.binary_mask(self.threshold)
        if mask.shape != tuple(size):
            raise RuntimeError(f"the head returned a mask of shape {mask.shape}, not the image size {size}")
        if not exists:
            mask = np.zeros(size, dtype=bool)
        exists = exists and bool(mask.any())  # an empty mask is no target found, whatever the head's flag
        score = None
        scores = pred.scores
        if scores is not None:
            s = scores.detach().float().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores, float)
            s = np.asarray(s, dtype=float).reshape(-1)
            score = float(s.max()) if s.size else None
        return SegmentationResult(query=text, mask=np.ascontiguousarray(mask, dtype=bool), exists=exists,
                                  score=score, text=(pred.text or "") if generate else None, prediction=pred)


def _resolve_device(device: Any):
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"device: expected e.g. 'cpu', 'cuda' or 'cuda:1', got {device!r} ({err})") from None


def _as_config(config: Any):
    from mmengine.config import Config

    if isinstance(config, Config):
        return copy.deepcopy(config)
    if isinstance(config, (str, os.PathLike)):
        if not os.path.isfile(config):
            raise FileNotFoundError(f"config: file not found: {str(config)!r}")
        return Config.fromfile(str(config))
    if isinstance(config, dict):
        return Config(copy.deepcopy(config))
    raise TypeError(f"config: expected a config file path, an mmengine Config or a dict, got {_type_name(config)}")


def resolve_precision(precision: str, device: Any) -> str:
    """``'fp32'`` or ``'bf16'`` from ``'auto'|'fp32'|'bf16'``: ``'auto'`` is bf16 on a CUDA device that
    supports it, fp32 elsewhere. An inference argument only: a config's ``precision`` (training) is
    ``'fp32'`` or ``'bf16'``, never resolved by device."""
    import torch

    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision: expected 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    dev = torch.device(device)
    return "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def load_model(config: Any, checkpoint: str | None = None, device: Any = None,
               cfg_options: dict | None = None, threshold: float = 0.0, batch_size: int = 4,
               precision: str = "auto") -> Segmenter:
    """Build the model of ``config`` and load ``checkpoint`` into it for inference.

    Args:
        config: an mmengine config file, ``Config`` or dict with a ``model`` entry.
        checkpoint: a reseg/mmengine ``.pth`` (read with ``weights_only=True``) or a ``.safetensors``
            file; it must fit the model exactly (an error names the keys otherwise). None uses the
            config's ``load_from`` if set, else keeps the weights the config builds (with a warning:
            the head's own layers are then untrained).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, a ``torch.device``; None = CUDA if available, else CPU.
        cfg_options: overrides merged into the config (``{'model.val_mode': 'generate'}``), as
            ``--cfg-options`` does (:func:`reseg.cfg_options.merge_cfg_options`).
        threshold, batch_size: see :class:`Segmenter`.
        precision: ``'auto'`` (default: bf16 autocast on CUDA, fp32 on CPU), ``'fp32'`` or ``'bf16'``
            (autocast on any device, CPU included); see :func:`resolve_precision`.
    """
    from mmengine.registry import DefaultScope

    from reseg.plugins import load_plugins
    from reseg.registry import MODELS, SCOPE

    cfg = _as_config(config)
    if cfg_options:
        from reseg.cfg_options import merge_cfg_options

        merge_cfg_options(cfg, dict(cfg_options))  # also moves paths derived from a top-level variable
    if cfg.get("model") is None:
        raise ValueError("config: it has no `model` entry")
    if checkpoint is None and cfg.get("load_from"):
        checkpoint = cfg.load_from
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint: file not found: {str(checkpoint)!r}")
    dev = _resolve_device(device)
    precision = resolve_precision(precision, dev)
    load_plugins()
    with DefaultScope.overwrite_default_scope(SCOPE):
        model = MODELS.build(copy.deepcopy(cfg.model))
    if checkpoint is not None:
        from reseg.engine.checkpoint import describe_model_differences, load_model_weights

        report = load_model_weights(model, str(checkpoint), strict=True, model_cfg=cfg.model)
        if report["model_differences"]:  # another head's weights can fit the keys exactly
            warnings.warn(describe_model_differences(str(checkpoint), report["model_differences"]), stacklevel=2)
    else:
        warnings.warn("load_model: no checkpoint given; the model keeps the weights its config builds "
                      "(the head's layers are untrained)", stacklevel=2)
    model.to(dev)
    model.eval()
    return Segmenter(model, threshold=threshold, batch_size=batch_size, cfg=cfg, precision=precision)
