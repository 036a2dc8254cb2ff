"""The RAS mask tokenizer: one LMM token per mask (``anchorseg_ras.md`` §2.2 module 3, §2.4 B-D).

Pipeline, per image::

    image --preprocess--> pixels [B, 3, S, S] --frozen encoder--> feature map [B, C_e, h_e, w_e]
          (once per image and encoder, reused by every candidate and reference mask of that image)
    mask [H, W] --same geometry--> weights on each grid --masked_average_pool--> [C_e] per encoder
          --per-encoder norm--> concatenate [sum C_e] --projector (trainable MLP)--> [out_dim]

:class:`MaskTokenizer` builds the encoders (``MASK_ENCODERS``, :mod:`.encoders`), encodes images
once, pools masks in the shared square frame (:mod:`.geometry`, :mod:`.pooling`), and owns the
trainable mask projector (a LLaVA-style 2-layer MLP, §2.4 D).

``configs/_base_/models/ras_encoders_tiny.py`` is the CPU-sized, random-weight version of the §2.4 B
encoder set; the real set with local checkpoint paths is ``configs/_base_/models/ras_encoders_real.py``.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reseg.registry import MASK_ENCODERS

from .geometry import ImageLike, MaskGeometry, square_geometry
from .pooling import EMPTY_RULES, RESIZE_MODES, pool_with_weights, pooling_weights

#: Per-encoder normalisation of the pooled vector before concatenation (§2.4 C, [GUESS]).
NORMS = ("layernorm", "l2", None)

#: Masks are padded into the square frame in chunks of at most this many pixels (float32), so 100
#: masks of a 1024 x 1024 image never materialise 400 MB at once.
_CHUNK_PIXELS = 1 << 24

MaskLike = np.ndarray | torch.Tensor


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
        encoders: Sequence[dict | nn.Module],
        out_dim: int | None = None,
        hidden_dim: int | None = None,
        norm: str | None = "layernorm",
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
        self.out_dim: int | None = None
        if out_dim is not None:
            self.build_projector(out_dim)

    # ------------------------------------------------------------------ construction
    def _check_checkpoints(self, encoders: Sequence[dict | nn.Module]) -> None:
        from reseg.paths import missing_hint, resolve_path

        missing = []
        for i, cfg in enumerate(encoders):
            path = cfg.get("checkpoint") if isinstance(cfg, dict) else None
            if path is not None and not resolve_path(path).is_file():
                key = f"{self.config_key}.encoders[{i}].checkpoint"
                missing.append(f"{str(resolve_path(path))!r} (config key {key}){missing_hint(path)}")
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} mask-encoder checkpoint(s) not found: " + "; ".join(missing)
                + ". reseg never downloads weights; point each key at a local file, e.g. --cfg-options "
                f"{self.config_key}.encoders.0.checkpoint=/data/checkpoints/...")

    def _build_encoder(self, cfg: dict | nn.Module, index: int) -> nn.Module:
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
                                "mask encoders follow reseg.plugin_api.MaskEncoder")
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

    def train(self, mode: bool = True) -> MaskTokenizer:
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
