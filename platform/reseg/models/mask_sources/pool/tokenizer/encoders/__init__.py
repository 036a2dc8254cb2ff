"""Frozen mask encoders (registry ``MASK_ENCODERS``), one module each, on the :class:`MaskEncoder` contract."""
from .base import MaskEncoder
from .open_clip_encoder import OpenClipEncoder
from .position import PositionEncoding, sincos_position_map
from .timm_encoder import TimmEncoder

__all__ = ["MaskEncoder", "OpenClipEncoder", "PositionEncoding", "TimmEncoder", "sincos_position_map"]
