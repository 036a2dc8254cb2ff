"""The mask-encoder contract (:class:`MaskEncoder`) and what every encoder shares: local checkpoints.

Encoders are frozen in every RAS stage (``anchorseg_ras.md`` §2.2): no trainable parameters, always
in eval mode, run under ``no_grad``. Weights are never downloaded: models are built with
``pretrained=False`` and a local ``checkpoint=`` file is loaded when given (a missing file is an
error naming it and its config key).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from ..geometry import ImageLike, MaskGeometry, square_geometry, square_pixels


def require_checkpoint_file(path: str | None, key: str, example: str) -> None:
    """Fail before any model is built when a configured checkpoint file is missing (a relative path
    is under the reseg root, :mod:`reseg.paths`)."""
    if path is None:
        return
    from reseg.paths import require_weights_file

    require_weights_file(path, key, example)


def read_weights(path: str, key: str) -> dict[str, torch.Tensor]:
    """The state dict of a local weights file (read safely; errors name ``key``), without the
    ``module.`` prefix a DDP-wrapped save adds."""
    from reseg.models.mask_sources.sam import load_state_dict_file

    sd = load_state_dict_file(path, key)
    if sd and all(k.startswith("module.") for k in sd):  # saved from a DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_weights_into(module: nn.Module, sd: dict[str, torch.Tensor], path: str, what: str) -> None:
    """Load ``sd`` into ``module``: a missing key is an error naming ``path`` and ``what``; keys the
    module does not use (a classifier, a text tower) only warn."""
    missing, unexpected = module.load_state_dict(sd, strict=False)
    if missing:
        raise RuntimeError(f"checkpoint {path!r} does not fit {what}: {len(missing)} missing keys "
                           f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if unexpected:  # e.g. a classifier or text tower the feature extractor does not use
        warnings.warn(f"checkpoint {path!r}: {len(unexpected)} keys not used by {what} "
                      f"(e.g. {unexpected[:3]})", stacklevel=3)


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
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
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

    def train(self, mode: bool = True) -> MaskEncoder:
        return super().train(False)  # always eval, whatever the segmentor's mode

    def preprocess(self, images: Sequence[ImageLike]) -> tuple[torch.Tensor, list[MaskGeometry]]:
        """``([B, 3, S, S] pixels, geometry per image)`` under the rule of :mod:`..geometry`."""
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


def check_feature(feature: Any) -> str | int:
    if feature == "last" or (isinstance(feature, int) and not isinstance(feature, bool)):
        return feature
    raise ValueError(f"feature={feature!r}: expected 'last' (the final, normed feature map) or a block/stage "
                     "index (negative counts from the end, e.g. -2 for LLaVA's penultimate CLIP layer)")
