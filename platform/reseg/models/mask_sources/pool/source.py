"""The candidate-pool mask source: a proposer's masks, turned into one LMM token each.

A candidate-pool model (RAS, anchorseg_ras.md §2.2) does not decode masks; it selects from a pool.
This module glues the two registered parts of a candidate pool (docs/architecture.md, "Mask source"):

* where the pool comes from: the sample's own pool (``Sample.candidate_masks``: MaskGroups
  ``mask_pool`` RLE) or a **proposer** (``PROPOSERS``: SAM automatic masks, an mmdet detector, a pool
  file written once per dataset by ``tools/make_pools.py``, or a third-party plugin);
* how a mask becomes a token: a **mask tokenizer** (``MASK_ENCODERS``: frozen encoders, per-encoder
  mask pooling, an MLP projector into the LMM width).

:meth:`CandidatePoolSource.prepare` runs per batch, before the head builds its conversations (their
length depends on the pool size): it fills every sample's pool and runs the tokenizer's encoders
**once per image**; :meth:`CandidatePoolSource.candidate_embeddings` then pools and projects each
image's candidates once, however many queries the image has.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from reseg.registry import MASK_ENCODERS, MASK_SOURCES, PROPOSERS
from reseg.structures import Sample

#: Where the pool of a sample comes from (:class:`CandidatePoolSource` ``pool``).
POOL_MODES = ("auto", "dataset", "proposer")


@dataclass
class PoolBatch:
    """What :meth:`CandidatePoolSource.prepare` computed for a batch.

    Attributes:
        pools: per image, ``[N_i, H, W] bool`` candidates at the original size (on the model device).
        features: the tokenizer's per-image encoder features (``encode_images`` output).
        cache: per image, the projected candidate tokens once computed (:meth:`candidate_embeddings`).
    """

    pools: list[torch.Tensor]
    features: Any
    cache: dict[int, torch.Tensor] = field(default_factory=dict)


@MASK_SOURCES.register_module()
class CandidatePoolSource(nn.Module):
    """Candidate masks per image and their LMM tokens (mask-source kind ``"candidate_pool"``).

    Args:
        tokenizer: config of a ``MASK_ENCODERS`` mask tokenizer (``type='MaskTokenizer'``, its
            encoders, norm and projector); the projector's output width is set by the head from the
            LMM (:meth:`set_output_dim`).
        proposer: config of a ``PROPOSERS`` type, or None (the samples must carry their pools).
        pool: ``'auto'`` (default): the sample's own pool when it has one, else the proposer;
            ``'dataset'``: always the sample's pool (an error names a sample without one);
            ``'proposer'``: always the proposer, even when the dataset ships a pool.
        max_candidates: a cap on N after the proposer's own cap (None: no cap). A dataset pool is
            cut to its first ``max_candidates`` masks in the given order (anchorseg_ras.md §2.4 A).
    """

    kind = "candidate_pool"

    def __init__(self, tokenizer: dict, proposer: dict | None = None, pool: str = "auto",
                 max_candidates: int | None = None) -> None:
        super().__init__()
        if pool not in POOL_MODES:
            raise ValueError(f"model.mask_source.pool must be one of {POOL_MODES}, got {pool!r}")
        if pool == "proposer" and proposer is None:
            raise ValueError("model.mask_source.pool='proposer' needs model.mask_source.proposer=dict(type=...)")
        if max_candidates is not None and (isinstance(max_candidates, bool) or int(max_candidates) < 1):
            raise ValueError(f"model.mask_source.max_candidates must be an int >= 1 or None, got {max_candidates!r}")
        self.pool_mode = pool
        self.max_candidates = None if max_candidates is None else int(max_candidates)
        self.tokenizer = MASK_ENCODERS.build(tokenizer) if isinstance(tokenizer, dict) else tokenizer
        self.proposer = PROPOSERS.build(proposer) if isinstance(proposer, dict) else proposer

    # ------------------------------------------------------------------ setup
    def set_output_dim(self, dim: int) -> None:
        """Size the tokenizer's projector to the LMM width (called by the head's ``setup``)."""
        self.tokenizer.build_projector(int(dim))

    @property
    def device(self) -> torch.device:
        return self.tokenizer.device

    # ------------------------------------------------------------------ pools
    def _pool_of(self, sample: Sample) -> tuple[np.ndarray, str]:
        has = sample.candidate_masks is not None
        if self.pool_mode == "dataset" or (self.pool_mode == "auto" and has):
            if not has:
                raise ValueError(
                    f"sample {sample.sample_id!r} ({sample.meta.get('dataset', '?')}) has no candidate pool, but "
                    "model.mask_source.pool='dataset'. Give the dataset its pool (MaskGroups mask_pool) or set "
                    "model.mask_source.proposer (e.g. a PrecomputedProposer on a tools/make_pools.py file).")
            masks = np.asarray(sample.candidate_masks, dtype=bool)
            source = "dataset"
        else:
            if self.proposer is None:
                raise ValueError(
                    f"sample {sample.sample_id!r} ({sample.meta.get('dataset', '?')}) has no candidate pool and "
                    "model.mask_source.proposer is None: set a proposer (SAMAutomaticProposer, MMDetProposer, "
                    "PrecomputedProposer, ...) or use a dataset that ships pools.")
            props = self.proposer.propose(sample.image, dict(sample.meta))
            masks = np.asarray(props.masks, dtype=bool)
            source = type(self.proposer).__name__
        if masks.ndim != 3 or tuple(masks.shape[1:]) != sample.size:
            raise ValueError(
                f"sample {sample.sample_id!r}: the {source} pool is {tuple(masks.shape)}, expected [N, H, W] at "
                f"the image size {sample.size}")
        if self.max_candidates is not None:
            masks = masks[: self.max_candidates]
        return masks, source

    def prepare(self, samples: Sequence[Sample]) -> tuple[list[Sample], PoolBatch]:
        """Fill each sample's pool and run the tokenizer's encoders once per image.

        Returns copies of the samples whose ``candidate_masks`` is the pool actually used and whose
        ``meta['pool_source']`` says where it came from (the dataset's objects are not modified), and
        the :class:`PoolBatch`.
        """
        out: list[Sample] = []
        pools: list[torch.Tensor] = []
        dev = self.device
        for s in samples:
            masks, source = self._pool_of(s)
            out.append(dataclasses.replace(s, candidate_masks=masks, meta={**s.meta, "pool_source": source}))
            pools.append(torch.from_numpy(np.ascontiguousarray(masks)).to(dev))
        feats = self.tokenizer.encode_images([s.image for s in samples])
        return out, PoolBatch(pools=pools, features=feats)

    # ------------------------------------------------------------------ tokens
    def embed_masks(self, batch: PoolBatch, index: int, masks: Any) -> torch.Tensor:
        """``[M, D]`` LMM tokens of ``masks`` (``[M, H, W]`` at image ``index``'s original size)."""
        if isinstance(masks, np.ndarray):
            masks = torch.from_numpy(np.ascontiguousarray(masks.astype(bool)))
        masks = masks.to(self.device)
        if masks.shape[0] == 0:  # an empty pool: no tokens (the projector maps 0 rows to 0 rows)
            return self.tokenizer(torch.zeros(0, self.tokenizer.feature_dim, device=self.device))
        return self.tokenizer(self.tokenizer.pool(batch.features, index, masks))

    def candidate_embeddings(self, batch: PoolBatch, index: int) -> torch.Tensor:
        """``[N_i, D]`` tokens of image ``index``'s candidates, pooled and projected once per batch."""
        if index not in batch.cache:
            batch.cache[index] = self.embed_masks(batch, index, batch.pools[index])
        return batch.cache[index]
