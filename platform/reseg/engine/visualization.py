"""Overlays of image, ground truth and prediction with the query text, and the hook that saves them.

A head may add per-query maps in ``[0, 1]`` to ``QueryPrediction.extras["heatmaps"]`` (``{name:
[m, H, W]}`` at the original size, one map per mask, e.g. AnchorSeg's prior); the hook draws each as a
heat-map panel after the prediction (the maximum over the ``m`` maps). A selection head (RAS) puts
its pool in ``extras["candidate_masks"]`` and fills ``QueryPrediction.selected``; the hook then adds a
panel with every candidate outlined and the selected group filled (:func:`pool_overlay`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence

import cv2
import numpy as np
from mmengine.hooks import Hook

from reseg.registry import HOOKS

GT_COLOR = (40, 200, 40)
PRED_COLOR = (230, 60, 60)
CANDIDATE_COLOR = (90, 160, 255)


#: colour of the 3 px halo under a mask's 1 px outline, so a mask stays visible on an object of its own colour
HALO_COLOR = (0, 0, 0)


def blend(image: np.ndarray, mask: np.ndarray | None, color: Sequence[int], alpha: float = 0.5) -> np.ndarray:
    """``image`` (``[H, W, 3] uint8``) with ``mask`` (``[H, W] bool``) tinted and outlined in ``color``
    over a dark halo (a red prediction on a red object would otherwise not show)."""
    out = image.copy()
    if mask is None or not mask.any():
        return out
    tint = np.array(color, dtype=np.float32)
    out[mask] = (out[mask].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, HALO_COLOR, 3)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), 1)
    return out


def heatmap_overlay(image: np.ndarray, smap: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """``image`` (``[H, W, 3] uint8`` RGB) blended with ``smap`` (``[H, W]`` in [0, 1]) in the JET colours."""
    heat = cv2.applyColorMap(np.clip(smap * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return (image.astype(np.float32) * (1 - alpha) + heat.astype(np.float32) * alpha).astype(np.uint8)


def pool_overlay(image: np.ndarray, pool: np.ndarray, selected: Sequence[int], scale: int = 1) -> np.ndarray:
    """Every candidate of ``pool`` (``[N, H, W] bool``) outlined in blue, the ``selected`` ones filled in the
    prediction colour with a white outline and their index written at their centroid.

    ``image`` may already be upscaled by the integer ``scale`` (the masks are upscaled to match).
    """
    out = image.copy()
    pool = np.asarray(pool, dtype=bool)
    h, w = out.shape[:2]
    up = (lambda m: cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)) \
        if scale != 1 else (lambda m: m)
    chosen = {int(i) for i in selected}
    for i in range(pool.shape[0]):
        if i in chosen:
            continue
        contours, _ = cv2.findContours(up(pool[i]).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, CANDIDATE_COLOR, 1)
    for i in sorted(chosen):
        m = up(pool[i])
        if not m.any():
            continue
        out = blend(out, m, PRED_COLOR, alpha=0.55)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
        ys, xs = np.nonzero(m)
        cv2.putText(out, str(i), (int(xs.mean()) - 4, int(ys.mean()) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return out


def prediction_heatmaps(extras: dict) -> dict[str, np.ndarray]:
    """``{name: [H, W] float32}`` from ``extras["heatmaps"]`` (the maximum over each entry's masks;
    entries without a mask are left out)."""
    out = {}
    for name, maps in (extras or {}).get("heatmaps", {}).items():
        a = maps.detach().float().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps, np.float32)
        if a.ndim == 3 and a.shape[0] == 0:
            continue
        out[name] = (a.max(0) if a.ndim == 3 else a).astype(np.float32)
    return out


#: Panel height up to which the caption has its base size (font scale 0.5, 18 px lines); taller panels
#: scale it in proportion.
CAPTION_PANEL_HEIGHT = 400


def _wrap(text: str, width_px: int, scale: float) -> list[str]:
    max_chars = max(8, int(width_px / (9 * scale * 2)))
    words, lines, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > max_chars and cur:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        lines.append(cur)
    return lines or [""]


def overlay_panel(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, text: str,
                  extra: str = "", min_height: int = 256,
                  heatmaps: dict[str, np.ndarray] | None = None, show_gt: bool = True,
                  pool: tuple[np.ndarray, Sequence[int]] | None = None) -> np.ndarray:
    """Three panels (image | ground truth | prediction), then one per heat-map (``{name: [H, W]}`` in
    [0, 1]), then, with ``pool=(candidates [N, H, W], selected)``, the candidate pool with the selected
    group highlighted (:func:`pool_overlay`), above the query text, as ``[H', W', 3] uint8``.
    ``show_gt=False`` drops the ground-truth panel (inference: there is none).

    Small images are upscaled (nearest; heat-maps bilinearly) to at least ``min_height`` so the text
    stays readable; above ``CAPTION_PANEL_HEIGHT`` the caption's font scales with the panel height.
    """
    h, w = image.shape[:2]
    s = max(1, int(np.ceil(min_height / h)))
    up = lambda a: cv2.resize(a, (w * s, h * s), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    img = up(image)
    gt_u = up(gt.astype(np.uint8)).astype(bool) if gt is not None else None
    pr_u = up(pred.astype(np.uint8)).astype(bool) if pred is not None else None
    panels = [img] + ([blend(img, gt_u, GT_COLOR)] if show_gt else []) + [blend(img, pr_u, PRED_COLOR)]
    names = list(heatmaps or {})
    for name in names:
        smap = cv2.resize(heatmaps[name].astype(np.float32), (w * s, h * s), interpolation=cv2.INTER_LINEAR)
        panels.append(heatmap_overlay(img, smap))
    if pool is not None:
        cands, chosen = pool
        panels.append(pool_overlay(img, cands, chosen, scale=s))
        names = names + [f"pool of {len(cands)} (selected {len(chosen)}: filled)"]
    sep = np.full((img.shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([x for p in panels for x in (sep, p)][1:], 1)
    # the caption grows with the panels, so it keeps its size relative to a large photo's panel
    scale = 0.5 * max(1.0, img.shape[0] / CAPTION_PANEL_HEIGHT)
    step, thickness = round(36 * scale), max(1, round(scale))
    title = " | ".join(["image"] + (["ground truth (green)"] if show_gt else []) + ["prediction (red)"] + names)
    lines = [title] + _wrap(f"Q: {text}", row.shape[1], scale)
    if extra:
        lines += _wrap(extra, row.shape[1], scale)
    band = np.full((step * len(lines) + step // 2, row.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (int(12 * scale), step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return np.concatenate([row, band], 0)


def result_panel(image: np.ndarray, result) -> np.ndarray:
    """The inference panel of one :class:`reseg.api.SegmentationResult`: :func:`overlay_panel` without a
    ground truth, with the head's heat-maps and, for selection heads, the candidate pool, and a line with
    the existence decision, the score and the generated answer. Shared by ``tools/infer.py`` and the web
    demo (``reseg.demo``)."""
    extra = [f"exists: {result.exists}"]
    if result.score is not None:
        extra.append(f"score: {result.score:.3f}")
    if result.text is not None:
        extra.append(f"A: {result.text}")
    pred = result.prediction
    extras = getattr(pred, "extras", None) or {}
    cands = extras.get("candidate_masks")
    pool = (cands, pred.selected or []) if cands is not None else None
    return overlay_panel(image, None, result.mask, result.query, " | ".join(extra),
                         heatmaps=prediction_heatmaps(extras), show_gt=False, pool=pool)


@HOOKS.register_module()
class SegVisualizationHook(Hook):
    """Save overlay PNGs of the first ``max_images`` queries seen during test (and val, if asked).

    Args:
        out_dir: where to write (default ``<work_dir>/vis``).
        max_images: how many overlays per run.
        during_val: also save during validation (``vis/val_iter<N>/``).
    """

    priority = "LOW"

    def __init__(self, out_dir: str | None = None, max_images: int = 8, during_val: bool = False) -> None:
        self.out_dir = out_dir
        self.max_images = max_images
        self.during_val = during_val
        self._count = 0

    def _dir(self, runner, sub: str) -> str:
        d = os.path.join(self.out_dir or os.path.join(runner.work_dir, "vis"), sub)
        os.makedirs(d, exist_ok=True)
        return d

    def before_test(self, runner) -> None:
        self._count = 0

    def before_val(self, runner) -> None:
        self._count = 0

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._save(runner, "test", data_batch, outputs)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.during_val:
            self._save(runner, f"val_iter{runner.iter}", data_batch, outputs)

    def _save(self, runner, sub: str, data_batch, outputs) -> None:
        if self._count >= self.max_images or not data_batch or outputs is None:
            return
        for sample, out in zip(data_batch["samples"], outputs):
            for q, p in zip(sample.queries, out["predictions"]):
                if self._count >= self.max_images:
                    return
                pred = p.binary_mask()
                extra = f"A: {p.text}" if p.text else ""
                cands = (p.extras or {}).get("candidate_masks")
                pool = (cands, p.selected) if cands is not None and p.selected is not None else None
                panel = overlay_panel(sample.image, q.target, pred, q.text, extra,
                                      heatmaps=prediction_heatmaps(p.extras), pool=pool)
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self._count:03d}_{sample.sample_id}")
                cv2.imwrite(os.path.join(self._dir(runner, sub), name + ".png"), panel[..., ::-1])
                self._count += 1
