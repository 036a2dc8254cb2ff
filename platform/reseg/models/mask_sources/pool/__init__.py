"""Candidate pools: a proposer's masks, each turned into one LMM token (docs/architecture.md, "Mask source").

* :mod:`.source`: :class:`CandidatePoolSource`, the mask source (kind ``candidate_pool``) that
  glues the two parts below for a pool-based head such as RAS;
* :mod:`.proposers`: where a pool comes from (``PROPOSERS``: SAM automatic masks, an mmdet
  detector, a pool file), and the pool file format;
* :mod:`.tokenizer`: how a mask becomes a token (``MASK_ENCODERS``: frozen encoders, mask
  pooling, the projector).

Masks in files are COCO RLE through :mod:`reseg.masks.rle`.
"""
from . import proposers, tokenizer  # noqa: F401  (registers the PROPOSERS and MASK_ENCODERS)
from .source import POOL_MODES, CandidatePoolSource, PoolBatch

__all__ = ["POOL_MODES", "CandidatePoolSource", "PoolBatch"]
