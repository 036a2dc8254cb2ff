"""Mask sources: the SAM decoder (:mod:`.sam`) and candidate pools (:mod:`.pool`: proposers + mask tokenizer)."""
from .pool import CandidatePoolSource, PoolBatch
from .sam import SAMMaskSource, build_sam

__all__ = ["CandidatePoolSource", "PoolBatch", "SAMMaskSource", "build_sam"]
