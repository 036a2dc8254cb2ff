"""Imperfect candidate-mask pools for the synthetic MaskGroups split (a stand-in for SAM proposals).

:func:`candidate_pool` draws, from a scene's visible object masks:

* each object's exact mask (dropped with probability ``p_drop_exact``, so some objects are only
  covered by approximate proposals, as with a real proposer);
* the two halves of an object cut along a random line through its centroid;
* merges of two touching objects;
* eroded, dilated, shifted and boundary-jittered versions of objects;
* a few background blobs (ellipses that mostly miss every object) and sometimes the whole
  background.

Proposals smaller than ``min_pixels`` and near-duplicates (IoU above ``dedup_iou`` with a kept
proposal) are dropped, and the pool is shuffled. Each proposal carries the name of how it was made.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from reseg.datasets.synthref.scene import Scene


@dataclass
class PoolConfig:
    """Probabilities (per object, or per touching pair for merges) and sizes of the proposals."""

    p_drop_exact: float = 0.15
    p_halves: float = 0.35
    p_merge: float = 0.5
    p_erode: float = 0.3
    p_dilate: float = 0.3
    p_shift: float = 0.3
    p_jitter: float = 0.25
    background_blobs: tuple[int, int] = (1, 3)
    p_full_background: float = 0.3
    max_shift: int = 6
    min_pixels: int = 20
    dedup_iou: float = 0.95
    max_pool: int = 40


_KERNEL = np.ones((3, 3), np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / u if u else 0.0


def split_halves(mask: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of ``mask`` on either side of the line through its centroid at ``angle`` (rad)."""
    ys, xs = np.nonzero(mask)
    cx, cy = xs.mean(), ys.mean()
    yy, xx = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    side = (xx - cx) * np.sin(angle) - (yy - cy) * np.cos(angle) >= 0
    return mask & side, mask & ~side


def shift_mask(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``mask`` translated by ``(dx, dy)`` pixels; what leaves the image is lost."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def jitter_mask(mask: np.ndarray, rng: np.random.Generator, amount: float = 2.0) -> np.ndarray:
    """``mask`` with a wobbly boundary: blurred, plus smooth noise, re-thresholded."""
    h, w = mask.shape
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=amount)
    noise = cv2.GaussianBlur(rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32), (0, 0), sigmaX=2.0)
    return soft + 0.6 * noise / max(float(np.abs(noise).max()), 1e-6) > 0.5


def _background_blob(scene: Scene, objects: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    h, w = scene.height, scene.width
    for _ in range(10):
        m = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(5, max(6, w // 6))), int(rng.integers(5, max(6, h // 6))))
        cv2.ellipse(m, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        blob = m.astype(bool)
        area = np.count_nonzero(blob)
        if area and np.count_nonzero(blob & objects) < 0.1 * area:
            return blob
    return None


def candidate_pool(scene: Scene, rng: np.random.Generator, cfg: PoolConfig | None = None
                   ) -> tuple[list[np.ndarray], list[str]]:
    """``(masks, how)``: a shuffled pool of ``[H, W] bool`` proposals and how each was made."""
    cfg = cfg or PoolConfig()
    vis = [o.visible_mask for o in scene.objects]
    proposals: list[tuple[np.ndarray, str]] = []
    for j, m in enumerate(vis):
        if rng.random() >= cfg.p_drop_exact:
            proposals.append((m, f"exact:{j}"))
        if rng.random() < cfg.p_halves:
            a, b = split_halves(m, float(rng.uniform(0, np.pi)))
            proposals += [(a, f"half:{j}"), (b, f"half:{j}")]
        if rng.random() < cfg.p_erode:
            proposals.append((cv2.erode(m.astype(np.uint8), _KERNEL, iterations=int(rng.integers(1, 3))).astype(bool),
                              f"eroded:{j}"))
        if rng.random() < cfg.p_dilate:
            proposals.append((cv2.dilate(m.astype(np.uint8), _KERNEL, iterations=int(rng.integers(1, 4))).astype(bool),
                              f"dilated:{j}"))
        if rng.random() < cfg.p_shift:
            dx, dy = 0, 0
            while dx == 0 and dy == 0:
                dx, dy = (int(v) for v in rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=2))
            proposals.append((shift_mask(m, dx, dy), f"shifted:{j}"))
        if rng.random() < cfg.p_jitter:
            proposals.append((jitter_mask(m, rng), f"jittered:{j}"))
    grown = [cv2.dilate(m.astype(np.uint8), _KERNEL, iterations=2).astype(bool) for m in vis]
    for i in range(len(vis)):
        for j in range(i + 1, len(vis)):
            if (grown[i] & vis[j]).any() and rng.random() < cfg.p_merge:
                proposals.append((vis[i] | vis[j], f"merged:{i}+{j}"))
    objects = np.zeros((scene.height, scene.width), dtype=bool)
    for m in vis:
        objects |= m
    for _ in range(int(rng.integers(cfg.background_blobs[0], cfg.background_blobs[1] + 1))):
        blob = _background_blob(scene, objects, rng)
        if blob is not None:
            proposals.append((blob, "background"))
    if rng.random() < cfg.p_full_background:
        proposals.append((~objects, "background:all"))

    kept: list[tuple[np.ndarray, str]] = []
    for m, how in proposals:
        if np.count_nonzero(m) < cfg.min_pixels:
            continue
        if any(_iou(m, k) > cfg.dedup_iou for k, _ in kept):
            continue
        kept.append((m, how))
    order = rng.permutation(len(kept))[: cfg.max_pool]
    return [kept[int(i)][0] for i in order], [kept[int(i)][1] for i in order]
