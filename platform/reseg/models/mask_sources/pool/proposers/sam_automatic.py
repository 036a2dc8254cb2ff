"""SAM's automatic mask generator as a proposer (``anchorseg_ras.md`` §2.4 A)."""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from reseg.registry import PROPOSERS

from .base import BaseProposer, default_device
from .postprocess import DEFAULT_MAX_CANDIDATES, DEFAULT_MIN_AREA, DEFAULT_NMS_IOU

#: ``segment_anything.SamAutomaticMaskGenerator`` settings: SAM's own defaults (``anchorseg_ras.md`` §2.4 A).
SAM_AMG_DEFAULTS: dict[str, Any] = dict(points_per_side=32, pred_iou_thresh=0.88, stability_score_thresh=0.95,
                                        box_nms_thresh=0.7, crop_n_layers=0, min_mask_region_area=0,
                                        points_per_batch=64)


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
        checkpoint: str | None = None,
        image_size: int = 1024,
        prompt_dim: int = 256,
        encoder: dict | None = None,
        decoder_depth: int = 2,
        decoder_mlp_dim: int = 2048,
        decoder_heads: int = 8,
        iou_head_hidden_dim: int = 256,
        amg: Mapping[str, Any] | None = None,
        multimask_output: bool = True,
        device: str | None = None,
        config_key: str = "proposer",
        min_area: int = DEFAULT_MIN_AREA,
        nms_iou: float | None = DEFAULT_NMS_IOU,
        max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
        order: str = "score",
    ) -> None:
        super().__init__(min_area=min_area, nms_iou=nms_iou, max_candidates=max_candidates, order=order)
        from segment_anything import SamAutomaticMaskGenerator

        from reseg.models.mask_sources.sam import build_sam, load_sam_checkpoint

        amg_cfg = dict(SAM_AMG_DEFAULTS)
        if amg:
            accepted = set(inspect.signature(SamAutomaticMaskGenerator.__init__).parameters) - {"self", "model",
                                                                                              "output_mode"}
            bad = sorted(set(amg) - accepted)
            if bad:
                raise TypeError(f"SAMAutomaticProposer: unknown amg setting(s) {bad}; "
                                f"SamAutomaticMaskGenerator accepts {sorted(accepted)}")
            amg_cfg.update(amg)
        if checkpoint is not None:  # raises naming path and key, before building
            from reseg.paths import require_weights_file

            require_weights_file(checkpoint, f"{config_key}.checkpoint")
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
