"""Mask losses shared by heads: pure functions on tensors (``specs/seg_token_family.md`` §1.3).

Per mask k with logits z over P pixels (the full original image), target t and p = sigmoid(z):

* :func:`sigmoid_bce_loss`: BCE_k = (1/P) sum_u BCEWithLogits(z_u, t_u);
* :func:`dice_loss`: Dice_k = 1 - (2 sum(p t)/s + eps) / ((sum p + sum t)/s + eps), s = 1000,
  eps = 1e-6, i.e. an effective smoothing of eps * s = 1e-3 in pixel units.

:func:`mask_losses` reduces them over a batch as LISA does: a **plain average over all masks in the
batch**, whatever image each mask belongs to and whatever its size.

The sums run in float32 whatever the input dtype: a bf16 sum over a million pixels loses most of its
digits.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["none", "sum"]

#: LISA's Dice scale s and epsilon (``seg_token_family.md`` §1.3).
DICE_SCALE = 1000.0
DICE_EPS = 1e-6
#: LISA's loss weights: L = 1.0 CE + 2.0 BCE + 0.5 Dice (``seg_token_family.md`` §1.3).
LISA_BCE_WEIGHT = 2.0
LISA_DICE_WEIGHT = 0.5
#: Added to the mask count when averaging over the batch (``seg_token_family.md`` §1.3).
MASK_COUNT_EPS = 1e-8


def _flatten_pair(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, H, W]`` or ``[n, P]`` logits and targets as float32 ``[n, P]``."""
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}."
        )
    if logits.dim() not in (2, 3):
        raise ValueError(f"expected [n, H, W] or [n, P] masks, got shape {tuple(logits.shape)}.")
    return logits.float().flatten(1), targets.to(torch.float32).flatten(1)


def _reduce(per_mask: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return per_mask
    if reduction == "sum":
        return per_mask.sum()
    raise ValueError(f"reduction must be 'none' or 'sum', got {reduction!r}.")


def sigmoid_bce_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: Reduction = "none"
) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the pixels of each mask (§1.3).

    Args:
        logits: ``[n, H, W]`` or ``[n, P]`` mask logits.
        targets: same shape, values in {0, 1} (bool or float).
        reduction: ``"none"`` gives the ``[n]`` per-mask losses, ``"sum"`` their sum (a scalar).

    Returns:
        ``[n]`` float32 per-mask losses, or their scalar sum.
    """
    z, t = _flatten_pair(logits, targets)
    per_mask = F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(dim=1)
    return _reduce(per_mask, reduction)


def dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    scale: float = DICE_SCALE,
    eps: float = DICE_EPS,
    reduction: Reduction = "none",
) -> torch.Tensor:
    """LISA's soft Dice loss per mask (§1.3).

    ``1 - (2 sum(p t)/scale + eps) / ((sum p + sum t)/scale + eps)`` with ``p = sigmoid(logits)``,
    which equals ``1 - (2 sum(p t) + eps*scale) / (sum p + sum t + eps*scale)``: ``scale`` only sets
    the effective smoothing constant, 1e-3 pixels with the defaults. An empty target predicted empty
    therefore costs ~0, an empty target with any predicted mass costs ~1.

    Args:
        logits: ``[n, H, W]`` or ``[n, P]`` mask logits.
        targets: same shape, values in {0, 1} (bool or float).
        scale: LISA's s = 1000.
        eps: LISA's 1e-6.
        reduction: ``"none"`` gives the ``[n]`` per-mask losses, ``"sum"`` their sum (a scalar).

    Returns:
        ``[n]`` float32 per-mask losses, or their scalar sum.
    """
    z, t = _flatten_pair(logits, targets)
    p = z.sigmoid()
    numerator = 2.0 * (p * t).sum(dim=1) / scale
    denominator = (p.sum(dim=1) + t.sum(dim=1)) / scale
    per_mask = 1.0 - (numerator + eps) / (denominator + eps)
    return _reduce(per_mask, reduction)


def mask_losses(
    pred_logits: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    bce_weight: float = LISA_BCE_WEIGHT,
    dice_weight: float = LISA_DICE_WEIGHT,
    dice_scale: float = DICE_SCALE,
    dice_eps: float = DICE_EPS,
) -> dict[str, torch.Tensor]:
    """LISA's weighted mask losses over a batch of images of different sizes (§1.3).

    Each term is ``weight * (sum over all masks of all images of loss_k) / (N + 1e-8)`` with
    ``N = sum_i n_i`` the number of masks in the batch: a plain average over masks, so an image
    with three targets weighs three times an image with one, and mask size plays no role (BCE is
    already a per-pixel mean). LISA computes the same number as per-image means re-multiplied by
    ``n_i``.

    With no mask in the batch (VQA or text-only samples) both terms are 0. They stay connected to
    the graph of the (empty, ``[0, H, W]``) logit tensors when there are any, so every parameter
    still receives a (zero) gradient under DDP; with no image at all they are constant zeros.

    Args:
        pred_logits: per image, ``[n_i, H_i, W_i]`` mask logits at the original size.
        targets: per image, ``[n_i, H_i, W_i]`` target masks (bool or 0/1 float), same shapes.
        bce_weight: weight of the BCE term (LISA 2.0).
        dice_weight: weight of the Dice term (LISA 0.5).
        dice_scale, dice_eps: see :func:`dice_loss`.

    Returns:
        ``{"loss_mask_bce": scalar, "loss_mask_dice": scalar}``, already weighted.
    """
    if len(pred_logits) != len(targets):
        raise ValueError(
            f"got mask logits for {len(pred_logits)} images but targets for {len(targets)}."
        )
    bce_sum: torch.Tensor | None = None
    dice_sum: torch.Tensor | None = None
    num_masks = 0
    for i, (logits, target) in enumerate(zip(pred_logits, targets)):
        if logits.shape != target.shape:
            raise ValueError(
                f"image {i}: mask logits {tuple(logits.shape)} and targets {tuple(target.shape)} "
                "differ; the head must predict one mask per target, at the target's size."
            )
        # An image without masks adds the sum of an empty tensor: 0, but still in the graph.
        bce_i = sigmoid_bce_loss(logits, target, reduction="sum")
        dice_i = dice_loss(logits, target, dice_scale, dice_eps, reduction="sum")
        bce_sum = bce_i if bce_sum is None else bce_sum + bce_i
        dice_sum = dice_i if dice_sum is None else dice_sum + dice_i
        num_masks += int(logits.shape[0])
    if bce_sum is None or dice_sum is None:  # no image at all: nothing to connect to
        zero = torch.zeros(())
        return {"loss_mask_bce": zero, "loss_mask_dice": zero.clone()}
    denom = num_masks + MASK_COUNT_EPS
    return {
        "loss_mask_bce": bce_weight * bce_sum / denom,
        "loss_mask_dice": dice_weight * dice_sum / denom,
    }
