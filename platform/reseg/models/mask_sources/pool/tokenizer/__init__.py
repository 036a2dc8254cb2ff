"""How a mask becomes an LMM token: frozen encoders, mask pooling in a shared frame, a projector.

* :mod:`.geometry`: the square frame images and masks share;
* :mod:`.pooling`: masked average pooling (pure functions);
* :mod:`.encoders`: the frozen encoders (timm, open_clip, position), one module each;
* :mod:`.tokenizer`: :class:`MaskTokenizer`, which runs them and owns the trainable projector.
"""
from .encoders import MaskEncoder, OpenClipEncoder, PositionEncoding, TimmEncoder, sincos_position_map
from .geometry import MaskGeometry, square_geometry, square_pixels
from .pooling import EMPTY_RULES, RESIZE_MODES, masked_average_pool, pool_with_weights, pooling_weights
from .tokenizer import NORMS, ImageMaskFeatures, MaskTokenizer

__all__ = [
    "EMPTY_RULES",
    "NORMS",
    "RESIZE_MODES",
    "ImageMaskFeatures",
    "MaskEncoder",
    "MaskGeometry",
    "MaskTokenizer",
    "OpenClipEncoder",
    "PositionEncoding",
    "TimmEncoder",
    "masked_average_pool",
    "pool_with_weights",
    "pooling_weights",
    "sincos_position_map",
    "square_geometry",
    "square_pixels",
]
