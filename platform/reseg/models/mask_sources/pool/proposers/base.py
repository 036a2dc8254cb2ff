"""The proposer contract: one image in, a post-processed candidate pool (:class:`Proposals`) out.

A proposer turns one image into ``[N, H, W] bool`` masks at the image's original size and ``[N]``
scores. :class:`BaseProposer` validates both ends and runs the shared
:func:`~reseg.models.mask_sources.pool.proposers.postprocess.postprocess_pool`; a subclass implements
only :meth:`BaseProposer._propose_raw`.

Proposers are plain classes, not ``nn.Module``: a proposer is a frozen pre-processing step with its
own weights (a SAM ViT-H or a Co-DETR), which must not end up in the segmentor's checkpoints or
optimiser. It picks its own device (:func:`default_device`: CUDA if available).
"""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reseg.registry import PROPOSERS

from .postprocess import DEFAULT_MAX_CANDIDATES, DEFAULT_MIN_AREA, DEFAULT_NMS_IOU, postprocess_pool


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
        nms_iou: float | None = DEFAULT_NMS_IOU,
        max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
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

    def propose(self, image: np.ndarray, meta: Mapping[str, Any] | None = None) -> Proposals:
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

    def _check_raw(self, raw: Any, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
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


def default_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when available, else ``"cpu"``."""
    if device is not None:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
