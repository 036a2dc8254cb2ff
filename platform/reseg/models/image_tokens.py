"""The image-token frame: where an image's tokens sit, their grid, and what part of the image each covers.

Heads that map something between the LMM's image tokens and the image (READ's similarity points,
AnchorSeg's spatial prior and token-mask consistency, any similarity heat-map) do it through the
frame the backbone reports for each image, never through a fixed grid or input size. These are the
public building blocks of that geometry, shared by every head (pure functions of tensors)::

    similarity_map       [N, Np]    raw <h, image token> of each state with its own row's image tokens
    minmax_normalize     [..., K]   (x - min) / (max - min) along the last dimension
    full_resolution_map  [n, H, W]  a per-token map upsampled through the frame onto the original image
    mask_to_token_grid   [n, gh, gw] a mask at the original size, resampled onto the token grid

Three ways of fitting an image into the vision tower's square input are handled (``aspect``):
``'crop'`` (resize the short side, centre crop: CLIP's processor and LISA/READ's code), ``'pad'``
(pad to a square with the image centred: LLaVA-1.5's ``pad`` aspect) and ``'pad_corner'``
(resize the longest side, zero-pad bottom/right: AnchorSeg's ``--pad_train_clip_images``). Maps are
indexed ``[y, x]``; token grids are row-major.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: The ways an image is fitted into the square vision-tower input (see the module docstring).
ASPECTS = ("crop", "pad", "pad_corner")


def _check_aspect(aspect: str, allowed: Sequence[str] = ASPECTS) -> None:
    if aspect not in allowed:
        raise ValueError(f"aspect must be one of {list(allowed)}, got {aspect!r}")


@dataclass(frozen=True)
class ImageTokenFrame:
    """What a backbone reports about one image's tokens.

    Attributes:
        grid: ``(gh, gw)``: the image tokens form this row-major grid (one token per cell).
        input_size: side of the square vision-tower input the grid covers (336 for CLIP-336).
        aspect: how the original image was fitted into that input (one of :data:`ASPECTS`).
    """

    grid: tuple[int, int]
    input_size: int
    aspect: str

    def __post_init__(self) -> None:
        _check_aspect(self.aspect)

    @property
    def num_tokens(self) -> int:
        return int(self.grid[0]) * int(self.grid[1])

    def to_image(self, maps: torch.Tensor, size: tuple[int, int], normalize: bool = True) -> torch.Tensor:
        """``[n, Np]`` per-token values as ``[n, H, W]`` maps over the original image (:func:`full_resolution_map`)."""
        return full_resolution_map(maps, self.grid, size, self.aspect, self.input_size, normalize=normalize)

    def from_image(self, masks: torch.Tensor) -> torch.Tensor:
        """``[n, H, W]`` masks as ``[n, gh, gw]`` token-grid values (:func:`mask_to_token_grid`)."""
        return mask_to_token_grid(masks, self.grid, self.input_size, self.aspect)


def check_frame(frame: ImageTokenFrame | None, head: str, wanted_aspect: str | None,
                aspects: Sequence[str], consequence: str) -> ImageTokenFrame | None:
    """Check that a head that maps per-token values back onto the image can use ``frame``.

    ``frame.aspect`` must be one the head handles (``aspects``), and the head's own ``image_aspect``
    option (``wanted_aspect``; None = follow the backbone) must agree with it, since the map would
    otherwise land in the wrong place (``consequence`` says what goes wrong). A None frame (a backbone
    whose grid depends on the image) passes; the per-image frames are checked when they are used.
    """
    if frame is None:
        return None
    if frame.aspect not in aspects:
        raise TypeError(f"{head} needs a backbone whose image aspect is one of {list(aspects)}; the backbone "
                        f"fits images with {frame.aspect!r}")
    if wanted_aspect is not None and wanted_aspect != frame.aspect:
        raise ValueError(
            f"{head}: model.head.image_aspect={wanted_aspect!r} but the backbone preprocesses images with "
            f"model.lmm.image_aspect={frame.aspect!r}; {consequence}. Set both to the same value (or leave "
            "model.head.image_aspect=None).")
    return frame


# ------------------------------------------------------------------------------ similarity
def similarity_map(
    hidden: torch.Tensor, image_positions: torch.Tensor, rows: torch.Tensor, states: torch.Tensor
) -> torch.Tensor:
    """The similarity ``S_j = <V_j, h>`` of each state with the image tokens of its own row.

    A **raw dot product** of last-layer hidden states, no normalisation (READ's released code,
    spec seg_token_family.md §2.3 steps 1-2; AnchorSeg's anchor similarity, anchorseg_ras.md §1.5
    step 1). Each row's image tokens are found through that row's ``image_positions`` (§2.7: the
    official code reuses row 0's offset for every row, which misplaces the span when rows are padded
    differently). Computed in float32.

    Args:
        hidden: ``[C, L, D]`` last-layer (post-norm) hidden states.
        image_positions: ``[C, L] bool``; every row holds the same number Np of image tokens.
        rows: ``[N] long``, the row (conversation) of each state.
        states: ``[N, D]``, the states to compare (e.g. those read for ``[SEG]``, before projection).

    Returns:
        ``[N, Np]`` float32, image tokens in sequence (row-major grid) order.
    """
    if hidden.dim() != 3 or tuple(image_positions.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"hidden must be [C, L, D] and image_positions [C, L]; got {tuple(hidden.shape)} "
                         f"and {tuple(image_positions.shape)}")
    counts = image_positions.sum(1)
    if counts.numel() == 0 or bool((counts != counts[0]).any()) or int(counts[0]) == 0:
        raise ValueError(f"every row needs the same (non-zero) number of image tokens, got {counts.tolist()}")
    c, _, d = hidden.shape
    image_states = hidden[image_positions].reshape(c, int(counts[0]), d)  # row-major: each row's own span
    return torch.einsum("nd,npd->np", states.float(), image_states[rows].float())


def minmax_normalize(x: torch.Tensor, valid: torch.Tensor | None = None, fill: float = 0.0) -> torch.Tensor:
    """``(x - min) / (max - min)`` along the last dimension (seg_token_family.md §2.3 steps 3a and 4b).

    READ's code adds no epsilon; a constant row (which carries no location) gives 0 instead of its NaN.

    Args:
        x: ``[..., K]``.
        valid: optional ``[..., K] bool``: only these entries set the min and max; the others get ``fill``.
    """
    if valid is None:
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    else:
        inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
        lo = torch.where(valid, x, inf).amin(-1, keepdim=True)
        hi = torch.where(valid, x, -inf).amax(-1, keepdim=True)
    rng = hi - lo
    out = torch.where(rng > 0, (x - lo) / torch.where(rng > 0, rng, torch.ones_like(rng)), torch.zeros_like(x))
    return out if valid is None else torch.where(valid, out, torch.full_like(out, fill))


# ------------------------------------------------------------------------------ geometry
def crop_margins(size: tuple[int, int], side: int) -> tuple[int, int]:
    """Rows and columns a centre crop removed on each side, at a square of ``side`` (§2.3 steps 3c, 4c).

    The short side is resized to ``side`` and the long one to ``floor(side * long / short)`` (as the
    CLIP image processor does; exact integer arithmetic for the spec's ``int(H * side / min(H, W))``);
    the margin is ``(resized - side) // 2`` per side.

    Returns:
        ``(rows, cols)``.
    """
    h, w = int(size[0]), int(size[1])
    short = min(h, w)
    return (side * h // short - side) // 2, (side * w // short - side) // 2


def preprocess_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """``(h', w')`` after resizing the longest side to ``long_side``: ``int(x * long / max(h, w) + 0.5)``
    (SAM's ``ResizeLongestSide.get_preprocess_shape``; the ``'pad_corner'`` frame, anchorseg_ras.md §1.5)."""
    from segment_anything.utils.transforms import ResizeLongestSide

    return tuple(int(v) for v in ResizeLongestSide.get_preprocess_shape(int(h), int(w), int(long_side)))


def full_resolution_map(
    maps: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], aspect: str, input_size: int,
    normalize: bool = True,
) -> torch.Tensor:
    """Per-token values as maps over the original image: READ's S~ (§2.3 step 3), AnchorSeg's prior (§1.5 step 3).

    With ``normalize`` the values are min-max normalised over the Np tokens first (a). They are
    reshaped row-major to the token grid and bilinearly upsampled to the vision input ``input_size``
    (b), the preprocessing is undone (c) and the result resized to ``(H, W)`` (d):
    ``'crop'`` zero-pads the rows/columns the centre crop removed (:func:`crop_margins`) and resizes
    to ``(H, W)``, as READ's code does; ``'pad'`` resizes to the square canvas of side ``max(H, W)``
    and cuts the image out of its centre (the inverse of pad-to-square); ``'pad_corner'`` crops the
    valid region ``[0:h', 0:w']`` (:func:`preprocess_shape`) and resizes it to ``(H, W)``, as
    AnchorSeg's code does.

    Args:
        maps: ``[n, Np]``; grid: ``(gh, gw)`` with ``gh * gw == Np``; size: ``(H, W)`` of the image;
        aspect: one of :data:`ASPECTS`; input_size: side of the square vision input (336 for CLIP-336).

    Returns:
        ``[n, H, W]`` float32, differentiable with respect to ``maps``.
    """
    _check_aspect(aspect)
    gh, gw = grid
    h, w = int(size[0]), int(size[1])
    m = (minmax_normalize(maps.float()) if normalize else maps.float()).reshape(-1, 1, gh, gw)
    m = F.interpolate(m, (input_size, input_size), mode="bilinear", align_corners=False)
    if aspect == "crop":
        ph, pw = crop_margins(size, input_size)
        m = F.interpolate(F.pad(m, (pw, pw, ph, ph)), (h, w), mode="bilinear", align_corners=False)
    elif aspect == "pad":
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        m = F.interpolate(m, (side, side), mode="bilinear", align_corners=False)[..., top: top + h, left: left + w]
    else:
        vh, vw = preprocess_shape(h, w, input_size)
        m = F.interpolate(m[..., :vh, :vw], (h, w), mode="bilinear", align_corners=False)
    return m[:, 0]


def mask_to_token_grid(masks: torch.Tensor, grid: tuple[int, int], input_size: int, aspect: str) -> torch.Tensor:
    """Masks at the original size resampled onto the image-token grid (AnchorSeg's M2T target, §1.7).

    The mask goes through the backbone's geometry with **bilinear, antialiased** resizing (border
    cells may be fractional): ``'pad_corner'`` resizes the longest side to ``S`` and zero-pads
    bottom/right; ``'pad'`` centres it on a zero square of side ``max(H, W)`` and resizes to ``S``;
    ``'crop'`` resizes the short side to ``S`` and centre-crops. Then **nearest** to the grid.

    Args:
        masks: ``[n, H, W]``; grid: ``(gh, gw)``; input_size: ``S``; aspect: one of :data:`ASPECTS`.

    Returns:
        ``[n, gh, gw]`` float32 in ``[0, 1]``.
    """
    _check_aspect(aspect)
    _, h, w = masks.shape
    x = masks.float()[:, None]
    S = int(input_size)
    resize = dict(mode="bilinear", align_corners=False, antialias=True)
    if aspect == "pad_corner":
        vh, vw = preprocess_shape(h, w, S)
        x = F.pad(F.interpolate(x, (vh, vw), **resize), (0, S - vw, 0, S - vh))
    elif aspect == "pad":
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        x = F.pad(x, (left, side - w - left, top, side - h - top))
        x = F.interpolate(x, (S, S), **resize)
    else:
        short = min(h, w)
        ph, pw = crop_margins((h, w), S)
        x = F.interpolate(x, (S * h // short, S * w // short), **resize)[..., ph: ph + S, pw: pw + S]
    return F.interpolate(x, tuple(int(g) for g in grid), mode="nearest")[:, 0]
