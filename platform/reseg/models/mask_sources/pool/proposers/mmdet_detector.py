"""The instance masks of an mmdet 3.x detector as a proposer (Mask R-CNN, Mask2Former, Co-DETR).

Needs the ``mmdet`` extra (``tools/install_mmdet.sh``); without it, building the proposer fails with
the install steps.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from reseg.paths import resolve_path
from reseg.registry import PROPOSERS

from .base import BaseProposer, default_device
from .postprocess import DEFAULT_MAX_CANDIDATES, DEFAULT_MIN_AREA, DEFAULT_NMS_IOU

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
        config: str | Mapping[str, Any],
        checkpoint: str | None = None,
        score_thr: float = 0.3,
        cfg_options: Mapping[str, Any] | None = None,
        device: str | None = None,
        scope: str | None = None,
        config_key: str = "proposer",
        min_area: int = DEFAULT_MIN_AREA,
        nms_iou: float | None = DEFAULT_NMS_IOU,
        max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
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
            if not resolve_path(config).is_file():
                raise FileNotFoundError(f"mmdet config not found: {str(resolve_path(config))!r} ({config_key}.config; "
                                        "expected an mmdet config file, e.g. a Mask R-CNN or Co-DETR config)")
            cfg = Config.fromfile(str(resolve_path(config)))  # runs the config's custom_imports
            self.config = str(config)
        else:
            cfg = Config(dict(config))
            if cfg.get("custom_imports"):
                from mmengine.utils import import_modules_from_strings

                import_modules_from_strings(**cfg["custom_imports"])
            self.config = "<dict>"
        if cfg_options:
            cfg.merge_from_dict(dict(cfg_options))
        if checkpoint is not None and not resolve_path(checkpoint).is_file():
            raise FileNotFoundError(
                f"checkpoint not found: {str(resolve_path(checkpoint))!r} ({config_key}.checkpoint). reseg never "
                f"downloads weights; point {config_key}.checkpoint at a local file")
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
            self._load_weights(str(resolve_path(checkpoint)), config_key)
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
