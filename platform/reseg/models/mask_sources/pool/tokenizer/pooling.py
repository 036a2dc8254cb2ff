"""Masked average pooling: a feature map averaged inside each mask (``anchorseg_ras.md`` §2.4 C).

Pure functions of tensors: :func:`masked_average_pool` (the whole operation),
:func:`pooling_weights` (the masks resized to a feature grid, with the rule for masks that vanish on
it) and :func:`pool_with_weights` (the weighted average), split so that encoders with the same
grid share one set of weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: Rules for a non-empty mask whose weights all vanish on the feature grid (§2.4 C "empty after
#: downsampling"): the cell holding the mask's centroid (§2.4 C option 1, default), a zero vector
#: (Osprey's behaviour), or exact area-coverage weights (box downsampling, §2.4 C alternative).
EMPTY_RULES = ("centroid", "zero", "area")
#: How a mask is resized to a feature grid: Osprey/FC-CLIP's bilinear (§2.4 C, default) or exact
#: area coverage (``adaptive_avg_pool2d``, §2.4 C alternative "area (box) downsampling").
RESIZE_MODES = ("bilinear", "area")


def masked_average_pool(
    features: torch.Tensor,
    masks: torch.Tensor,
    empty: str = "centroid",
    resize: str = "bilinear",
    binarize: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Average a feature map inside each mask (spec anchorseg_ras.md §2.4 C).

    ``v_m = sum_hw F[:, h, w] * w_m[h, w] / sum_hw w_m[h, w]`` where ``w_m`` is the mask resized to
    the grid. The weights are kept **soft** by default: a cell half covered by the mask counts half
    (§2.4 C allows soft weights or Osprey's binarisation ``> 0``; ``binarize=True`` gives Osprey's).

    Args:
        features: ``[C, h, w]`` or ``[1, C, h, w]`` (one map shared by all masks) or ``[M, C, h, w]``
            (one map per mask).
        masks: ``[M, H, W]`` bool or float in ``[0, 1]``, in a frame already aligned with the
            feature map's field of view (the whole ``H x W`` maps onto the whole ``h x w`` grid).
        empty: rule for a non-empty mask whose weights all vanish (sum <= ``eps``) after resizing
            (a small mask between the sampling points of a coarse grid):

            * ``'centroid'`` (default, §2.4 C option 1): the feature of the grid cell containing
              the mask's centroid (the mean pixel-centre coordinate; it may lie outside a
              non-convex mask);
            * ``'zero'``: a zero vector (Osprey: its denominator is ``1e-8``);
            * ``'area'``: the exact area-coverage weights of the mask (never all zero for a
              non-empty mask; a dilation-like fallback).
        resize: ``'bilinear'`` (``F.interpolate(..., mode='bilinear', align_corners=False)``, no
            antialiasing, as Osprey/FC-CLIP; for an integer factor 2 this equals area averaging,
            for larger factors it samples near cell centres) or ``'area'`` (exact coverage).
        binarize: replace the resized weights by ``weights > 0`` (Osprey) before pooling.
        eps: threshold under which a mask's total weight counts as vanished.

    Returns:
        ``[M, C]`` in ``features``' dtype. A mask with no pixels at all gives a **zero vector**
        under every rule (there is nothing to locate).
    """
    if empty not in EMPTY_RULES:
        raise ValueError(f"empty={empty!r}: expected one of {EMPTY_RULES}")
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize={resize!r}: expected one of {RESIZE_MODES}")
    if features.dim() == 3:
        feats = features[None]
    elif features.dim() == 4:
        feats = features
    else:
        raise ValueError(f"features must be [C, h, w] or [B, C, h, w], got shape {list(features.shape)}")
    if masks.dim() != 3:
        raise ValueError(f"masks must be [M, H, W], got shape {list(masks.shape)}")
    n_masks = masks.shape[0]
    batch, channels, h, w = feats.shape
    if batch not in (1, n_masks):
        raise ValueError(f"features batch {batch} must be 1 (shared map) or the number of masks {n_masks}")
    if n_masks == 0:
        return features.new_zeros(0, channels)
    weights = pooling_weights(masks.to(feats.device), (h, w), empty=empty, resize=resize, binarize=binarize, eps=eps)
    return pool_with_weights(features, weights)


def pooling_weights(masks: torch.Tensor, size: tuple[int, int], empty: str = "centroid", resize: str = "bilinear",
                    binarize: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """``[M, h, w]`` float32 weights of :func:`masked_average_pool` on an ``h x w`` grid (the resized
    masks with the vanished-mask rule applied; all zero for a mask with no pixels). Computing them once
    per grid size lets several encoders with the same grid share them."""
    h, w = size
    m = masks.to(dtype=torch.float32)
    weights = _resize_masks(m, (h, w), resize)
    if binarize:
        weights = (weights > 0).float()
    mass = m.flatten(1).sum(1)
    nonempty = mass > 0
    vanished = nonempty & (weights.flatten(1).sum(1) <= eps)
    if bool(vanished.any()):
        if empty == "centroid":
            cy, cx = _centroid_cells(m[vanished], (h, w))
            fallback = torch.zeros(int(vanished.sum()), h, w, device=m.device)
            fallback[torch.arange(fallback.shape[0], device=m.device), cy, cx] = 1.0
        elif empty == "area":
            fallback = _resize_masks(m[vanished], (h, w), "area")
            if binarize:
                fallback = (fallback > 0).float()
        else:  # 'zero'
            fallback = torch.zeros(int(vanished.sum()), h, w, device=m.device)
        weights = weights.clone()
        weights[vanished] = fallback
    return weights * nonempty[:, None, None]  # an input mask with no pixels -> zero vector


def pool_with_weights(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[M, C]``: ``sum_hw F * w / sum_hw w`` (0 where ``w`` is all zero) for ``features`` ``[C, h, w]``,
    ``[1, C, h, w]`` or ``[M, C, h, w]`` and :func:`pooling_weights` ``[M, h, w]``."""
    feats = (features[None] if features.dim() == 3 else features).float()
    total = weights.flatten(1).sum(1)
    denom = torch.where(total > 0, total, torch.ones_like(total))
    if feats.shape[0] == 1:
        summed = torch.einsum("chw,mhw->mc", feats[0], weights)
    else:
        summed = torch.einsum("mchw,mhw->mc", feats, weights)
    return (summed / denom[:, None]).to(features.dtype)


def _resize_masks(masks: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[M, H, W]`` float -> ``[M, h, w]`` weights on the grid."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    if mode == "bilinear":
        return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return F.adaptive_avg_pool2d(masks[:, None], size)[:, 0]


def _centroid_cells(masks: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cell ``(row, col)`` holding each mask's centroid (pixel centres at ``i + 0.5``)."""
    _, height, width = masks.shape
    mass = masks.flatten(1).sum(1).clamp_min(1e-12)
    ys = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    cy = (masks.sum(2) * ys).sum(1) / mass
    cx = (masks.sum(1) * xs).sum(1) / mass
    row = torch.floor(cy * size[0] / height).long().clamp_(0, size[0] - 1)
    col = torch.floor(cx * size[1] / width).long().clamp_(0, size[1] - 1)
    return row, col
