"""Batching reseg samples: a batch is the list of :class:`reseg.structures.Sample` objects, unchanged.

Images keep their original sizes and every sample carries its own number of queries, so nothing is
stacked here; the model's data preprocessor resizes and pads per branch (spec seg_token_family.md §1.5).
Configs name it ``collate_fn=dict(type='reseg_collate')``.

It also gives every sample without one a ``meta['seed']``, drawn from Python's :mod:`random` in the
process that loads the data (a dataloader worker, seeded by mmengine, or the main process). Heads draw
their training-time choices from it (``BaseHead.sample_rng``), so those choices are replayed with the
data when mmengine fast-forwards the dataloader on ``--resume``: a resumed run sees the same
conversations as an uninterrupted one. ``MixedDataset`` sets its own seed from ``(seed, epoch, index)``.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS

from reseg.registry import FUNCTIONS
from reseg.structures import Sample


@FUNCTIONS.register_module()
def reseg_collate(batch: Sequence[Sample]) -> dict[str, Any]:
    """``dict(samples=list[Sample])`` in the order of ``batch`` (checked to hold only samples, each
    given a ``meta['seed']`` if it has none; see the module docstring)."""
    samples = list(batch)
    for k, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise TypeError(
                f"reseg_collate expects reseg.structures.Sample items; item {k} is {type(s).__name__}"
            )
        if s.meta.get("seed") is None:
            s.meta["seed"] = random.getrandbits(63)
    return dict(samples=samples)


# mmengine's Runner.build_dataloader looks a string ``collate_fn`` type up in mmengine's *root*
# FUNCTIONS registry, without the default scope, so a registration in reseg's child registry alone is
# not found there ("the first argument must be callable"). Register the (reseg-prefixed) name in the
# root as well.
if MMENGINE_FUNCTIONS.module_dict.get("reseg_collate") is not reseg_collate:
    MMENGINE_FUNCTIONS.register_module(name="reseg_collate", module=reseg_collate, force=True)
