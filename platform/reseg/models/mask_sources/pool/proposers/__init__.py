"""Proposers: N candidate masks per image for pool-based heads such as RAS (docs/architecture.md, "Mask source").

* :mod:`.base`: the contract (:class:`BaseProposer`, :class:`Proposals`);
* :mod:`.postprocess`: :func:`postprocess_pool`, the clean-up every proposer runs;
* built-in proposers (registry :data:`reseg.registry.PROPOSERS`), one module each:
  :class:`SAMAutomaticProposer` (:mod:`.sam_automatic`), :class:`MMDetProposer`
  (:mod:`.mmdet_detector`, needs the ``mmdet`` extra) and :class:`PrecomputedProposer`
  (:mod:`.precomputed`);
* :mod:`.pool_file`: the pool file format ``tools/make_pools.py`` writes and
  :class:`PrecomputedProposer` reads.
"""
from .base import BaseProposer, Proposals, default_device
from .mmdet_detector import MMDET_INSTALL_HINT, MMDetProposer
from .pool_file import (
    POOL_FORMAT,
    POOL_VERSION,
    PoolFileError,
    PoolFileWriter,
    decode_pool,
    pool_line,
    read_pool_header,
)
from .postprocess import DEFAULT_MAX_CANDIDATES, DEFAULT_MIN_AREA, DEFAULT_NMS_IOU, POOL_ORDERS, postprocess_pool
from .precomputed import PrecomputedProposer
from .sam_automatic import SAM_AMG_DEFAULTS, SAMAutomaticProposer

__all__ = [
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_MIN_AREA",
    "DEFAULT_NMS_IOU",
    "MMDET_INSTALL_HINT",
    "POOL_FORMAT",
    "POOL_ORDERS",
    "POOL_VERSION",
    "SAM_AMG_DEFAULTS",
    "BaseProposer",
    "MMDetProposer",
    "PoolFileError",
    "PoolFileWriter",
    "PrecomputedProposer",
    "Proposals",
    "SAMAutomaticProposer",
    "decode_pool",
    "default_device",
    "pool_line",
    "postprocess_pool",
    "read_pool_header",
]
