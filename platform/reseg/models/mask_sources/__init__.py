"""Mask sources: the SAM decoder and candidate pools (proposers + mask tokenizer)."""
from .pool import CandidatePoolSource, PoolBatch
from .sam import SAMMaskSource, build_sam
from . import proposers  # noqa: F401  (registers the PROPOSERS: SAM automatic, mmdet, precomputed)
from . import mask_tokenizer  # noqa: F401  (registers the MASK_ENCODERS: MaskTokenizer, timm/open_clip encoders, position)

__all__ = ["CandidatePoolSource", "PoolBatch", "SAMMaskSource", "build_sam"]
