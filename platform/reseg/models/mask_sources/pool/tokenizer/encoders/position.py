"""The fixed 2-D sinusoidal position map as a fifth mask encoder (``anchorseg_ras.md`` §2.4 B)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from reseg.registry import MASK_ENCODERS

from ..geometry import ImageLike, MaskGeometry, square_geometry
from .base import MaskEncoder


def sincos_position_map(channels: int, grid: int, max_frequency: float | None = None) -> torch.Tensor:
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

    def __init__(self, channels: int = 64, grid: int = 16, max_frequency: float | None = None,
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
