"""The square frame every mask encoder and every mask share (one geometry rule for all encoders).

An image of size ``(H, W)`` is placed at the top-left corner of a ``L x L`` square,
``L = max(H, W)``; the rest is padding filled with the encoder's mean colour (zero after
normalisation, as LLaVA-1.5's ``expand2square`` pads with the mean, but anchored top-left like SAM
so no offset arithmetic is needed). Each encoder resizes that square to its own input size
``S x S`` (:func:`square_pixels`). A mask at the original size is mapped into the same frame by
zero-padding it bottom/right to ``L x L`` (:class:`MaskGeometry`), so mask and feature map always
agree, whatever ``S`` and grid each encoder has. When an encoder's grid does not tile all of ``S``
(SigLIP-384 with 14-px patches sees 27 x 14 = 378 of 384 px) the mask frame is cropped to the seen
part (``coverage``) before pooling.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ImageLike = np.ndarray | torch.Tensor


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
