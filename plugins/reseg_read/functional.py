"""READ's similarity-as-points (SasP) and discrete-to-continuous (DtoC) sampling, as pure functions.

Spec: ``specs/seg_token_family.md`` §2.2-§2.3 and §2.7 (the released code, the default everywhere)
and ``specs/read_paper_notes.md`` (the paper's variants: statistical thresholds, the ``exp(-d)``
kernel, and the S-IoU / P-prompt diagnostics). For one image of size ``(H, W)`` and ``n`` ``[SEG]``
states the pipeline is::

    similarity_map        [n, Np]   raw dot products <h_img, h_seg>               §2.3 steps 1-2, §2.7  (core)
    full_resolution_map   [n, H, W] S~ in [0, 1], the map DtoC samples           §2.3 step 3           (core)
    coarse_grid           [n, K]    cell values (-1 off the image), [K, 2] cells  §2.3 steps 4 and 7
    select_points         [P]       cells and labels 1 / 0 / -1 of one query      §2.3 steps 5-6
    dtoc                  [P, 2]    continuous points, differentiable in S~       §2.3 step 8
    to_sam_frame          [.., 2]   the points in SAM's resized input frame       §2.2 step 6a

:func:`similarity_as_points` chains them. Two CLIP preprocessings are handled (``aspect``): ``'crop'``
(resize the short side, centre crop: what READ's code assumes, §2.7) and ``'pad'`` (LLaVA-1.5's
pad-to-square with the image centred, as :class:`reseg.models.lmm.LlavaLMM` does). Points are
``(x, y)`` in original-image pixels; maps are indexed ``[y, x]``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# the image-token geometry every head shares lives in the core; READ's chain is built on it (and these
# names stay importable from here)
from reseg.models.image_tokens import crop_margins, full_resolution_map, minmax_normalize, similarity_map  # noqa: F401

ArrayLike = np.ndarray | torch.Tensor

#: Point labels (§2.3 step 6): positive, negative and neutral (SAM's "not a point").
POSITIVE, NEGATIVE, NEUTRAL = 1, 0, -1
#: READ-7B's released grid down-sampling: 24x24 image tokens -> 12x12 cells (§2.3, constants table).
READ7B_DOWN_SAMPLE = 2
#: READ-7B's released number of points (§2.3, constants table).
READ7B_NUM_POINTS = 30
#: READ's fixed thresholds on the min-max normalised grid (§2.3 step 5 and constants table).
READ_T_POS = 0.8
READ_T_NEG = 0.2
#: Value of the grid cells that lie off the visible image; no candidate set contains them (§2.3 step 4c).
OFF_IMAGE = -1.0
#: k of the thresholds mu +- k*sigma printed in the paper's Algorithm 1 (read_paper_notes.md, step 2).
PAPER_STAT_K = 0.5
#: k of the code's commented-out statistical variant (§2.3, below the constants table; §2.7).
CODE_STAT_K = 1.28
#: CLIP preprocessings the similarity grid can assume (§2.7 and §1.5: centre crop; LLaVA-1.5: pad).
ASPECTS = ("crop", "pad")
#: Threshold rules: the code's fixed t_pos / t_neg, or the paper's mu +- k*sigma (§2.3, §2.7).
THRESHOLD_MODES = ("fixed", "statistical")
#: DtoC kernels: ``exp(-d^2)`` of the code (§2.3 step 8) and ``exp(-d)`` of the paper's Eqs. 7-10
#: (read_paper_notes.md, Algorithm 1 step 5).
DTOC_KERNELS = ("gaussian", "laplace")
#: Half-width in pixels of the DtoC window per kernel. S~ lies in [0, 1], so a pixel at distance d
#: weighs at most e^(1 - d^2) (gaussian) or e^(1 - d) (laplace) of the centre pixel; beyond these
#: windows the dropped weight moves a point by less than 1e-6 px (§2.3 step 8: "negligible beyond
#: about 5 px" for the code's kernel).
DTOC_WINDOW = {"gaussian": 5, "laplace": 32}
#: S-IoU thresholds: 0.00 to 1.00 in steps of 0.01 (read_paper_notes.md, "S-IoU").
S_IOU_THRESHOLDS = np.round(np.arange(101) * 0.01, 2)
#: LISA's per-query IoU epsilon, used to rank S-IoU thresholds (seg_token_family.md §1.8).
IOU_EPS = 1e-5


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def coarse_grid(
    sim: torch.Tensor, grid: tuple[int, int], down_sample: int, size: tuple[int, int], aspect: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selection grid and the pixel of each cell (§2.3 steps 4 and 7).

    The raw similarity is reshaped to the token grid and bilinearly down-sampled by ``down_sample``
    to ``g x g`` cells (a). ``aspect='crop'`` (the code): min-max over the ``g x g`` cells (b), pad
    with :data:`OFF_IMAGE` by :func:`crop_margins` at side ``g`` to ``h_g x w_g`` (c); cell ``c``
    maps to ``x = min((c mod w_g + 0.5) * W / w_g, W - 1)``, ``y = min((c div w_g + 0.5) * H / h_g,
    H - 1)``, truncated to int (step 7). ``aspect='pad'``: the ``g x g`` cells tile the square canvas
    of side ``M = max(H, W)`` with the image centred; a cell whose centre falls off the image is
    :data:`OFF_IMAGE`, the min-max runs over the others (in crop mode every unpadded cell is on the
    image, so this is the same rule), and a cell maps to its centre ``(c + 0.5) * M / g`` minus the
    image's offset, truncated to int.

    Args:
        sim: ``[n, Np]`` raw similarities; grid: ``(gh, gw)`` token grid; down_sample: ``d`` (divides
            ``gh`` and ``gw``); size: ``(H, W)``; aspect: ``'crop'`` or ``'pad'``.

    Returns:
        ``values [n, K]`` float32 in ``[0, 1]`` or :data:`OFF_IMAGE`, raster order, and
        ``cells [K, 2]`` long ``(x, y)`` pixels.
    """
    _check_choice(aspect, ASPECTS, "aspect")
    gh, gw = grid
    if gh % down_sample or gw % down_sample:
        raise ValueError(f"down_sample={down_sample} must divide the {gh}x{gw} token grid")
    g_h, g_w = gh // down_sample, gw // down_sample
    h, w = int(size[0]), int(size[1])
    down = F.interpolate(sim.float().reshape(-1, 1, gh, gw), (g_h, g_w), mode="bilinear", align_corners=False)
    n = down.shape[0]
    f64 = dict(dtype=torch.float64)  # cell geometry in float64 on the CPU (exact; MPS has no float64)
    if aspect == "crop":
        if g_h != g_w:
            raise ValueError(f"a centre-cropped CLIP input is square, got a {g_h}x{g_w} grid")
        ph, pw = crop_margins(size, g_h)
        vals = F.pad(minmax_normalize(down.reshape(n, -1)).reshape(n, g_h, g_w), (pw, pw, ph, ph),
                     value=OFF_IMAGE)
        hg, wg = vals.shape[1:]
        c = torch.arange(hg * wg, **f64)
        x = torch.clamp((c % wg + 0.5) * w / wg, max=w - 1)
        y = torch.clamp((torch.div(c, wg, rounding_mode="floor") + 0.5) * h / hg, max=h - 1)
        return vals.reshape(n, -1), torch.stack([x, y], 1).long().to(sim.device)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    r, c = torch.meshgrid(torch.arange(g_h, **f64), torch.arange(g_w, **f64), indexing="ij")
    x = ((c + 0.5) * side / g_w - left).flatten()
    y = ((r + 0.5) * side / g_h - top).flatten()
    on = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    vals = minmax_normalize(down.reshape(n, -1), on.to(sim.device).expand(n, -1), fill=OFF_IMAGE)
    cells = torch.stack([x.clamp(0, w - 1), y.clamp(0, h - 1)], 1).long()
    return vals, cells.to(sim.device)


def statistical_thresholds(values: torch.Tensor, k: float) -> tuple[float, float]:
    """The paper's thresholds ``t_pos = mu + k*sigma``, ``t_neg = mu - k*sigma`` (read_paper_notes.md,
    Algorithm 1 steps 1-2; §2.3 below the table, §2.7).

    ``mu`` and ``sigma^2`` are the mean and (population) variance of the normalised cells on the image
    (``values >= 0``). The paper prints ``k = 0.5`` (:data:`PAPER_STAT_K`); the code's commented-out
    variant uses 1.28 (:data:`CODE_STAT_K`) and torch's unbiased std over the padded grid, ``-1``
    cells included.

    Args:
        values: ``[K]`` one query's grid values from :func:`coarse_grid`.
    """
    v = values[values >= 0].detach().cpu().double()
    if v.numel() == 0:
        raise ValueError("no grid cell lies on the image")
    mu = float(v.mean())
    sigma = float(((v - mu) ** 2).mean().sqrt())
    return mu + k * sigma, mu - k * sigma


def select_points(
    values: torch.Tensor, num_points: int, t_pos: float, t_neg: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Priority-ordered point selection of one query (§2.3 steps 5-6).

    Candidate sets over the cells on the image (``values >= 0``): positives ``s >= t_pos`` by
    decreasing value, negatives ``s <= t_neg`` by increasing value (most dissimilar first), neutrals
    ``t_neg < s < t_pos`` in raster order. They are concatenated in that order and cut at
    ``num_points``: a top-k, not a threshold-only rule (with many positives all points are
    positive). Ties keep raster order.

    Args:
        values: ``[K]`` grid values (:func:`coarse_grid`); num_points: ``N_p``;
        t_pos, t_neg: thresholds with ``t_neg < t_pos``.

    Returns:
        ``idx [P] long`` cell indices and ``labels [P] long`` (:data:`POSITIVE` 1, :data:`NEGATIVE` 0,
        :data:`NEUTRAL` -1), ``P = min(num_points, cells on the image)``.
    """
    if not t_neg < t_pos:
        raise ValueError(f"need t_neg < t_pos, got t_neg={t_neg} and t_pos={t_pos}")
    on = values >= 0
    pos = torch.nonzero(on & (values >= t_pos)).flatten()
    pos = pos[torch.argsort(values[pos], descending=True, stable=True)]
    neg = torch.nonzero(on & (values <= t_neg)).flatten()
    neg = neg[torch.argsort(values[neg], stable=True)]
    neu = torch.nonzero(on & (values > t_neg) & (values < t_pos)).flatten()
    labels = torch.cat([torch.full_like(pos, POSITIVE), torch.full_like(neg, NEGATIVE),
                        torch.full_like(neu, NEUTRAL)])
    return torch.cat([pos, neg, neu])[:num_points], labels[:num_points]


def extreme_points(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's P-prompt points: the ``k`` most similar cells as positives and the ``k`` least
    similar of the remaining cells as negatives (read_paper_notes.md, "P-prompt").

    Args:
        values: ``[K]`` grid values (:func:`coarse_grid`); cells with ``values < 0`` are off the image.

    Returns:
        ``idx [P] long`` (positives by decreasing value, then negatives by increasing value) and
        ``labels [P] long`` (1 / 0).
    """
    on = torch.nonzero(values >= 0).flatten()
    order = on[torch.argsort(values[on], descending=True, stable=True)]
    pos = order[:k]
    neg = order[k:].flip(0)[:k]
    labels = torch.cat([torch.full_like(pos, POSITIVE), torch.full_like(neg, NEGATIVE)])
    return torch.cat([pos, neg]), labels


# ------------------------------------------------------------------------------ DtoC
def _tilted_shift(values: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, kernel: str,
                  valid: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_u w(u) (u - q)`` with ``w ∝ exp(S~(u) - k(|u - q|))`` normalised over the given pixels.

    ``values [P, U]`` are S~ at the pixels, ``dx, dy [P, U]`` their offsets from the point.
    """
    d2 = (dx * dx + dy * dy).to(values.dtype)
    logits = values - (d2 if kernel == "gaussian" else d2.sqrt())
    if valid is not None:
        logits = logits.masked_fill(~valid, float("-inf"))
    wgt = torch.softmax(logits, -1)
    return torch.stack([(wgt * dx.to(wgt.dtype)).sum(-1), (wgt * dy.to(wgt.dtype)).sum(-1)], -1)


def dtoc(points: torch.Tensor, smap: torch.Tensor, kernel: str = "gaussian",
         window: int | None = None) -> torch.Tensor:
    """Discrete-to-continuous sampling (§2.3 step 8), over a window around each point.

    For an integer point q and pixels u of the image, ``q^ = sum_u u exp(S~(u) - |u - q|^2) /
    sum_u exp(S~(u) - |u - q|^2)``: a softmax of S~ (temperature 1) tilting a Gaussian of
    sigma = 1/sqrt(2) px. ``kernel='laplace'`` uses ``exp(-|u - q|)`` (the paper's Eqs. 7-10,
    read_paper_notes.md). Only pixels within ``window`` px (per axis) of q are summed; the default
    (:data:`DTOC_WINDOW`) matches :func:`dtoc_dense` to far below 1e-4 px. q^ is computed as q plus the
    weighted offset (exact in float32 for large images) and is differentiable with respect to
    ``smap``; the point itself carries no gradient.

    Args:
        points: ``[P, 2]`` integer ``(x, y)`` pixels (a float tensor is truncated).
        smap: ``[H, W]`` S~ (:func:`full_resolution_map`).
        kernel: ``'gaussian'`` (code) or ``'laplace'`` (paper); window: half-width in px, or None.

    Returns:
        ``[P, 2]`` float ``(x, y)``.
    """
    _check_choice(kernel, DTOC_KERNELS, "kernel")
    radius = DTOC_WINDOW[kernel] if window is None else int(window)
    if radius < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    h, w = smap.shape
    q = points.long()
    off = torch.arange(-radius, radius + 1, device=smap.device)
    oy, ox = torch.meshgrid(off, off, indexing="ij")
    ox, oy = ox.flatten()[None], oy.flatten()[None]
    xs, ys = q[:, :1] + ox, q[:, 1:] + oy
    valid = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    vals = smap[ys.clamp(0, h - 1), xs.clamp(0, w - 1)]
    shift = _tilted_shift(vals, ox.expand_as(xs), oy.expand_as(ys), kernel, valid)
    return q.to(shift.dtype) + shift


def dtoc_dense(points: torch.Tensor, smap: torch.Tensor, kernel: str = "gaussian") -> torch.Tensor:
    """:func:`dtoc` summed over every pixel of the image: the code's formula as written (§2.3 step 8).

    ``O(P * H * W)`` memory; the reference :func:`dtoc` is tested against.
    """
    _check_choice(kernel, DTOC_KERNELS, "kernel")
    h, w = smap.shape
    q = points.long()
    ys, xs = torch.meshgrid(torch.arange(h, device=smap.device), torch.arange(w, device=smap.device), indexing="ij")
    dx = xs.flatten()[None] - q[:, :1]
    dy = ys.flatten()[None] - q[:, 1:]
    shift = _tilted_shift(smap.flatten()[None].expand(len(q), -1), dx, dy, kernel)
    return q.to(shift.dtype) + shift


def to_sam_frame(points: torch.Tensor, size: tuple[int, int], resized: tuple[int, int]) -> torch.Tensor:
    """Original-image ``(x, y)`` to SAM's input frame: ``x * w' / W``, ``y * h' / H`` (§2.2 step 6a,
    SAM's ``apply_coords``; ``(h', w')`` is the longest-side resize, :meth:`SAMMaskSource.preprocess`)."""
    scale = torch.tensor([resized[1] / size[1], resized[0] / size[0]], dtype=points.dtype, device=points.device)
    return points * scale


# ------------------------------------------------------------------------------ the chain
def similarity_as_points(
    sim: torch.Tensor,
    grid: tuple[int, int],
    size: tuple[int, int],
    *,
    aspect: str,
    input_size: int,
    num_points: int = READ7B_NUM_POINTS,
    down_sample: int = READ7B_DOWN_SAMPLE,
    thresholds: str = "fixed",
    t_pos: float = READ_T_POS,
    t_neg: float = READ_T_NEG,
    stat_k: float = PAPER_STAT_K,
    use_dtoc: bool = True,
    kernel: str = "gaussian",
    window: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SasP for the ``n`` ``[SEG]`` states of one image (§2.3 steps 3-9).

    The cell choice and the labels come from the detached similarity (they carry no gradient,
    §2.3 step 8); with ``use_dtoc`` each point is refined by :func:`dtoc` on S~, which keeps the
    gradient to ``sim``. Without it the points are the integer cell pixels (the paper's "discrete
    points" ablation).

    Args:
        sim: ``[n, Np]`` raw similarities of this image's queries; grid: ``(gh, gw)``;
        size: ``(H, W)``; aspect, input_size: see :func:`full_resolution_map`;
        num_points, down_sample: ``N_p`` and ``d``; thresholds: ``'fixed'`` (``t_pos``/``t_neg``) or
        ``'statistical'`` (:func:`statistical_thresholds` with ``stat_k``);
        kernel, window: see :func:`dtoc`.

    Returns:
        ``points [n, P, 2]`` float ``(x, y)`` in original pixels and ``labels [n, P]`` long.
    """
    _check_choice(thresholds, THRESHOLD_MODES, "thresholds")
    values, cells = coarse_grid(sim.detach(), grid, down_sample, size, aspect)
    smap = full_resolution_map(sim, grid, size, aspect, input_size) if use_dtoc else None
    points, labels = [], []
    for j in range(sim.shape[0]):
        tp, tn = (t_pos, t_neg) if thresholds == "fixed" else statistical_thresholds(values[j], stat_k)
        idx, lab = select_points(values[j], num_points, tp, tn)
        q = cells[idx]
        points.append(dtoc(q, smap[j], kernel, window) if use_dtoc else q.float())
        labels.append(lab)
    if not points:
        return sim.new_zeros((0, 0, 2)), torch.zeros((0, 0), dtype=torch.long, device=sim.device)
    return torch.stack(points), torch.stack(labels)


# ------------------------------------------------------------------------------ diagnostics
def _count_above(rank: np.ndarray, n: int) -> np.ndarray:
    """``[n]``: how many entries of ``rank`` exceed ``i``, for each ``i < n``."""
    return np.cumsum(np.bincount(rank, minlength=n + 1)[::-1])[::-1][1:]


def best_threshold_mask(
    smap: ArrayLike, gt: ArrayLike, ignore: ArrayLike | None = None,
    thresholds: Sequence[float] = S_IOU_THRESHOLDS,
) -> tuple[float, np.ndarray]:
    """The S-IoU mask of one query: ``smap >= t`` at the ``t`` that maximises its IoU with ``gt``
    (read_paper_notes.md, "S-IoU": thresholds 0 to 1 by 0.01, best per image).

    IoU is LISA's ``I / (U + 1e-5)`` with ignored pixels removed (§1.8); the lowest of equally good
    thresholds wins.

    Args:
        smap: ``[H, W]`` S~ in ``[0, 1]``; gt, ignore: ``[H, W] bool``.

    Returns:
        ``(t, mask [H, W] bool)``.
    """
    s = (smap.detach().cpu().numpy() if isinstance(smap, torch.Tensor) else np.asarray(smap)).astype(np.float64)
    g = np.asarray(gt, dtype=bool)
    keep = np.ones_like(g) if ignore is None else ~np.asarray(ignore, dtype=bool)
    ts = np.asarray(thresholds, dtype=np.float64)
    # pixel u is in the mask of threshold i iff i < rank(u) = #{thresholds <= s(u)}
    rank = np.searchsorted(ts, s[keep], side="right")
    pred = _count_above(rank, len(ts))
    inter = _count_above(rank[g[keep]], len(ts))
    union = pred + int(g[keep].sum()) - inter
    best = int(np.argmax(inter / (union + IOU_EPS)))
    return float(ts[best]), s >= ts[best]
