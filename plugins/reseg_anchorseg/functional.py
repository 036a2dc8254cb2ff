"""AnchorSeg's query bank, anchor spatial prior and token-mask cycle consistency, as pure functions.

Spec: ``specs/anchorseg_ras.md`` §1 (taken from the official code; where code and paper differ,
§1.11, the code is the default and the paper an option). For one image of size ``(H, W)`` and ``n``
``[SEG]`` tokens, each preceded by ``K`` latent tokens::

    query_bank_positions   rows [N], anchor [N], latents [N, K]     which states form the bank  §1.3
    similarity_map (READ)  s  [n, Np]   raw <h_anc, i_j>                                         §1.5 step 1
    minmax_normalize (READ) s^ [n, Np]  in [0, 1], kept for the M2T loss                         §1.5 step 2
    prior_full_resolution  [n, H, W]    token grid -> CLIP frame -> crop -> (H, W): T2M input    §1.5 step 3
    to_sam_mask_frame      P [n, 1, L, L]  longest side L, zero-padded: SAM's dense prompt       §1.5 steps 3-4
    gaussian_soft_target   G_{k,sigma}(M)  soft targets of both TMCC terms                       §1.7
    mask_to_token_grid     M -> CLIP frame -> token grid (the M2T target before G)               §1.7
    t2m_loss / m2t_loss    per-mask BCE and Dice of the two TMCC terms                           §1.7

The similarity, the min-max, the full-resolution map and the token-grid resampling are the core's
image-token geometry (:mod:`reseg.models.image_tokens`, shared with READ): the same raw dot product of
last-layer states with each row's own image tokens. Three CLIP preprocessings are
handled (``aspect``): ``'pad'`` (LLaVA-1.5's pad-to-square, image centred: what
:class:`reseg.models.lmm.LlavaLMM` does), ``'crop'`` (resize the short side, centre crop) and
``'pad_corner'`` (longest side resized, zero-padded bottom/right: AnchorSeg's
``--pad_train_clip_images``, §1.5 step 3, whose crop is done in the CLIP frame as the code does).
Maps are indexed ``[y, x]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# the image-token geometry every head shares (and READ's similarity) lives in the core
from reseg.models.image_tokens import (  # noqa: F401
    ASPECTS,
    full_resolution_map,
    mask_to_token_grid,
    minmax_normalize,
    preprocess_shape,
    similarity_map,
)

#: K, the number of latent tokens before each ``[SEG]`` (§1.2: ``--latent_token_num`` 7).
ANCHORSEG_NUM_LATENTS = 7
#: Names of the latent tokens, ``[LATENT0]`` ... ``[LATENT{K-1}]`` (§1.1, §1.2).
LATENT_TOKEN = "[LATENT{}]"
#: Gaussian soft-label operator G: kernel size and sigma (§1.7, ``gaussian_heatmap_from_mask``).
GAUSSIAN_KSIZE = 31
GAUSSIAN_SIGMA = 7.0
#: Smallest kernel G shrinks to when the input is smaller than the kernel (§1.7).
GAUSSIAN_MIN_KSIZE = 3
#: Clamp of the per-mask maximum G divides by (§1.7).
GAUSSIAN_MAX_EPS = 1e-6
#: Clamp of the soft positive count in T2M's automatic positive weight (§1.7).
POS_WEIGHT_EPS = 1e-6
#: T2M's weighted Dice: epsilon 1e-6 and no 1/1000 scaling (§1.7).
T2M_DICE_EPS = 1e-6
T2M_DICE_SCALE = 1.0
#: M2T uses LISA's Dice: inputs scaled by 1/1000, epsilon 1e-6 (§1.7; seg_token_family.md §1.3).
M2T_DICE_SCALE = 1000.0
M2T_DICE_EPS = 1e-6
#: How TMCC reads its [0, 1] predictions: ``'logits'`` (the code: sigmoid applied to values in
#: [0, 1], §1.7 and §1.11 item 2) or ``'probabilities'`` (the clean variant: the map is the probability).
TMCC_INPUTS = ("logits", "probabilities")
#: Clamp of probabilities before the log in the ``'probabilities'`` variant.
PROB_EPS = 1e-6
#: The two query conventions (§1.3): the official shift-by-one, or the states at the tokens.
CONVENTIONS = ("previous", "at")

Size = int | Sequence[int]


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


# ------------------------------------------------------------------------------ query bank (§1.3)
def query_bank_positions(
    input_ids: torch.Tensor,
    seg_id: int,
    num_latents: int,
    convention: str = "previous",
    latent_ids: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the anchor and latent queries of every ``[SEG]`` are read, in reading order (§1.3).

    ``convention='previous'`` (the official code, LISA's shift-by-one): the anchor is the state at
    the position **before** ``[SEG]`` (the one whose logits predict ``[SEG]``, i.e. ``[LATENT{K-1}]``)
    and the ``K`` latents are the ``K`` positions before the anchor: the token before ``[LATENT0]``
    and ``[LATENT0]`` ... ``[LATENT{K-2}]``. ``'at'`` (the paper's wording): the anchor at ``[SEG]``,
    the latents at ``[LATENT0]`` ... ``[LATENT{K-1}]``. Either way the latents are the ``K`` positions
    just before the anchor. Positions index the image-expanded sequence.

    Args:
        input_ids: ``[C, L]``; seg_id: the ``[SEG]`` id; num_latents: ``K >= 1``.
        latent_ids: the ``K`` latent ids; when given, the ``K`` tokens before every ``[SEG]`` must be
            exactly these (the bank is gathered by fixed offsets, §1.2 last bullet).

    Returns:
        ``rows [N]`` (conversation), ``anchor [N]`` and ``latents [N, K]`` (positions), long.
    """
    _check_choice(convention, CONVENTIONS, "convention")
    if num_latents < 1:
        raise ValueError(f"num_latents must be >= 1, got {num_latents}")
    rows, cols = (input_ids == seg_id).nonzero(as_tuple=True)
    anchor = cols - 1 if convention == "previous" else cols
    latents = anchor[:, None] - num_latents + torch.arange(num_latents, device=input_ids.device)[None]
    if bool((latents < 0).any()):
        raise ValueError(f"a [SEG] at a position < {num_latents + (convention == 'previous')} has no room for "
                         f"its {num_latents} latent queries")
    if latent_ids is not None:
        if len(latent_ids) != num_latents:
            raise ValueError(f"expected {num_latents} latent ids, got {list(latent_ids)}")
        check_latent_tokens(input_ids, rows, cols, latent_ids)
    return rows, anchor, latents


def check_latent_tokens(input_ids: torch.Tensor, rows: torch.Tensor, seg_cols: torch.Tensor,
                        latent_ids: Sequence[int]) -> None:
    """Raise unless the ``K`` tokens before every ``[SEG]`` (row ``rows``, position ``seg_cols``) are
    exactly ``latent_ids``: the bank is gathered at fixed offsets (§1.2 last bullet)."""
    k = len(latent_ids)
    if len(rows) == 0:
        return
    if bool((seg_cols < k).any()):
        raise ValueError(f"a [SEG] at a position < {k} has no room for its {k} latent tokens")
    before = input_ids[rows[:, None], seg_cols[:, None] - k + torch.arange(k, device=seg_cols.device)]
    want = torch.as_tensor(list(latent_ids), device=input_ids.device)
    bad = (before != want[None]).any(1).nonzero(as_tuple=True)[0]
    if bad.numel():
        j = int(bad[0])
        raise ValueError(
            f"the {k} tokens before the [SEG] at row {int(rows[j])}, position {int(seg_cols[j])} are "
            f"{before[j].tolist()}, expected the latent tokens {want.tolist()} (the query bank is read at "
            "fixed offsets: nothing may separate the latents from each other or from [SEG])")


# ------------------------------------------------------------------------------ the prior (§1.5)
def prior_full_resolution(
    s_hat: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], aspect: str, input_size: int
) -> torch.Tensor:
    """The normalised similarity ``s^`` as a map over the original image: the T2M prediction (§1.5 step 3).

    ``'pad_corner'`` is the code's order: reshape to the token grid, bilinear to the ``S x S`` CLIP
    input (``align_corners=False``), crop the valid region ``[0:h', 0:w']`` with
    ``(h', w') = preprocess_shape(H, W, S)`` (:func:`preprocess_shape`), bilinear to ``(H, W)``.
    ``'pad'`` (image centred) and ``'crop'`` use :func:`~reseg.models.image_tokens.full_resolution_map`,
    which inverts exactly what the backbone did (the centred image has no integer crop box at ``S``).

    Args:
        s_hat: ``[n, Np]`` min-max normalised similarities (§1.5 step 2); grid: ``(gh, gw)``;
        size: ``(H, W)``; aspect: one of :data:`ASPECTS`; input_size: ``S`` (336 for CLIP-336).

    Returns:
        ``[n, H, W]`` float32 in ``[0, 1]``, differentiable in ``s_hat``.
    """
    _check_choice(aspect, ASPECTS, "aspect")
    # 'pad' and 'crop' min-max the (already normalised) values again, as READ's map does
    return full_resolution_map(s_hat, grid, size, aspect, input_size, normalize=aspect != "pad_corner")


def _side(side: Size) -> int:
    if isinstance(side, int):
        return side
    sides = [int(s) for s in side]
    if len(set(sides)) != 1:
        raise ValueError(f"SAM's mask-prompt frame is square, got {sides}")
    return sides[0]


def to_sam_mask_frame(maps: torch.Tensor, side: Size) -> torch.Tensor:
    """P: full-resolution maps in SAM's low-resolution mask-prompt frame (§1.5 steps 3-4).

    The longest side is resized to ``L`` (bilinear, ``antialias=True``) and the map zero-padded
    bottom/right to ``L x L``, as SAM's 1024 input is (so P lines up with the image embedding).

    Args:
        maps: ``[n, H, W]``; side: ``L`` (SAM-1024: 256), an int or SAM's ``mask_input_size``.

    Returns:
        ``[n, 1, L, L]`` float32, the ``dense`` argument of :meth:`SAMMaskSource.decode`.
    """
    L = _side(side)
    h, w = maps.shape[-2:]
    vh, vw = preprocess_shape(h, w, L)
    m = F.interpolate(maps.float()[:, None], (vh, vw), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(m, (0, L - vw, 0, L - vh))


# ------------------------------------------------------------------------------ Gaussian soft target (§1.7)
def gaussian_kernel_size(h: int, w: int, ksize: int = GAUSSIAN_KSIZE) -> tuple[int, int]:
    """``(k, pad)`` of G on an ``h x w`` input (§1.7).

    An even ``ksize`` is made odd (+1); if ``min(h, w) < k`` the kernel shrinks to ``min(h, w)``, and
    an even size is then reduced by one (at least :data:`GAUSSIAN_MIN_KSIZE`); the reflect padding is
    ``min(k // 2, min(h, w) // 2)``. The output keeps the input's size in every case. E.g. ksize 31 on
    the 24x24 token grid gives ``(23, 11)``.
    """
    k = int(ksize) + (int(ksize) % 2 == 0)
    short = min(int(h), int(w))
    k = min(k, short)
    if k % 2 == 0:
        k = max(GAUSSIAN_MIN_KSIZE, k - 1)
    return k, min(k // 2, short // 2)


def gaussian_kernel_1d(k: int, sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """``[k]`` float32 ``exp(-x^2 / (2 sigma^2))`` on offsets from the centre, summing to 1."""
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-(r ** 2) / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def gaussian_kernel(k: int, sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """``[k, k]`` float32 ``exp(-(x^2 + y^2) / (2 sigma^2))`` on offsets from the centre, summing to 1 (§1.7):
    the outer product of :func:`gaussian_kernel_1d` with itself."""
    g = gaussian_kernel_1d(k, sigma)
    return g[:, None] * g[None, :]


def gaussian_soft_target(masks: torch.Tensor, ksize: int = GAUSSIAN_KSIZE,
                         sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """G_{k,sigma}(M): blur each mask by a normalised Gaussian and divide by its maximum (§1.7).

    Reflect padding by :func:`gaussian_kernel_size`'s ``pad``, the convolution with
    :func:`gaussian_kernel` (computed as two 1-D passes: the kernel is separable, so this is the
    code's ``conv2d`` up to rounding, ~k times cheaper), then per mask ``G / max(max G, 1e-6)`` (an
    empty mask stays 0).

    Args:
        masks: ``[n, H, W]`` (bool or float, fractional values allowed).

    Returns:
        ``[n, H, W]`` float32 in ``[0, 1]``.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be [n, H, W], got {tuple(masks.shape)}")
    n, h, w = masks.shape
    x = masks.float()[:, None]
    if n == 0:
        return x[:, 0]
    k, pad = gaussian_kernel_size(h, w, ksize)
    if pad:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    g = gaussian_kernel_1d(k, sigma).to(x.device)
    heat = F.conv2d(F.conv2d(x, g.reshape(1, 1, k, 1)), g.reshape(1, 1, 1, k))[:, 0]
    peak = heat.flatten(1).amax(1).clamp(min=GAUSSIAN_MAX_EPS)
    return heat / peak[:, None, None]


# ------------------------------------------------------------------------------ TMCC losses (§1.7)
def soft_bce(pred: torch.Tensor, target: torch.Tensor, pos_weight: float | None = None,
             inputs: str = "logits") -> torch.Tensor:
    """Per-mask pixel mean of the (positive-weighted) binary cross-entropy against soft targets.

    ``inputs='logits'``: ``BCEWithLogits(pred, target, pos_weight)``; ``'probabilities'``:
    ``-(w+ t log p + (1 - t) log(1 - p))`` with ``p = pred`` clamped to ``[1e-6, 1 - 1e-6]``.

    Args:
        pred, target: ``[n, H, W]``; pos_weight: ``w+`` (None = 1).

    Returns:
        ``[n]`` float32.
    """
    _check_choice(inputs, TMCC_INPUTS, "inputs")
    z, t = pred.float().flatten(1), target.float().flatten(1)
    wpos = 1.0 if pos_weight is None else float(pos_weight)
    if inputs == "logits":
        pw = None if pos_weight is None else torch.tensor(wpos, device=z.device)
        loss = F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="none")
    else:
        p = z.clamp(PROB_EPS, 1.0 - PROB_EPS)
        loss = -(wpos * t * p.log() + (1.0 - t) * (1.0 - p).log())
    return loss.mean(1)


def soft_dice(pred: torch.Tensor, target: torch.Tensor, scale: float = 1.0, eps: float = 1e-6,
              inputs: str = "logits") -> torch.Tensor:
    """Per-mask ``1 - (2 sum(p t)/s + eps) / ((sum p + sum t)/s + eps)`` with ``p = sigmoid(pred)``
    (``inputs='logits'``) or ``p = pred`` (``'probabilities'``); ``s = 1000`` is LISA's Dice.

    Returns:
        ``[n]`` float32.
    """
    _check_choice(inputs, TMCC_INPUTS, "inputs")
    z, t = pred.float().flatten(1), target.float().flatten(1)
    p = z.sigmoid() if inputs == "logits" else z
    return 1.0 - (2.0 * (p * t).sum(1) / scale + eps) / ((p.sum(1) + t.sum(1)) / scale + eps)


def auto_pos_weight(target: torch.Tensor) -> float:
    """T2M's class-balancing ``w+ = (numel - sum y) / max(sum y, 1e-6)`` over all masks of an image
    together (§1.7, §1.11 item 3); a number, no gradient."""
    pos = float(target.detach().float().sum())
    return (target.numel() - pos) / max(pos, POS_WEIGHT_EPS)


def t2m_loss(pred: torch.Tensor, masks: torch.Tensor, ksize: int = GAUSSIAN_KSIZE, sigma: float = GAUSSIAN_SIGMA,
             inputs: str = "logits") -> tuple[torch.Tensor, torch.Tensor]:
    """Token-to-Mask: the full-resolution prior against the softened target mask (§1.7).

    ``y = G(M)`` at full resolution; BCE with the automatic positive weight of the image
    (:func:`auto_pos_weight`) and the "weighted" Dice of ``p`` against ``w+ y``
    (``2 sum p w+ y / (sum p + sum w+ y)``, eps 1e-6, no 1/1000 scaling). With the default
    ``inputs='logits'`` the ``[0, 1]`` prior is fed to the sigmoid as the code does.

    Args:
        pred: ``[n, H, W]`` :func:`prior_full_resolution` maps of one image; masks: ``[n, H, W]`` its
            non-empty targets.

    Returns:
        ``(bce [n], dice [n])`` float32 per mask.
    """
    if pred.shape != masks.shape:
        raise ValueError(f"T2M prediction {tuple(pred.shape)} and targets {tuple(masks.shape)} differ")
    y = gaussian_soft_target(masks, ksize, sigma)
    wpos = auto_pos_weight(y)
    bce = soft_bce(pred, y, wpos, inputs)
    dice = soft_dice(pred, wpos * y, T2M_DICE_SCALE, T2M_DICE_EPS, inputs)
    return bce, dice


def m2t_loss(s_hat: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int], input_size: int, aspect: str,
             ksize: int = GAUSSIAN_KSIZE, sigma: float = GAUSSIAN_SIGMA,
             inputs: str = "logits") -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-to-Token: the token-level ``s^`` against the target mask brought to the token grid (§1.7).

    Target ``G(mask_to_token_grid(M))`` (on the 24x24 grid ksize 31 adapts to 23, reflect-pad 11);
    loss LISA's pixel-mean BCE (no positive weight) plus LISA's Dice (1/1000 scaling, eps 1e-6). With
    the default ``inputs='logits'`` ``s^`` (in ``[0, 1]``) is fed to the sigmoid as the code does.

    Args:
        s_hat: ``[n, Np]`` or ``[n, gh, gw]`` min-max normalised similarities; masks: ``[n, H, W]``
            non-empty targets; grid, input_size, aspect: see :func:`mask_to_token_grid`.

    Returns:
        ``(bce [n], dice [n])`` float32 per mask.
    """
    gh, gw = grid
    target = gaussian_soft_target(mask_to_token_grid(masks, grid, input_size, aspect), ksize, sigma)
    pred = s_hat.reshape(-1, gh, gw)
    return soft_bce(pred, target, None, inputs), soft_dice(pred, target, M2T_DICE_SCALE, M2T_DICE_EPS, inputs)

