"""The RAS mask tokenizer: one LMM token per mask (spec anchorseg_ras.md §2.2 module 3, §2.4 B-D).

Pipeline, per image::

    image --preprocess--> pixels [B, 3, S, S] --frozen encoder--> feature map [B, C_e, h_e, w_e]
          (once per image and encoder, reused by every candidate and reference mask of that image)
    mask [H, W] --same geometry--> weights on each grid --masked_average_pool--> [C_e] per encoder
          --per-encoder norm--> concatenate [sum C_e] --projector (trainable MLP)--> [out_dim]

Parts:

* :func:`masked_average_pool`: the pure pooling math (§2.4 C).
* Encoders, registered in ``MASK_ENCODERS``: :class:`TimmEncoder` (SigLIP, DINOv2, ConvNeXt, any
  timm model), :class:`OpenClipEncoder` (OpenAI/OpenCLIP ViTs, ConvNeXt-CLIP's timm trunk) and
  :class:`PositionEncoding` (the fixed 2-D sinusoidal "fifth encoder", §2.4 B). All are frozen in
  every RAS stage (§2.2): no trainable parameters, always in eval mode, run under ``no_grad``.
  Weights are never downloaded: models are built with ``pretrained=False`` and a local
  ``checkpoint=`` file is loaded when given (a missing file is an error naming it and its key).
* :class:`MaskTokenizer`: builds the encoders, encodes images once, pools masks, and owns the
  trainable mask projector (a LLaVA-style 2-layer MLP, §2.4 D).

**Geometry rule (one for all encoders).** An image of size ``(H, W)`` is placed at the top-left
corner of a ``L x L`` square, ``L = max(H, W)``; the rest is padding filled with the encoder's mean
colour (zero after normalisation, as LLaVA-1.5's ``expand2square`` pads with the mean, but anchored
top-left like SAM so no offset arithmetic is needed). Each encoder resizes that square to its own
input size ``S x S``. A mask at the original size is mapped into the same frame by zero-padding it
bottom/right to ``L x L`` (:class:`MaskGeometry`), so mask and feature map always agree, whatever
``S`` and grid each encoder has. When an encoder's grid does not tile all of ``S`` (SigLIP-384 with
14-px patches sees 27 x 14 = 378 of 384 px) the mask frame is cropped to the seen part
(``coverage``) before pooling.

**Presets.** ``configs/_base_/models/ras_encoders_tiny.py`` is the CPU-sized, random-weight version of
the §2.4 B set (``encode_images`` on this 2-core CPU with one torch thread: ~9 ms for 1 image, ~35 ms
for 8); the real set with local checkpoint paths is ``configs/_base_/models/ras_encoders_real.py``.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reseg.registry import MASK_ENCODERS

#: Rules for a non-empty mask whose weights all vanish on the feature grid (§2.4 C "empty after
#: downsampling"): the cell holding the mask's centroid (§2.4 C option 1, default), a zero vector
#: (Osprey's behaviour), or exact area-coverage weights (box downsampling, §2.4 C alternative).
EMPTY_RULES = ("centroid", "zero", "area")
#: How a mask is resized to a feature grid: Osprey/FC-CLIP's bilinear (§2.4 C, default) or exact
#: area coverage (``adaptive_avg_pool2d``, §2.4 C alternative "area (box) downsampling").
RESIZE_MODES = ("bilinear", "area")
#: Per-encoder normalisation of the pooled vector before concatenation (§2.4 C, [GUESS]).
NORMS = ("layernorm", "l2", None)

#: Masks are padded into the square frame in chunks of at most this many pixels (float32), so 100
#: masks of a 1024 x 1024 image never materialise 400 MB at once.
_CHUNK_PIXELS = 1 << 24

ImageLike = Union[np.ndarray, torch.Tensor]
MaskLike = Union[np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------------------- pooling
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
    n, height, width = masks.shape
    mass = masks.flatten(1).sum(1).clamp_min(1e-12)
    ys = torch.arange(height, device=masks.device, dtype=torch.float32) + 0.5
    xs = torch.arange(width, device=masks.device, dtype=torch.float32) + 0.5
    cy = (masks.sum(2) * ys).sum(1) / mass
    cx = (masks.sum(1) * xs).sum(1) / mass
    row = torch.floor(cy * size[0] / height).long().clamp_(0, size[0] - 1)
    col = torch.floor(cx * size[1] / width).long().clamp_(0, size[1] - 1)
    return row, col


# ---------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class MaskGeometry:
    """Where one image sits in the square frame shared by every encoder (see the module docstring).

    The image ``(H, W)`` occupies rows ``[0, H)`` and columns ``[0, W)`` of an ``L x L`` square,
    ``L = max(H, W)``; each encoder resizes the square to its input size.
    """

    image_size: tuple[int, int]

    @property
    def side(self) -> int:
        """``L = max(H, W)``, the side of the square frame in original-image pixels."""
        return max(self.image_size)

    def extent(self, coverage: tuple[float, float] = (1.0, 1.0)) -> tuple[int, int]:
        """Rows and columns of the square frame an encoder's feature grid sees."""
        return (max(1, round(self.side * coverage[0])), max(1, round(self.side * coverage[1])))

    def frame(self, masks: torch.Tensor, coverage: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
        """``[M, H, W]`` masks at the original size -> ``[M, eh, ew]`` float32 in the square frame:
        zero-padded bottom/right to ``L x L``, then cropped to the part the grid sees (``extent``)."""
        if tuple(masks.shape[-2:]) != tuple(self.image_size):
            raise ValueError(f"masks are {list(masks.shape[-2:])} but the image is {list(self.image_size)} "
                             "(masks must be at the image's original size)")
        eh, ew = self.extent(coverage)
        height, width = self.image_size
        return F.pad(masks.float(), (0, ew - width, 0, eh - height))  # a negative pad crops


def _check_image(image: Any, index: int) -> tuple[int, int]:
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"images[{index}] is a {type(image).__name__}; expected an [H, W, 3] uint8 array")
    dtype_ok = image.dtype == (np.uint8 if isinstance(image, np.ndarray) else torch.uint8)
    if image.ndim != 3 or image.shape[2] != 3 or not dtype_ok or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"images[{index}] has shape {list(image.shape)} and dtype {image.dtype}; "
                         "expected an RGB [H, W, 3] uint8 image")
    return int(image.shape[0]), int(image.shape[1])


def square_geometry(images: Sequence[ImageLike]) -> list[MaskGeometry]:
    """The :class:`MaskGeometry` of each ``[H, W, 3]`` uint8 image."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        raise TypeError("images must be a list of [H, W, 3] uint8 arrays, not one array")
    return [MaskGeometry(_check_image(im, i)) for i, im in enumerate(images)]


def square_pixels(
    images: Sequence[ImageLike],
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``[B, 3, size, size]`` normalised pixels under the geometry rule of the module docstring:
    pad top-left anchored to a square with the mean colour, resize (bilinear, antialiased when
    shrinking), normalise ``(x / 255 - mean) / std``."""
    mean_t = torch.tensor(mean, device=device, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, device=device, dtype=torch.float32).view(3, 1, 1)
    out = []
    for i, im in enumerate(images):
        height, width = _check_image(im, i)
        side = max(height, width)
        t = im if isinstance(im, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(im))
        t = t.to(device).permute(2, 0, 1).float().div_(255.0)
        square = mean_t.expand(3, side, side).clone()
        square[:, :height, :width] = t
        if side != size:
            square = F.interpolate(square[None], size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=side > size)[0]
        out.append((square - mean_t) / std_t)
    return torch.stack(out).to(dtype)


# ------------------------------------------------------------------------------------- checkpoints
def _require_file(path: Optional[str], key: str, example: str) -> None:
    """Fail before any model is built when a configured checkpoint file is missing."""
    if path is None:
        return
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {str(p)!r} (config key {key}). reseg never downloads weights; "
            f"point {key} at a local file, e.g. --cfg-options {key}={example}")


def _read_weights(path: str, key: str) -> dict[str, torch.Tensor]:
    from .sam import load_state_dict_file

    sd = load_state_dict_file(path, key)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], path: str, what: str) -> None:
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing:
        raise RuntimeError(f"checkpoint {path!r} does not fit {what}: {len(missing)} missing keys "
                           f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if unexpected:  # e.g. a classifier or text tower the feature extractor does not use
        warnings.warn(f"checkpoint {path!r}: {len(unexpected)} keys not used by {what} "
                      f"(e.g. {unexpected[:3]})", stacklevel=3)


# ------------------------------------------------------------------------------------------ encoders
class MaskEncoder(nn.Module):
    """Base of the frozen encoders: the contract :class:`MaskTokenizer` relies on.

    Attributes: ``out_channels`` (C), ``grid`` ``(h, w)``, ``input_size`` (S; 0 when no pixels are
    needed), ``mean``/``std`` (normalisation, 0-1 scale), ``coverage`` (fraction of the S x S input
    the grid sees, rows and columns). ``preprocess(images) -> (pixels [B, 3, S, S], geometry)``;
    ``forward(pixels) -> [B, C, h, w]`` under ``no_grad``. A plugin encoder only needs the same.
    """

    out_channels: int
    grid: tuple[int, int]
    input_size: int
    mean: Optional[tuple[float, float, float]] = None
    std: Optional[tuple[float, float, float]] = None
    coverage: tuple[float, float] = (1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        # empty buffer that follows .to(device/dtype): where inputs go (never a hard-coded device)
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def _weight_dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return self._anchor.dtype

    def _freeze(self) -> None:
        """Frozen in every RAS stage (§2.2): no parameter trains, dropout/BN stay in eval mode."""
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "MaskEncoder":
        return super().train(False)  # always eval, whatever the segmentor's mode

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[MaskGeometry]]:
        """``([B, 3, S, S] pixels, geometry per image)``; see the module docstring for the rule."""
        geometry = square_geometry(images)
        pixels = square_pixels(images, self.input_size, self.mean, self.std, self.device, self._weight_dtype())
        return pixels, geometry

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, C, h, w]`` frozen features (no autograd graph)."""
        with torch.no_grad():
            fmap = self._features(pixels.to(device=self.device, dtype=self._weight_dtype()))
        expected = (self.out_channels, *self.grid)
        if tuple(fmap.shape[1:]) != expected:
            raise RuntimeError(f"{type(self).__name__} produced a {list(fmap.shape[1:])} map for "
                               f"{list(pixels.shape[-2:])} pixels; expected {list(expected)} "
                               f"(input_size {self.input_size})")
        return fmap

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, grid={self.grid}, input_size={self.input_size}"


def _check_feature(feature: Any) -> Union[str, int]:
    if feature == "last" or (isinstance(feature, int) and not isinstance(feature, bool)):
        return feature
    raise ValueError(f"feature={feature!r}: expected 'last' (the final, normed feature map) or a block/stage "
                     "index (negative counts from the end, e.g. -2 for LLaVA's penultimate CLIP layer)")


def _is_timm_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and getattr(model, "num_prefix_tokens", None) is not None


def _timm_feature_shape(model: nn.Module, size: int, feature: Union[str, int],
                        what: str) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """``(channels, grid, stride)`` of a timm model's feature map at input ``size`` (no forward)."""
    if _is_timm_vit(model):
        patch = tuple(int(p) for p in np.broadcast_to(np.asarray(model.patch_embed.patch_size), (2,)))
        if isinstance(feature, int):
            n_blocks = len(model.blocks)
            if not -n_blocks <= feature < n_blocks:
                raise ValueError(f"{what}: feature={feature} is out of range for {n_blocks} blocks")
        grid = (size // patch[0], size // patch[1])
        return int(model.embed_dim), grid, patch
    info = getattr(model, "feature_info", None)
    if not info:
        raise TypeError(f"{what}: {type(model).__name__} is neither a timm ViT (patch_embed + prefix tokens) "
                        "nor a CNN with feature_info; cannot tell its feature grid")
    index = -1 if feature == "last" else feature
    if not -len(info) <= index < len(info):
        raise ValueError(f"{what}: feature={feature} is out of range for {len(info)} stages")
    stage = info[index]
    reduction = int(stage["reduction"])
    return int(stage["num_chs"]), (size // reduction, size // reduction), (reduction, reduction)


def _timm_feature_map(model: nn.Module, pixels: torch.Tensor, feature: Union[str, int],
                      grid: tuple[int, int]) -> torch.Tensor:
    """``[B, C, h, w]`` from a timm model: ViT tokens without prefix (cls/register) tokens reshaped
    to the grid, or a CNN's feature map."""
    if feature != "last":
        return model.forward_intermediates(pixels, indices=[feature], intermediates_only=True,
                                           output_fmt="NCHW")[0]
    out = model.forward_features(pixels)
    if out.dim() == 3:  # [B, N, C] tokens
        tokens = out[:, getattr(model, "num_prefix_tokens", 0):]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        out = out.permute(0, 3, 1, 2)
    return out


def _create_timm_model(model_name: str, img_size: Optional[int], model_kwargs: Optional[dict]) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, num_classes=0, ...)``; ``img_size`` is
    passed to models that take it (ViTs) and left to the input size for the others (CNNs)."""
    import timm
    from timm.models import split_model_name_tag

    arch = split_model_name_tag(model_name)[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ValueError(f"unknown timm model {model_name!r}" + (f"; did you mean {close}?" if close else ""))
    kwargs = dict(model_kwargs or {})
    if kwargs.pop("pretrained", False):
        raise ValueError(f"timm model {model_name!r}: pretrained=True would download weights; "
                         "give a local `checkpoint=` file instead")
    kwargs.setdefault("num_classes", 0)
    if img_size is None:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    try:
        return timm.create_model(model_name, pretrained=False, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(model_name, pretrained=False, **kwargs)  # a CNN: any input size


def _load_timm_checkpoint(model: nn.Module, path: str, key: str, what: str) -> None:
    """A timm-format state dict, an open_clip one whose tower is a timm trunk (``visual.trunk.*``),
    or an original release the model's ``checkpoint_filter_fn`` converts (e.g. Meta's DINOv2)."""
    sd = _read_weights(path, key)
    trunk = "visual.trunk."
    if any(k.startswith(trunk) for k in sd):
        sd = {k[len(trunk):]: v for k, v in sd.items() if k.startswith(trunk)}
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    _load_into(model, sd, path, what)


@MASK_ENCODERS.register_module()
class TimmEncoder(MaskEncoder):
    """A frozen timm model as a mask encoder (SigLIP, DINOv2, ConvNeXt, ...; spec §2.4 B).

    Args:
        model_name: any timm name (``vit_so400m_patch14_siglip_384``, ``vit_large_patch14_dinov2``,
            ``convnext_xxlarge``, optionally with a pretrained tag such as
            ``convnext_base.clip_laion2b``, which only selects the default mean/std). Always built
            with ``pretrained=False`` and ``num_classes=0``.
        checkpoint: local weights (``.safetensors`` / ``.pth`` / ``.bin``): a timm state dict, an
            open_clip state dict with a timm trunk, or a release the model's timm
            ``checkpoint_filter_fn`` converts. ``None`` keeps random weights (tiny scale).
        img_size: input size S. Passed to ViTs (``img_size``; position embeddings of a checkpoint are
            resampled by timm's filter); CNNs take any size. Default: the model's pretrained_cfg.
        model_kwargs: extra ``timm.create_model`` kwargs (tiny CPU versions: ``embed_dim``,
            ``depth``, ``num_heads``; ConvNeXt ``dims``, ``depths``).
        mean, std: normalisation (0-1 scale); default: the model's ``pretrained_cfg``.
        feature: ``'last'`` (``forward_features``: ViT tokens after the final norm without the
            cls/register tokens, reshaped to the grid; a CNN's last stage) or a block/stage index
            (``forward_intermediates``, un-normed).
        config_key: this encoder's dotted config path, used in error messages.
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: Optional[str] = None,
        img_size: Optional[int] = None,
        model_kwargs: Optional[dict] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        feature: Union[str, int] = "last",
        config_key: str = "mask_encoder",
    ) -> None:
        super().__init__()
        _require_file(checkpoint, f"{config_key}.checkpoint",
                      f"checkpoints/{model_name.split('.')[0]}/model.safetensors")
        self.model_name = model_name
        self.feature = _check_feature(feature)
        self.model = _create_timm_model(model_name, img_size, model_kwargs)
        what = f"timm model {model_name!r}"
        if checkpoint is not None:
            _load_timm_checkpoint(self.model, checkpoint, f"{config_key}.checkpoint", what)
        cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        self.input_size = int(img_size if img_size is not None else cfg.get("input_size", (3, 224, 224))[-1])
        self.mean = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406))))
        self.std = tuple(float(v) for v in (std if std is not None else cfg.get("std", (0.229, 0.224, 0.225))))
        self.out_channels, self.grid, stride = _timm_feature_shape(self.model, self.input_size, self.feature, what)
        self.coverage = (self.grid[0] * stride[0] / self.input_size, self.grid[1] * stride[1] / self.input_size)
        self._freeze()

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _timm_feature_map(self.model, pixels, self.feature, self.grid)


def _open_clip_config(model_name: str) -> dict:
    import open_clip

    if model_name.startswith("hf-hub:"):
        raise ValueError(f"open_clip model {model_name!r}: hf-hub names download; use a built-in name, "
                         "'local-dir:/path' or `model_cfg=` with a local `checkpoint=`")
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        raise ValueError(f"unknown open_clip model {model_name!r}" + (f"; did you mean {close}?" if close else ""))
    return copy.deepcopy(cfg)


def _open_clip_default_norm(model_name: Optional[str], cfg: dict) -> tuple[tuple, tuple]:
    """mean/std from the config's ``preprocess_cfg``, else the model's pretrained tags when they all
    agree (metadata only, nothing is fetched), else OpenAI CLIP's."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pre = cfg.get("preprocess_cfg") or {}
    if "mean" in pre and "std" in pre:
        return tuple(pre["mean"]), tuple(pre["std"])
    if model_name:
        import open_clip

        norms = {(tuple(c.get("mean", OPENAI_DATASET_MEAN)), tuple(c.get("std", OPENAI_DATASET_STD)))
                 for c in (open_clip.get_pretrained_cfg(model_name, t)
                           for t in open_clip.list_pretrained_tags_by_model(model_name))}
        if len(norms) == 1:
            return norms.pop()
    return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)


def _build_open_clip_visual(embed_dim: int, vision_cfg: dict, quick_gelu: bool) -> nn.Module:
    """The vision tower only (the text tower of e.g. ConvNeXt-XXL CLIP would be ~350M unused params)."""
    try:
        from open_clip.model import _build_vision_tower
    except ImportError:  # an open_clip without the helper: build a CLIP with a 1-layer text tower, keep .visual
        from open_clip.model import CLIP

        text_cfg = dict(context_length=2, vocab_size=2, width=8, heads=1, layers=1)
        return CLIP(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu).visual
    return _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu)


@MASK_ENCODERS.register_module()
class OpenClipEncoder(MaskEncoder):
    """A frozen open_clip vision tower as a mask encoder (OpenAI CLIP ViT-L/14-336, ConvNeXt-XXL
    CLIP; spec §2.4 B).

    Only the vision tower is built (from ``open_clip.get_model_config(model_name)`` or
    ``model_cfg``, always without pretrained weights). Feature maps: an open_clip ViT's spatial
    tokens (block output, class token dropped, reshaped to the grid; ``'last'`` applies ``ln_post``
    as open_clip does to its output tokens, the projection is not applied); a timm-trunk tower
    (ConvNeXt-CLIP) uses the trunk's ``forward_features``, as the groundLMM wrappers do (§2.4 B).

    Args:
        model_name: an open_clip model name (``ViT-L-14-336-quickgelu``, ``convnext_xxlarge``) or
            ``local-dir:/path`` (a folder with ``open_clip_config.json``).
        model_cfg: instead of a name, an open_clip model config dict (``embed_dim``, ``vision_cfg``,
            optional ``quick_gelu``, ``preprocess_cfg``): tiny CPU versions.
        checkpoint: local open_clip weights (``open_clip_pytorch_model.bin`` /
            ``open_clip_model.safetensors``: ``visual.*`` keys are used, the text tower is ignored)
            or a vision-tower-only state dict. OpenAI's TorchScript ``.pt`` files are not read
            (use the open_clip-format export of the same weights).
        img_size: input size S, overriding ``vision_cfg['image_size']`` (ViT position embeddings of a
            checkpoint are resized; ConvNeXt-CLIP at 1024 for a 32 x 32 grid, §2.4 B).
        mean, std: normalisation; default: ``preprocess_cfg``, else the model's pretrained tags, else
            OpenAI CLIP's.
        feature: ``'last'`` or a block/stage index (e.g. ``-2``, LLaVA's penultimate layer).
        config_key: this encoder's dotted config path, used in error messages.
    """

    def __init__(
        self,
        model_name: Optional[str] = None,
        model_cfg: Optional[dict] = None,
        checkpoint: Optional[str] = None,
        img_size: Optional[int] = None,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        feature: Union[str, int] = "last",
        config_key: str = "mask_encoder",
    ) -> None:
        super().__init__()
        if (model_name is None) == (model_cfg is None):
            raise ValueError(f"{config_key}: give exactly one of `model_name` (an open_clip name) or "
                             f"`model_cfg` (an open_clip config dict); got model_name={model_name!r}, "
                             f"model_cfg={'set' if model_cfg is not None else None}")
        _require_file(checkpoint, f"{config_key}.checkpoint",
                      f"checkpoints/{model_name or 'clip'}/open_clip_pytorch_model.bin")
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        self.model_name = model_name
        self.feature = _check_feature(feature)
        cfg = _open_clip_config(model_name) if model_name is not None else copy.deepcopy(dict(model_cfg))
        if "vision_cfg" not in cfg or "embed_dim" not in cfg:
            raise ValueError(f"{config_key}.model_cfg needs 'embed_dim' and 'vision_cfg' (open_clip's config "
                             f"layout); got keys {sorted(cfg)}")
        vision_cfg = dict(cfg["vision_cfg"])
        if img_size is not None:
            vision_cfg["image_size"] = img_size
        vision_cfg["timm_model_pretrained"] = False  # never download
        what = f"open_clip vision tower {model_name or 'model_cfg'!r}"
        self.visual = _build_open_clip_visual(int(cfg["embed_dim"]), vision_cfg, bool(cfg.get("quick_gelu", False)))
        if checkpoint is not None:
            self._load(checkpoint, f"{config_key}.checkpoint", what)

        size = vision_cfg.get("image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if size[0] != size[1]:
            raise ValueError(f"{what}: image_size {list(size)} is not square; the mask geometry needs S x S")
        self.input_size = int(size[0])
        if isinstance(self.visual, VisionTransformer):
            self._kind = "vit"
            patch = tuple(self.visual.patch_size)
            n_blocks = len(self.visual.transformer.resblocks)
            if isinstance(self.feature, int) and not -n_blocks <= self.feature < n_blocks:
                raise ValueError(f"{what}: feature={self.feature} is out of range for {n_blocks} blocks")
            self.out_channels = int(self.visual.transformer.width)
            self.grid = (self.input_size // patch[0], self.input_size // patch[1])
            stride = patch
        elif isinstance(self.visual, TimmModel):
            self._kind = "timm"
            self.out_channels, self.grid, stride = _timm_feature_shape(
                self.visual.trunk, self.input_size, self.feature, what)
        else:
            raise TypeError(f"{what}: vision tower {type(self.visual).__name__} is not supported "
                            "(expected an open_clip VisionTransformer or a timm trunk)")
        self.coverage = (self.grid[0] * stride[0] / self.input_size, self.grid[1] * stride[1] / self.input_size)
        default_mean, default_std = _open_clip_default_norm(model_name, cfg)
        self.mean = tuple(float(v) for v in (mean if mean is not None else default_mean))
        self.std = tuple(float(v) for v in (std if std is not None else default_std))
        self._freeze()

    def _load(self, path: str, key: str, what: str) -> None:
        sd = _read_weights(path, key)
        if any(k.startswith("visual.") for k in sd):
            sd = {k: v for k, v in sd.items() if k.startswith("visual.")}
            from types import SimpleNamespace

            from open_clip.model import resize_pos_embed

            resize_pos_embed(sd, SimpleNamespace(visual=self.visual))  # in place, ViTs only
            sd = {k[len("visual."):]: v for k, v in sd.items()}
        _load_into(self.visual, sd, path, what)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._kind == "timm":
            return _timm_feature_map(self.visual.trunk, pixels, self.feature, self.grid)
        visual = self.visual
        if self.feature == "last":
            norm = visual.attn_pool is None and not visual.final_ln_after_pool
            out = visual.forward_intermediates(pixels, indices=1, normalize_intermediates=norm,
                                               intermediates_only=True)
        else:
            out = visual.forward_intermediates(pixels, indices=[self.feature], intermediates_only=True)
        return out["image_intermediates"][0]


def sincos_position_map(channels: int, grid: int, max_frequency: Optional[float] = None) -> torch.Tensor:
    """``[channels, grid, grid]`` fixed 2-D sinusoidal position map (spec §2.4 B, [GUESS] on the form).

    Channel blocks of ``K = channels / 4``: ``sin(2 pi f_k y)``, ``cos(2 pi f_k y)``,
    ``sin(2 pi f_k x)``, ``cos(2 pi f_k x)`` with ``y = (row + 0.5) / grid`` and
    ``x = (col + 0.5) / grid`` cell centres in ``(0, 1)`` of the square frame, and frequencies
    ``f_k`` log-spaced from 1 period per frame (``f_0 = 1``: unique on the circle, survives the
    averaging of large masks) to ``max_frequency`` (default ``grid / 4``: at least 4 cells a period,
    no aliasing on the grid).
    """
    if channels % 4 or channels <= 0:
        raise ValueError(f"position encoding channels={channels} must be a positive multiple of 4")
    if grid < 1:
        raise ValueError(f"position encoding grid={grid} must be >= 1")
    k = channels // 4
    top = max(1.0, float(max_frequency) if max_frequency is not None else grid / 4.0)
    freqs = top ** (torch.arange(k, dtype=torch.float64) / max(k - 1, 1))
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    angles = 2 * math.pi * freqs[:, None] * centres[None, :]  # [K, grid]
    y = torch.cat([angles.sin(), angles.cos()])[:, :, None].expand(2 * k, grid, grid)
    x = torch.cat([angles.sin(), angles.cos()])[:, None, :].expand(2 * k, grid, grid)
    return torch.cat([y, x]).float()


@MASK_ENCODERS.register_module()
class PositionEncoding(MaskEncoder):
    """The fixed 2-D sinusoidal map treated as a fifth encoder (spec §2.4 B): pooled inside a mask,
    it encodes where the mask lies in the image. Needs no pixels (``preprocess`` returns a
    ``[B, 3, 0, 0]`` placeholder) but uses the same geometry, so masks map exactly as for the others.

    Args:
        channels: map channels (multiple of 4; the spec suggests 256 or 2 x 64, [GUESS]).
        grid: the map is ``grid x grid`` over the square frame.
        max_frequency: highest frequency in periods per frame (default ``grid / 4``).
    """

    input_size = 0

    def __init__(self, channels: int = 64, grid: int = 16, max_frequency: Optional[float] = None,
                 config_key: str = "mask_encoder") -> None:
        super().__init__()
        self.register_buffer("pos", sincos_position_map(channels, grid, max_frequency), persistent=False)
        self.out_channels = int(channels)
        self.grid = (int(grid), int(grid))
        self._freeze()

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[MaskGeometry]]:
        geometry = square_geometry(images)
        return torch.zeros(len(geometry), 3, 0, 0, device=self.device, dtype=self.pos.dtype), geometry

    def _weight_dtype(self) -> torch.dtype:
        return self.pos.dtype

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pos[None].expand(pixels.shape[0], -1, -1, -1)


# ------------------------------------------------------------------------------------ the tokenizer
@dataclass
class ImageMaskFeatures:
    """Frozen encoder outputs of a batch of images, computed once and reused for every mask.

    Attributes:
        maps: ``maps[i][e]`` is image ``i``'s ``[C_e, h_e, w_e]`` feature map from encoder ``e``.
        geometry: ``geometry[i]`` maps image ``i``'s masks into the encoders' frame.
    """

    maps: list[list[torch.Tensor]]
    geometry: list[MaskGeometry]

    def __len__(self) -> int:
        return len(self.geometry)


def _accepts(cls: Any, name: str) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@MASK_ENCODERS.register_module()
class MaskTokenizer(nn.Module):
    """Frozen encoder ensemble + mask pooling + trainable mask projector: one token per mask
    (spec anchorseg_ras.md §2.2 module 3, §2.4 B-D). Candidate and reference masks share it (§2.2).

    Args:
        encoders: encoder configs (``MASK_ENCODERS`` types, or built modules), concatenated in this
            order (§2.4 D: CLIP, SigLIP, ConvNeXt-CLIP, DINOv2, position).
        out_dim: LMM width. ``None`` leaves the projector unbuilt until the head calls
            :meth:`build_projector` with the LMM's hidden size.
        hidden_dim: projector hidden width (default ``out_dim``: LLaVA's ``mlp2x_gelu``, §2.4 D).
        norm: per-encoder normalisation of the pooled vector before concatenation (§2.4 C,
            [GUESS]): ``'layernorm'`` (default; **without** affine parameters: a per-channel scale and
            shift before a Linear are redundant with it, so only the projector trains, as in RAS
            stage 1, §2.2), ``'l2'`` or ``None``.
        empty, resize, binarize: pooling rules, see :func:`masked_average_pool`.
        encode_batch_size: images per encoder forward in :meth:`encode_images`.
        config_key: dotted config path of this tokenizer, for error messages (encoder ``i`` is
            ``{config_key}.encoders[i]``); the candidate-pool mask source passes its own.
    """

    def __init__(
        self,
        encoders: Sequence[Union[dict, nn.Module]],
        out_dim: Optional[int] = None,
        hidden_dim: Optional[int] = None,
        norm: Optional[str] = "layernorm",
        empty: str = "centroid",
        resize: str = "bilinear",
        binarize: bool = False,
        encode_batch_size: int = 8,
        config_key: str = "model.mask_source.tokenizer",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"{config_key}.norm={norm!r}: expected one of {NORMS}")
        if empty not in EMPTY_RULES:
            raise ValueError(f"{config_key}.empty={empty!r}: expected one of {EMPTY_RULES}")
        if resize not in RESIZE_MODES:
            raise ValueError(f"{config_key}.resize={resize!r}: expected one of {RESIZE_MODES}")
        if not encoders:
            raise ValueError(f"{config_key}.encoders is empty; expected at least one encoder config")
        if encode_batch_size < 1:
            raise ValueError(f"{config_key}.encode_batch_size={encode_batch_size}: expected >= 1")
        self.norm = norm
        self.empty = empty
        self.resize = resize
        self.binarize = bool(binarize)
        self.encode_batch_size = int(encode_batch_size)
        self.config_key = config_key
        self.hidden_dim = hidden_dim
        self._check_checkpoints(encoders)  # every missing file at once, before any model is built
        self.encoders = nn.ModuleList(self._build_encoder(cfg, i) for i, cfg in enumerate(encoders))
        self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self.register_module("projector", None)
        self.out_dim: Optional[int] = None
        if out_dim is not None:
            self.build_projector(out_dim)

    # ------------------------------------------------------------------ construction
    def _check_checkpoints(self, encoders: Sequence[Union[dict, nn.Module]]) -> None:
        missing = []
        for i, cfg in enumerate(encoders):
            path = cfg.get("checkpoint") if isinstance(cfg, dict) else None
            if path is not None and not Path(path).expanduser().is_file():
                key = f"{self.config_key}.encoders[{i}].checkpoint"
                missing.append(f"{str(Path(path).expanduser())!r} (config key {key})")
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} mask-encoder checkpoint(s) not found: " + "; ".join(missing)
                + ". reseg never downloads weights; point each key at a local file, e.g. --cfg-options "
                f"{self.config_key}.encoders.0.checkpoint=/data/checkpoints/...")

    def _build_encoder(self, cfg: Union[dict, nn.Module], index: int) -> nn.Module:
        if isinstance(cfg, nn.Module):
            enc = cfg
        else:
            if not isinstance(cfg, dict) or "type" not in cfg:
                raise TypeError(f"{self.config_key}.encoders[{index}] must be a dict with a 'type' or a module, "
                                f"got {cfg!r}")
            cfg = dict(cfg)
            typ = cfg["type"]
            cls = MASK_ENCODERS.get(typ) if isinstance(typ, str) else typ
            if cls is MaskTokenizer:
                raise TypeError(f"{self.config_key}.encoders[{index}] is a MaskTokenizer; expected an encoder")
            if "config_key" not in cfg and _accepts(cls, "config_key"):
                cfg["config_key"] = f"{self.config_key}.encoders[{index}]"
            enc = MASK_ENCODERS.build(cfg)
        for attr in ("out_channels", "grid", "preprocess"):
            if not hasattr(enc, attr):
                raise TypeError(f"{self.config_key}.encoders[{index}] ({type(enc).__name__}) has no `{attr}`; "
                                "mask encoders follow reseg.models.mask_sources.mask_tokenizer.MaskEncoder")
        enc.requires_grad_(False)  # frozen in every stage (§2.2), even a plugin's encoder
        enc.eval()
        return enc

    def build_projector(self, out_dim: int) -> nn.Module:
        """Create the mask projector ``Linear(feature_dim -> hidden) -> GELU -> Linear(hidden -> out_dim)``
        (§2.4 D, ``hidden = hidden_dim or out_dim``). A no-op returning the existing projector when it
        was built for the same ``out_dim``; a different ``out_dim`` is an error (the trained weights
        would be silently dropped)."""
        out_dim = int(out_dim)
        if self.projector is not None:
            if out_dim == self.out_dim:
                return self.projector
            raise ValueError(f"{self.config_key}: the mask projector was built for out_dim={self.out_dim}; "
                             f"build_projector({out_dim}) would replace it (set out_dim to the LMM width)")
        hidden = int(self.hidden_dim or out_dim)
        self.projector = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        self.projector.to(device=self._anchor.device, dtype=self._anchor.dtype)
        self.out_dim = out_dim
        return self.projector

    def train(self, mode: bool = True) -> "MaskTokenizer":
        super().train(mode)
        for enc in self.encoders:  # a plugin encoder without MaskEncoder's override stays frozen too
            enc.eval()
        return self

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def encoder_channels(self) -> list[int]:
        """``C_e`` of each encoder, in concatenation order."""
        return [int(enc.out_channels) for enc in self.encoders]

    @property
    def feature_dim(self) -> int:
        """Width of the concatenated pooled vector, ``sum_e C_e`` (6528 for the §2.4 D set)."""
        return sum(self.encoder_channels)

    # ------------------------------------------------------------------ images and masks
    @torch.no_grad()
    def encode_images(self, images: Sequence[ImageLike]) -> ImageMaskFeatures:
        """Run every frozen encoder once per image (batched by ``encode_batch_size``).

        Args:
            images: ``[H, W, 3]`` uint8 RGB arrays (numpy or torch) at their original sizes.
        Returns:
            :class:`ImageMaskFeatures` with ``maps[i][e]`` ``[C_e, h_e, w_e]`` on this module's device.
        """
        geometry = square_geometry(images)
        maps: list[list[torch.Tensor]] = [[] for _ in geometry]
        for enc in self.encoders:
            for start in range(0, len(geometry), self.encode_batch_size):
                pixels, _ = enc.preprocess(images[start:start + self.encode_batch_size])
                fmap = enc(pixels)
                for j in range(fmap.shape[0]):
                    maps[start + j].append(fmap[j].to(self.device))
        return ImageMaskFeatures(maps=maps, geometry=geometry)

    @torch.no_grad()
    def pool(self, feats: ImageMaskFeatures, index: int, masks: MaskLike) -> torch.Tensor:
        """Pooled, normalised, concatenated features of image ``index``'s masks (§2.4 C-D).

        Args:
            feats: from :meth:`encode_images`.
            index: which image of ``feats``.
            masks: ``[M, H, W]`` bool (or 0/1 float) at that image's original size (candidates or
                reference masks alike).
        Returns:
            ``[M, feature_dim]`` float32 on this module's device (no gradient; the projector is where
            training starts). An empty mask gives zeros; so does, for one encoder, a mask lying
            wholly in the strip its grid never sees (``coverage`` < 1, e.g. SigLIP-384's last 6 px).
        """
        if not 0 <= index < len(feats):
            raise IndexError(f"image index {index} out of range for {len(feats)} encoded images")
        geom = feats.geometry[index]
        m = masks if isinstance(masks, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(masks))
        if m.dim() != 3 or tuple(m.shape[1:]) != tuple(geom.image_size):
            raise ValueError(f"masks of image {index} have shape {list(m.shape)}; expected [M, "
                             f"{geom.image_size[0]}, {geom.image_size[1]}] (the image's original size)")
        if m.shape[0] == 0:
            return torch.zeros(0, self.feature_dim, device=self.device)
        chunk = max(1, _CHUNK_PIXELS // (geom.side * geom.side))
        out = []
        for start in range(0, m.shape[0], chunk):
            part = m[start:start + chunk].to(self.device)
            frames: dict[tuple[int, int], torch.Tensor] = {}
            weights: dict[tuple, torch.Tensor] = {}  # encoders with the same frame and grid share them
            pooled = []
            for e, enc in enumerate(self.encoders):
                coverage = tuple(getattr(enc, "coverage", (1.0, 1.0)))
                ext = geom.extent(coverage)
                if ext not in frames:
                    frames[ext] = geom.frame(part, coverage)
                fmap = feats.maps[index][e]
                key = (ext, tuple(fmap.shape[-2:]))
                if key not in weights:
                    weights[key] = pooling_weights(frames[ext], key[1], empty=self.empty, resize=self.resize,
                                                   binarize=self.binarize)
                pooled.append(self._normalise(pool_with_weights(fmap, weights[key])))
            out.append(torch.cat(pooled, 1))
        return torch.cat(out, 0)

    def _normalise(self, v: torch.Tensor) -> torch.Tensor:
        if self.norm == "layernorm":
            return F.layer_norm(v, v.shape[-1:])
        if self.norm == "l2":
            return F.normalize(v, dim=-1)
        return v

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[M, feature_dim]`` pooled features -> ``[M, out_dim]`` mask tokens (the trainable projector)."""
        if self.projector is None:
            raise RuntimeError(f"{self.config_key}: the mask projector is not built; set out_dim or call "
                               "build_projector(lmm_hidden_size) first (the head does once it knows the LMM)")
        if pooled.shape[-1] != self.feature_dim:
            raise ValueError(f"pooled features have width {pooled.shape[-1]}; expected feature_dim "
                             f"{self.feature_dim} ({' + '.join(map(str, self.encoder_channels))})")
        weight = self.projector[0].weight
        return self.projector(pooled.to(device=weight.device, dtype=weight.dtype))


# ------------------------------------------------------------------------------------ tiny presets
