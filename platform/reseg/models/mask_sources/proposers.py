"""Candidate-pool proposers: N masks per image for pool-based heads such as RAS (DESIGN.md, "Mask source").

A proposer turns one image into a :class:`Proposals` record (``[N, H, W] bool`` masks at the image's
original size, ``[N]`` scores). Every proposer runs the same post-processing,
:func:`postprocess_pool` (drop tiny masks, mask-IoU NMS, order, cap; ``anchorseg_ras.md`` §2.4 A),
so pools from SAM, a detector or a file are comparable.

Built-in proposers (registry :data:`reseg.registry.PROPOSERS`):

* :class:`SAMAutomaticProposer`: ``segment_anything``'s automatic mask generator on a SAM built by
  :func:`~reseg.models.mask_sources.sam.build_sam` (released ViT-B/L/H or a tiny custom size);
* :class:`MMDetProposer`: the instance masks of any mmdet 3.x detector (Mask R-CNN, Mask2Former,
  Co-DETR through the config's ``custom_imports``); needs the ``mmdet`` extra;
* :class:`PrecomputedProposer`: the pools of a pool file written by ``tools/make_pools.py``.

Proposers are plain classes, not ``nn.Module``: a proposer is a frozen pre-processing step with its
own weights (a SAM ViT-H or a Co-DETR), which must not end up in the segmentor's checkpoints or
optimiser. It picks its own device (CUDA if available).

Pool file format (``reseg-pools`` version 1, JSON lines, see ``docs/proposers.md``)::

    {"format": "reseg-pools", "version": 1, "key": "image_id", "proposer": {...}, "dataset": {...}, ...}
    {"image_id": 42, "size": [H, W], "masks": [{"size": [H, W], "counts": "..."}, ...], "scores": [0.9, ...]}
    ...

The first line is the header; every following line is one image, named by the value of its
``Sample.meta[key]`` under the field ``key`` (``image_id`` by default), with its pool as compressed
COCO RLE in pool order and one score per mask.
"""
from __future__ import annotations

import difflib
import inspect
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from reseg.registry import PROPOSERS

#: Orders of :func:`postprocess_pool`: by score (descending), by area (descending), or as given.
POOL_ORDERS = ("score", "area", "given")

#: Post-processing defaults (``anchorseg_ras.md`` §2.4 A, all [GUESS]): drop masks under 32 px,
#: mask-IoU NMS at 0.8, sort by score, keep at most 100.
DEFAULT_MIN_AREA = 32
DEFAULT_NMS_IOU = 0.8
DEFAULT_MAX_CANDIDATES = 100

#: ``format`` and ``version`` of the pool files this module reads and writes.
POOL_FORMAT = "reseg-pools"
POOL_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


# -- post-processing (a pure function) -------------------------------------------------------------

def _mask_boxes(masks: np.ndarray) -> np.ndarray:
    """``[N, 4]`` int boxes ``(y0, y1, x0, x1)`` (end exclusive) of ``[N, H, W]`` bool masks; empty
    masks get the empty box ``(0, 0, 0, 0)``."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.int64)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)  # [N, H]
    cols = masks.any(axis=1)  # [N, W]
    nonempty = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = rows.argmax(axis=1)
    boxes[:, 1] = h - rows[:, ::-1].argmax(axis=1)
    boxes[:, 2] = cols.argmax(axis=1)
    boxes[:, 3] = w - cols[:, ::-1].argmax(axis=1)
    boxes[~nonempty] = 0
    return boxes


def postprocess_pool(
    masks: np.ndarray,
    scores: Optional[np.ndarray] = None,
    min_area: int = DEFAULT_MIN_AREA,
    nms_iou: Optional[float] = DEFAULT_NMS_IOU,
    max_candidates: Optional[int] = DEFAULT_MAX_CANDIDATES,
    order: str = "score",
) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Clean a raw candidate pool: drop small masks, mask-IoU NMS, order, cap (``anchorseg_ras.md`` §2.4 A).

    Steps, in this order:

    1. drop every mask with fewer than ``min_area`` pixels (0 keeps everything, even empty masks);
    2. rank the rest by ``order``: ``"score"`` (descending score), ``"area"`` (descending pixel
       count) or ``"given"`` (input order); ties keep the input order;
    3. greedy mask-IoU NMS in rank order: a mask is dropped when its IoU with an already kept
       (higher-ranked) mask is **greater than** ``nms_iou`` (None: no NMS). Two masks whose union is
       empty have IoU 0;
    4. keep the first ``max_candidates`` (None: all).

    The defaults are the spec's guesses (§2.4 A: NMS 0.8, 32 px, N_max = 100, by score).

    Args:
        masks: ``[N, H, W] bool`` raw pool.
        scores: ``[N]`` float scores, or None (then ``order`` must not be ``"score"``).
        min_area: smallest area kept, in pixels.
        nms_iou: mask-IoU threshold of the NMS in ``[0, 1]``, or None.
        max_candidates: cap on the pool size (``>= 1``), or None.
        order: one of :data:`POOL_ORDERS`.

    Returns:
        ``(masks [M, H, W] bool, scores [M] float32 or None, kept [M] int64)`` where ``kept`` are the
        input indices of the output masks, in output order.
    """
    m = np.asarray(masks)
    if m.ndim != 3 or m.dtype != bool:
        raise ValueError(f"postprocess_pool: masks must be an [N, H, W] bool array, got shape {m.shape} "
                         f"and dtype {m.dtype}")
    n = m.shape[0]
    s: Optional[np.ndarray] = None
    if scores is not None:
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape[0] != n:
            raise ValueError(f"postprocess_pool: {s.shape[0]} scores for {n} masks (expected one score per mask)")
    if order not in POOL_ORDERS:
        raise ValueError(f"postprocess_pool: order must be one of {POOL_ORDERS}, got {order!r}")
    if order == "score" and s is None:
        raise ValueError("postprocess_pool: order='score' needs scores; pass scores or use order='area'/'given'")
    if min_area < 0:
        raise ValueError(f"postprocess_pool: min_area must be >= 0 pixels, got {min_area}")
    if nms_iou is not None and not 0.0 <= nms_iou <= 1.0:
        raise ValueError(f"postprocess_pool: nms_iou must be in [0, 1] or None, got {nms_iou}")
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"postprocess_pool: max_candidates must be >= 1 or None, got {max_candidates}")

    areas = m.reshape(n, -1).sum(axis=1, dtype=np.int64) if n else np.zeros(0, np.int64)
    cand = np.flatnonzero(areas >= min_area)
    if order == "score":
        cand = cand[np.argsort(-s[cand], kind="stable")]
    elif order == "area":
        cand = cand[np.argsort(-areas[cand], kind="stable")]
    cap = len(cand) if max_candidates is None else int(max_candidates)

    if nms_iou is None:
        kept = cand[:cap]
    else:
        boxes = _mask_boxes(m)
        kept_list: list[int] = []
        for i in cand:
            if len(kept_list) >= cap:
                break
            if kept_list:
                kb = boxes[kept_list]
                y0 = np.maximum(kb[:, 0], boxes[i, 0])
                y1 = np.minimum(kb[:, 1], boxes[i, 1])
                x0 = np.maximum(kb[:, 2], boxes[i, 2])
                x1 = np.minimum(kb[:, 3], boxes[i, 3])
                overlapping = np.flatnonzero((y1 > y0) & (x1 > x0))
                duplicate = False
                for k in overlapping:  # the intersection lies inside the intersection of the boxes
                    j = kept_list[k]
                    inter = int(np.count_nonzero(m[i, y0[k]:y1[k], x0[k]:x1[k]] & m[j, y0[k]:y1[k], x0[k]:x1[k]]))
                    union = int(areas[i]) + int(areas[j]) - inter
                    if union > 0 and inter / union > nms_iou:
                        duplicate = True
                        break
                if duplicate:
                    continue
            kept_list.append(int(i))
        kept = np.asarray(kept_list, dtype=np.int64)
    kept = kept.astype(np.int64)
    out_scores = None if s is None else s[kept].astype(np.float32)
    return m[kept], out_scores, kept


# -- the proposer contract --------------------------------------------------------------------------

@dataclass
class Proposals:
    """The candidate pool of one image.

    Attributes:
        masks: ``[N, H, W] bool`` at the image's original size, in pool order.
        scores: ``[N] float32`` (1.0 each when the source has no scores; ``meta['scored']`` says).
        meta: ``proposer`` (its name), ``n_raw`` (masks before post-processing), ``kept`` (``[N]``
            indices of the kept masks among the raw ones), ``scored``, plus proposer-specific fields.
    """

    masks: np.ndarray
    scores: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.masks.shape[0])


def _to_numpy(x: Any) -> Any:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        return x.detach().cpu().numpy()
    return x


class BaseProposer:
    """Base of every proposer: validated input/output and the shared post-processing.

    Subclasses implement :meth:`_propose_raw` and may override :meth:`settings` (what
    :meth:`describe` reports). Register them with ``@PROPOSERS.register_module()`` (or, in a plugin,
    the ``register_proposers`` hook).

    Args:
        min_area, nms_iou, max_candidates, order: :func:`postprocess_pool` settings applied to every
            image (defaults: ``anchorseg_ras.md`` §2.4 A).
    """

    def __init__(
        self,
        min_area: int = DEFAULT_MIN_AREA,
        nms_iou: Optional[float] = DEFAULT_NMS_IOU,
        max_candidates: Optional[int] = DEFAULT_MAX_CANDIDATES,
        order: str = "score",
        **unknown: Any,
    ) -> None:
        if unknown:
            raise TypeError(self._unknown_arguments_message(unknown))
        self.min_area = int(min_area)
        self.nms_iou = None if nms_iou is None else float(nms_iou)
        self.max_candidates = None if max_candidates is None else int(max_candidates)
        self.order = order
        try:  # check the settings once, here, rather than on the first image
            postprocess_pool(np.zeros((0, 1, 1), bool), np.zeros(0) if order == "score" else None,
                             **self.postprocess_settings())
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {str(err).replace('postprocess_pool: ', '')}") from None

    def _unknown_arguments_message(self, unknown: Mapping[str, Any]) -> str:
        accepted: list[str] = []
        for klass in type(self).__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for name, p in inspect.signature(init).parameters.items():
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in accepted:
                    accepted.append(name)
        hints = []
        for bad in sorted(unknown):
            close = difflib.get_close_matches(bad, accepted, n=1, cutoff=0.5)
            if close:
                hints.append(f"{bad!r} -> did you mean {close[0]!r}?")
        hint = f" ({'; '.join(hints)})" if hints else ""
        return (f"{type(self).__name__} got unexpected argument(s) {sorted(unknown)}{hint}. "
                f"Accepted arguments: {', '.join(accepted)}")

    # -- reporting ---------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name reports and pool files use: the type name configs use (the registered name; the
        class name for an unregistered class)."""
        cls = type(self)
        if PROPOSERS.module_dict.get(cls.__name__) is cls:
            return cls.__name__
        return next((k for k, v in PROPOSERS.module_dict.items() if v is cls), cls.__name__)

    def postprocess_settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`postprocess_pool` this proposer applies."""
        return dict(min_area=self.min_area, nms_iou=self.nms_iou, max_candidates=self.max_candidates,
                    order=self.order)

    def settings(self) -> dict[str, Any]:
        """Proposer-specific settings for :meth:`describe` (JSON-friendly); subclasses extend it."""
        return {}

    def describe(self) -> dict[str, Any]:
        """``{"type": name, <settings>..., "postprocess": {...}}``, JSON-friendly, for reports and pool files."""
        return {"type": self.name, **self.settings(), "postprocess": self.postprocess_settings()}

    # -- proposing ---------------------------------------------------------------------------------

    def propose(self, image: np.ndarray, meta: Optional[Mapping[str, Any]] = None) -> Proposals:
        """The post-processed candidate pool of one image.

        Args:
            image: ``[H, W, 3] uint8`` RGB at the original size.
            meta: the sample's meta (``image_id``, ``file_name``, ...); precomputed pools look it up.

        Returns:
            :class:`Proposals` with masks at ``(H, W)``.
        """
        img = np.asarray(_to_numpy(image))
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"{type(self).__name__}.propose: image must be [H, W, 3] uint8 RGB, got shape {img.shape} "
                             f"and dtype {img.dtype}")
        meta = dict(meta or {})
        size = (int(img.shape[0]), int(img.shape[1]))
        raw = self._propose_raw(img, meta)
        masks, scores = self._check_raw(raw, size)
        out_masks, out_scores, kept = postprocess_pool(masks, scores, **self.postprocess_settings())
        scored = out_scores is not None
        if out_scores is None:
            out_scores = np.ones(len(kept), dtype=np.float32)
        return Proposals(masks=out_masks, scores=out_scores,
                         meta=dict(proposer=self.name, n_raw=int(masks.shape[0]), kept=kept, scored=scored))

    def _propose_raw(self, image: np.ndarray, meta: dict[str, Any]) -> tuple[Any, Any]:
        """``(masks [N, H, W] bool at the image size, scores [N] float or None)``: the raw pool."""
        raise NotImplementedError(f"{type(self).__name__} must implement _propose_raw(image, meta)")

    def _check_raw(self, raw: Any, size: tuple[int, int]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Validate what :meth:`_propose_raw` returned; errors name the proposer class."""
        where = f"{type(self).__name__}._propose_raw"
        if not isinstance(raw, (tuple, list)) or len(raw) != 2:
            raise TypeError(f"{where} must return (masks [N, H, W] bool, scores [N] or None), got "
                            f"{type(raw).__name__}")
        masks, scores = (_to_numpy(v) for v in raw)
        if not isinstance(masks, np.ndarray):
            raise TypeError(f"{where} returned masks of type {type(masks).__name__}, expected a numpy array "
                            f"(or torch tensor) [N, H, W] bool")
        h, w = size
        if masks.ndim != 3 or tuple(masks.shape[1:]) != (h, w):
            raise ValueError(f"{where} returned masks of shape {tuple(masks.shape)}, expected [N, {h}, {w}] "
                             f"(N masks at the image's original size {h}x{w})")
        if masks.dtype != bool:
            raise TypeError(f"{where} returned masks of dtype {masks.dtype}, expected bool (binarise logits or "
                            "probabilities inside _propose_raw)")
        n = masks.shape[0]
        if scores is not None:
            scores = np.asarray(scores)
            if scores.shape != (n,):
                raise ValueError(f"{where} returned scores of shape {tuple(scores.shape)} for {n} masks, "
                                 f"expected [{n}]")
            if not np.issubdtype(scores.dtype, np.number) or not np.all(np.isfinite(scores)):
                raise ValueError(f"{where} returned scores that are not all finite numbers")
        elif self.order == "score":
            raise ValueError(f"{where} returned no scores but the proposer orders by score; set "
                             "order='given' or order='area'")
        return masks, scores


# -- SAM automatic masks ----------------------------------------------------------------------------

#: ``segment_anything.SamAutomaticMaskGenerator`` settings: SAM's own defaults (``anchorseg_ras.md`` §2.4 A).
SAM_AMG_DEFAULTS: dict[str, Any] = dict(points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95,
                                        box_nms_thresh=0.7, crop_n_layers=0, min_mask_region_area=0,
                                        points_per_batch=64)


def default_device(device: Optional[str] = None) -> str:
    """``device`` if given, else ``"cuda"`` when available, else ``"cpu"``."""
    if device is not None:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _SingleOutputPredictor:
    """A ``SamPredictor`` whose ``predict_torch`` always decodes one mask per prompt (decoder slot 0).

    SAM's generator asks for the three multimask outputs; a SAM trained only with
    ``multimask_output=False`` (like the repository's tiny one) has untrained multimask slots.
    """

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor

    def predict_torch(self, *args: Any, multimask_output: bool = True, **kwargs: Any) -> Any:
        return self._predictor.predict_torch(*args, multimask_output=False, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)


@PROPOSERS.register_module()
class SAMAutomaticProposer(BaseProposer):
    """SAM's automatic mask generator as a proposer (``anchorseg_ras.md`` §2.4 A).

    A grid of point prompts is decoded, filtered by predicted IoU and stability and box-NMS-ed by
    ``segment_anything.SamAutomaticMaskGenerator``; each mask's score is predicted IoU x stability
    score; then :func:`postprocess_pool` (by score, mask NMS 0.8, >= 32 px, <= 100).

    Args:
        variant, image_size, prompt_dim, encoder, decoder_depth, decoder_mlp_dim, decoder_heads,
            iou_head_hidden_dim: the SAM to build (:func:`~reseg.models.mask_sources.sam.build_sam`;
            ``variant='custom'`` + ``encoder=dict(...)`` for a tiny one).
        checkpoint: SAM weights (``sam_vit_h_4b8939.pth`` or a ``.safetensors``); None = random weights.
        config_key: where this proposer's config lives (``proposer``, ``model.mask_source.proposer``),
            for error messages (``<config_key>.checkpoint``).
        amg: ``SamAutomaticMaskGenerator`` keyword arguments over :data:`SAM_AMG_DEFAULTS` (SAM's
            defaults: 32 points per side, pred IoU 0.88, stability 0.95, box NMS 0.7, no crops).
        multimask_output: True (SAM): three masks per point prompt; False: one (decoder slot 0), for
            a SAM trained with single-mask outputs only.
        device: ``"cuda"``/``"cpu"``/...; None = CUDA if available, else CPU.
        min_area, nms_iou, max_candidates, order: :class:`BaseProposer`.
    """

    def __init__(
        self,
        variant: str = "vit_h",
        checkpoint: Optional[str] = None,
        image_size: int = 1024,
        prompt_dim: int = 256,
        encoder: Optional[dict] = None,
        decoder_depth: int = 2,
        decoder_mlp_dim: int = 2048,
        decoder_heads: int = 8,
        iou_head_hidden_dim: int = 256,
        amg: Optional[Mapping[str, Any]] = None,
        multimask_output: bool = True,
        device: Optional[str] = None,
        config_key: str = "proposer",
        min_area: int = DEFAULT_MIN_AREA,
        nms_iou: Optional[float] = DEFAULT_NMS_IOU,
        max_candidates: Optional[int] = DEFAULT_MAX_CANDIDATES,
        order: str = "score",
    ) -> None:
        super().__init__(min_area=min_area, nms_iou=nms_iou, max_candidates=max_candidates, order=order)
        from segment_anything import SamAutomaticMaskGenerator

        from reseg.models.mask_sources.sam import build_sam, load_sam_checkpoint, load_state_dict_file

        amg_cfg = dict(SAM_AMG_DEFAULTS)
        if amg:
            accepted = set(inspect.signature(SamAutomaticMaskGenerator.__init__).parameters) - {"self", "model",
                                                                                              "output_mode"}
            bad = sorted(set(amg) - accepted)
            if bad:
                raise TypeError(f"SAMAutomaticProposer: unknown amg setting(s) {bad}; "
                                f"SamAutomaticMaskGenerator accepts {sorted(accepted)}")
            amg_cfg.update(amg)
        if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
            load_state_dict_file(checkpoint, f"{config_key}.checkpoint")  # raises naming path and key, before building
        self.device = default_device(device)
        sam = build_sam(variant, image_size, prompt_dim, encoder, decoder_depth, decoder_mlp_dim,
                        decoder_heads, iou_head_hidden_dim)
        if checkpoint is not None:
            load_sam_checkpoint(sam, checkpoint, f"{config_key}.checkpoint", variant)
        self.sam = sam.to(self.device).eval().requires_grad_(False)
        self.generator = SamAutomaticMaskGenerator(self.sam, output_mode="binary_mask", **amg_cfg)
        if not multimask_output:
            self.generator.predictor = _SingleOutputPredictor(self.generator.predictor)
        self.variant = variant
        self.checkpoint = checkpoint
        self.amg = amg_cfg
        self.multimask_output = bool(multimask_output)

    def settings(self) -> dict[str, Any]:
        return dict(variant=self.variant, checkpoint=self.checkpoint,
                    image_size=int(self.sam.image_encoder.img_size), amg=dict(self.amg),
                    multimask_output=self.multimask_output)

    def _propose_raw(self, image: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        # An empty mask has stability 0/0 = NaN in segment_anything (kept when stability_score_thresh
        # is 0): it is no candidate, whatever the settings.
        records = [r for r in self.generator.generate(image) if r["area"] > 0]
        h, w = image.shape[:2]
        if not records:
            return np.zeros((0, h, w), dtype=bool), np.zeros(0, dtype=np.float32)
        masks = np.stack([np.asarray(r["segmentation"], dtype=bool) for r in records])
        scores = np.asarray([r["predicted_iou"] * r["stability_score"] for r in records], dtype=np.float32)
        return masks, scores


# -- mmdet detectors --------------------------------------------------------------------------------

MMDET_INSTALL_HINT = (
    "MMDetProposer needs mmdet 3.3.0 and mmcv 2.1.0 built with ops (no mmcv wheel exists on PyPI). "
    "Run `bash tools/install_mmdet.sh` with the reseg environment active (it builds the mmcv wheel once, "
    "caches it, then installs the `mmdet` extra: `pip install -e .[mmdet]`); docs/proposers.md"
)


@PROPOSERS.register_module()
class MMDetProposer(BaseProposer):
    """The instance masks of an mmdet 3.x detector as a proposer (``anchorseg_ras.md`` §2.4 A, Co-DETR pool).

    Any mmdet config with a mask head works: Mask R-CNN, Mask2Former, or Co-DETR from a user's
    mmdetection checkout (its config's ``custom_imports = dict(imports=['projects.CO-DETR.codetr'])``
    is honoured when the config is read, with the checkout on ``PYTHONPATH``). The instances with
    score > ``score_thr`` (default 0.3, [GUESS]) become the raw pool, scored by the detector.

    Weights are read with reseg's safe loader (``weights_only=True``, no code from the file runs) and
    must fit the model exactly.

    Args:
        config: an mmdet config file (or a config dict).
        checkpoint: the detector's weights (``.pth`` or ``.safetensors``); None = random weights.
        score_thr: keep instances scoring above this.
        cfg_options: overrides merged into the config (``{"model.backbone.init_cfg": None}``).
        device: None = CUDA if available, else CPU.
        scope: the mmdet registry scope to build and run the detector in (the config's
            ``default_scope`` if it has one, else ``"mmdet"``).
        config_key: the config key named by a missing-file error.
        min_area, nms_iou, max_candidates, order: :class:`BaseProposer`.
    """

    def __init__(
        self,
        config: Union[str, Mapping[str, Any]],
        checkpoint: Optional[str] = None,
        score_thr: float = 0.3,
        cfg_options: Optional[Mapping[str, Any]] = None,
        device: Optional[str] = None,
        scope: Optional[str] = None,
        config_key: str = "proposer",
        min_area: int = DEFAULT_MIN_AREA,
        nms_iou: Optional[float] = DEFAULT_NMS_IOU,
        max_candidates: Optional[int] = DEFAULT_MAX_CANDIDATES,
        order: str = "score",
    ) -> None:
        super().__init__(min_area=min_area, nms_iou=nms_iou, max_candidates=max_candidates, order=order)
        try:
            from mmdet.apis import inference_detector, init_detector
        except ImportError as err:
            raise ImportError(f"{MMDET_INSTALL_HINT}. Import failed with: {type(err).__name__}: {err}") from err
        from mmengine.config import Config
        from mmengine.registry import DefaultScope

        if isinstance(config, (str, os.PathLike)):
            if not Path(config).expanduser().is_file():
                raise FileNotFoundError(f"mmdet config not found: {str(config)!r} ({config_key}.config; expected "
                                        "an mmdet config file, e.g. a Mask R-CNN or Co-DETR config)")
            cfg = Config.fromfile(str(Path(config).expanduser()))  # runs the config's custom_imports
            self.config = str(config)
        else:
            cfg = Config(dict(config))
            if cfg.get("custom_imports"):
                from mmengine.utils import import_modules_from_strings

                import_modules_from_strings(**cfg["custom_imports"])
            self.config = "<dict>"
        if cfg_options:
            cfg.merge_from_dict(dict(cfg_options))
        if checkpoint is not None and not Path(checkpoint).expanduser().is_file():
            raise FileNotFoundError(
                f"checkpoint not found: {str(checkpoint)!r} ({config_key}.checkpoint). reseg never downloads "
                f"weights; point {config_key}.checkpoint at a local file")
        self.scope = scope or cfg.get("default_scope", None) or "mmdet"
        self.device = default_device(device)
        self._inference = inference_detector
        # init_detector sets a global registry scope (restored here) and warns "checkpoint is None" (it
        # calls warnings.simplefilter itself, so the warnings are recorded and re-issued unless the
        # weights are loaded below, by reseg's safe loader)
        with DefaultScope.overwrite_default_scope(self.scope), warnings.catch_warnings(record=True) as caught:
            self.model = init_detector(cfg, None, device=self.device)
        for w in caught:
            if checkpoint is not None and "checkpoint is None" in str(w.message):
                continue
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if checkpoint is not None:
            self._load_weights(str(Path(checkpoint).expanduser()), config_key)
        self.model.eval().requires_grad_(False)
        self.checkpoint = checkpoint
        self.score_thr = float(score_thr)

    def _load_weights(self, path: str, config_key: str) -> None:
        from reseg.engine.checkpoint import load_checkpoint_file

        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            ckpt: Any = load_file(path)
        else:
            ckpt = load_checkpoint_file(path)
        sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(sd, dict):
            raise ValueError(f"{path!r} ({config_key}.checkpoint) holds no state dict")
        own = self.model.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        if missing or unexpected:
            raise RuntimeError(
                f"detector checkpoint {path!r} ({config_key}.checkpoint) does not fit the config "
                f"{self.config!r}: {len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                f"(e.g. {unexpected[:3]})")
        self.model.load_state_dict(sd, strict=True)
        meta = ckpt.get("meta", {}) if isinstance(ckpt, dict) else {}
        if isinstance(meta, dict) and isinstance(meta.get("dataset_meta"), dict):
            self.model.dataset_meta = meta["dataset_meta"]

    def settings(self) -> dict[str, Any]:
        return dict(config=self.config, checkpoint=self.checkpoint, score_thr=self.score_thr, scope=self.scope)

    def _propose_raw(self, image: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        from mmengine.registry import DefaultScope

        bgr = np.ascontiguousarray(image[..., ::-1])  # mmdet pipelines expect OpenCV's BGR
        with DefaultScope.overwrite_default_scope(self.scope):
            result = self._inference(self.model, bgr)
        inst = result.pred_instances
        if "masks" not in inst:
            raise ValueError(f"MMDetProposer: the detector of {self.config!r} predicts no instance masks "
                             "(pred_instances has no 'masks'); use a config with a mask head (Mask R-CNN, "
                             "Mask2Former, Co-DETR instance segmentation)")
        scores = inst.scores.detach().float().cpu().numpy()
        masks = inst.masks
        masks = masks.detach().cpu().numpy() if hasattr(masks, "detach") else np.asarray(masks)
        keep = scores > self.score_thr
        return masks[keep].astype(bool), scores[keep].astype(np.float32)


# -- pool files --------------------------------------------------------------------------------------

class PoolFileError(ValueError):
    """A pool file is malformed, or does not have what was asked of it."""


def _key_str(value: Any) -> str:
    """The index form of a key value: ``42`` and ``"42"`` name the same image."""
    if isinstance(value, (bool, float)) or value is None or isinstance(value, (list, dict)):
        raise PoolFileError(f"a pool key value must be a string or an integer, got {value!r}")
    if isinstance(value, np.integer):
        value = int(value)
    return str(value)


def _json_key(value: Any) -> Union[int, str]:
    """A key value as written in the file (ints stay ints)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return value
    raise PoolFileError(f"a pool key value must be a string or an integer, got {value!r} "
                        f"({type(value).__name__}); pick another key (e.g. file_name)")


def encode_pool(masks: np.ndarray) -> list[dict[str, Any]]:
    """Compressed COCO RLE (``{"size": [H, W], "counts": str}``) of each mask of ``[N, H, W] bool``."""
    from pycocotools import mask as mask_utils

    m = np.asarray(masks, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"encode_pool expects [N, H, W] masks, got shape {m.shape}")
    if m.shape[0] == 0:
        return []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
        rles = mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))
    return [{"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")} for r in rles]


def decode_pool(rles: Sequence[Mapping[str, Any]], size: Sequence[int], where: str) -> np.ndarray:
    """``[N, H, W] bool`` from compressed COCO RLEs that must all have ``size``; errors name ``where``."""
    from pycocotools import mask as mask_utils

    h, w = int(size[0]), int(size[1])
    if not rles:
        return np.zeros((0, h, w), dtype=bool)
    objs = []
    for k, r in enumerate(rles):
        if not isinstance(r, Mapping) or "size" not in r or "counts" not in r:
            raise PoolFileError(f"{where}: masks[{k}] is not a COCO RLE {{'size': [H, W], 'counts': ...}}")
        if [int(v) for v in r["size"]] != [h, w]:
            raise PoolFileError(f"{where}: masks[{k}] has size {list(r['size'])} but the line's size is {[h, w]}")
        counts = r["counts"]
        if isinstance(counts, list):
            objs.append(mask_utils.frPyObjects(dict(size=[h, w], counts=counts), h, w))
        else:
            objs.append(dict(size=[h, w], counts=counts.encode("ascii") if isinstance(counts, str) else counts))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*copy keyword.*", category=DeprecationWarning)
            out = mask_utils.decode(objs)  # [H, W, N]
    except Exception as err:  # noqa: BLE001 - pycocotools raises plain Exceptions
        raise PoolFileError(f"{where}: masks could not be decoded ({type(err).__name__}: {err})") from None
    return np.ascontiguousarray(out.transpose(2, 0, 1)).astype(bool)


def pool_line(key: str, key_value: Any, masks: np.ndarray, scores: Optional[np.ndarray]) -> dict[str, Any]:
    """One image's line of a pool file: ``{key: value, "size": [H, W], "masks": [RLE], "scores": [...]}``."""
    m = np.asarray(masks, dtype=bool)
    line: dict[str, Any] = {key: _json_key(key_value), "size": [int(m.shape[1]), int(m.shape[2])],
                            "masks": encode_pool(m)}
    if scores is not None:
        line["scores"] = [float(v) for v in np.asarray(scores, dtype=np.float64).reshape(-1)]
    return line


def read_pool_header(path: PathLike) -> dict[str, Any]:
    """The header (first line) of a pool file, checked for ``format``/``version``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pool file not found: {str(p)!r} (write one with tools/make_pools.py)")
    with open(p, "rb") as f:
        first = f.readline()
    return _parse_header(first, p)


def _parse_header(line: bytes, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != POOL_FORMAT:
        raise PoolFileError(f"{path}, line 1: not a pool file header (expected a JSON object with "
                            f"\"format\": \"{POOL_FORMAT}\"; files come from tools/make_pools.py)")
    if header.get("version") != POOL_VERSION:
        raise PoolFileError(f"{path}: pool file version {header.get('version')!r}, this reseg reads version "
                            f"{POOL_VERSION}")
    if not isinstance(header.get("key"), str):
        raise PoolFileError(f"{path}, line 1: the header has no \"key\" (the Sample.meta field naming each image)")
    return header


class PoolFileWriter:
    """Write a pool file atomically: lines go to a temporary file, the header comes first at the end.

    Use as a context manager; the file appears at ``path`` only when the block ends without an
    error (temporary file + ``os.replace``), so an interrupted run leaves no half file and never
    touches an existing one. ``header`` may be updated until then (e.g. with the oracle scores).

    Args:
        path: the ``.jsonl`` to write.
        key: the ``Sample.meta`` field naming each image (written as every line's first field).
        header: header fields besides ``format``, ``version`` and ``key``.
        overwrite: replace an existing file; False (default) refuses before anything is computed.
    """

    def __init__(self, path: PathLike, key: str = "image_id", header: Optional[Mapping[str, Any]] = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"pool file {str(self.path)!r} exists; pass --overwrite (overwrite=True) to "
                                  "replace it")
        self.key = key
        self.overwrite = overwrite
        self.header: dict[str, Any] = dict(header or {})
        self._offsets: dict[str, int] = {}
        self._body: Optional[Any] = None
        self._body_path: Optional[str] = None

    def __enter__(self) -> "PoolFileWriter":
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, self._body_path = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".body.tmp", dir=folder)
        self._body = os.fdopen(fd, "w+b")
        return self

    def __contains__(self, key_value: Any) -> bool:
        return _key_str(key_value) in self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def add(self, key_value: Any, masks: np.ndarray, scores: Optional[np.ndarray]) -> None:
        """Append one image's pool (``[N, H, W] bool`` at its original size, ``[N]`` scores)."""
        k = _key_str(key_value)
        if k in self._offsets:
            raise PoolFileError(f"{self.path}: {self.key} {key_value!r} written twice")
        assert self._body is not None, "use PoolFileWriter as a context manager"
        self._body.seek(0, os.SEEK_END)
        self._offsets[k] = self._body.tell()
        line = pool_line(self.key, key_value, masks, scores)
        self._body.write(json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n")

    def get(self, key_value: Any) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Read back a pool already added (masks, scores)."""
        assert self._body is not None
        off = self._offsets[_key_str(key_value)]
        self._body.flush()
        self._body.seek(off)
        line = json.loads(self._body.readline())
        masks = decode_pool(line["masks"], line["size"], f"{self._body_path}")
        scores = line.get("scores")
        return masks, None if scores is None else np.asarray(scores, dtype=np.float32)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._body is not None and self._body_path is not None
        final_tmp = None
        try:
            if exc_type is not None:
                return
            if self.path.exists() and not self.overwrite:  # appeared while we were computing
                raise FileExistsError(f"pool file {str(self.path)!r} appeared while the pool was computed; "
                                      "pass --overwrite to replace it (the new pool was not written)")
            header = {"format": POOL_FORMAT, "version": POOL_VERSION, "key": self.key, **self.header}
            fd, final_tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "wb") as out:
                out.write(json.dumps(header, default=str).encode("utf-8") + b"\n")
                self._body.flush()
                self._body.seek(0)
                while True:
                    chunk = self._body.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(final_tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the pools from other users
            os.replace(final_tmp, self.path)
            final_tmp = None
        finally:
            self._body.close()
            os.unlink(self._body_path)
            if final_tmp is not None and os.path.exists(final_tmp):
                os.unlink(final_tmp)


@PROPOSERS.register_module()
class PrecomputedProposer(BaseProposer):
    """The pools of a pool file (``tools/make_pools.py``), looked up by ``Sample.meta[key]``.

    The file is indexed once (byte offset per image) at construction; each :meth:`propose` reads
    and decodes one line. By default the pools are returned as stored (no filtering, given order):
    they were post-processed when the file was written.

    Args:
        pool_file: the ``.jsonl`` pool file, or a list of them (e.g. one per split: a model has one
            proposer for training and validation); an image may appear in only one of them.
        key: the ``Sample.meta`` field naming images; None = the one the files were written with
            (their headers' ``key``). A different key is an error (the lines are named by the header's).
        min_area, nms_iou, max_candidates, order: :class:`BaseProposer` (defaults: pass-through).
    """

    def __init__(
        self,
        pool_file: Union[str, Sequence[str]],
        key: Optional[str] = None,
        min_area: int = 0,
        nms_iou: Optional[float] = None,
        max_candidates: Optional[int] = None,
        order: str = "given",
    ) -> None:
        super().__init__(min_area=min_area, nms_iou=nms_iou, max_candidates=max_candidates, order=order)
        files = [pool_file] if isinstance(pool_file, (str, os.PathLike)) else list(pool_file)
        if not files:
            raise PoolFileError("PrecomputedProposer: pool_file is an empty list; give at least one pool file")
        self.pool_files = [Path(f).expanduser() for f in files]
        self.pool_file = self.pool_files[0] if len(self.pool_files) == 1 else self.pool_files
        self.headers = [read_pool_header(f) for f in self.pool_files]
        self.header = self.headers[0]
        self.key = None
        #: key -> (file, byte offset, line number)
        self._offsets: dict[str, tuple[Path, int, int]] = {}
        for path, header in zip(self.pool_files, self.headers):
            file_key = header["key"]
            if key is not None and key != file_key:
                raise PoolFileError(f"{path}: the pool file names images by {file_key!r} (its header's "
                                    f"\"key\"), not {key!r}; drop key= or rewrite the pools with --key {key}")
            if self.key is not None and file_key != self.key:
                raise PoolFileError(f"{path}: names images by {file_key!r} but {self.pool_files[0]} by "
                                    f"{self.key!r}; the pool files of one proposer must use one key")
            self.key = file_key
            self._index(path)

    def _index(self, path: Path) -> None:
        with open(path, "rb") as f:
            f.readline()
            line_no = 1
            while True:
                offset = f.tell()
                raw = f.readline()
                if not raw:
                    break
                line_no += 1
                if not raw.strip():
                    continue
                where = f"{path}, line {line_no}"
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise PoolFileError(f"{where}: not valid JSON ({err.msg}); expected one image's pool") from None
                if not isinstance(rec, dict) or self.key not in rec or "size" not in rec or "masks" not in rec:
                    got = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                    raise PoolFileError(f"{where}: expected {{{self.key!r}, 'size', 'masks', 'scores'}}, got {got}")
                k = _key_str(rec[self.key])
                if k in self._offsets:
                    other, _, other_line = self._offsets[k]
                    raise PoolFileError(f"{where}: {self.key} {rec[self.key]!r} also in {other}, line {other_line}")
                self._offsets[k] = (path, offset, line_no)

    def _files_str(self) -> str:
        return ", ".join(str(f) for f in self.pool_files)

    def __len__(self) -> int:
        return len(self._offsets)

    def keys(self) -> list[str]:
        """The key values of the file's images (as strings), in file order."""
        return list(self._offsets)

    def settings(self) -> dict[str, Any]:
        files = [str(f) for f in self.pool_files]
        return dict(pool_file=files[0] if len(files) == 1 else files, key=self.key,
                    source=self.header.get("proposer"))

    def _propose_raw(self, image: np.ndarray, meta: dict[str, Any]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if self.key not in meta:
            raise KeyError(f"PrecomputedProposer ({self._files_str()}): the sample's meta has no {self.key!r} to look "
                           f"the pool up by; meta keys: {sorted(meta)}")
        value = meta[self.key]
        k = _key_str(value)
        if k not in self._offsets:
            close = difflib.get_close_matches(k, list(self._offsets), n=1)
            hint = f" (closest: {close[0]!r})" if close else ""
            raise KeyError(f"pool file(s) {self._files_str()} have no pool for {self.key} {value!r}{hint}; they hold "
                           f"{len(self._offsets)} images: were they written for another dataset or split?")
        path, offset, line_no = self._offsets[k]
        with open(path, "rb") as f:
            f.seek(offset)
            rec = json.loads(f.readline())
        where = f"{path}, line {line_no}"
        size = [int(v) for v in rec["size"]]
        h, w = image.shape[:2]
        if size != [h, w]:
            raise ValueError(f"{where}: the pool of {self.key} {value!r} is {size[0]}x{size[1]} (height x width) "
                             f"but the image is {h}x{w}; was the pool computed on other (resized) images?")
        masks = decode_pool(rec["masks"], size, where)
        scores = rec.get("scores")
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float32)
            if scores.shape != (masks.shape[0],):
                raise PoolFileError(f"{where}: {scores.shape[0]} scores for {masks.shape[0]} masks")
        return masks, scores
