"""What every reseg loader shares: ``len``/``getitem`` over images, ``metainfo``, ``info``, sampling RNG.

mmengine's ``ConcatDataset`` (used by the configs to mix sources) requires every dataset it wraps to have
a ``full_init()`` and a ``metainfo`` whose keys *and values* are equal across the datasets. reseg's
loaders therefore share one :data:`RESEG_METAINFO`; what differs per dataset (name, split, counts,
classes) is in :attr:`ResegDataset.info`.
"""
from __future__ import annotations

import copy
import random
from typing import Any

from reseg.structures import Sample

#: The ``metainfo`` of every reseg loader (identical across loaders; see the module docstring).
RESEG_METAINFO: dict[str, Any] = {
    "platform": "reseg",
    "sample_type": "reseg.structures.Sample",
    "mask_format": "instance masks [n, H, W] bool at the original image size",
}


class ResegDataset:
    """Base class: one item per image, each a :class:`reseg.structures.Sample`.

    Args:
        test_mode: evaluation mode (deterministic, every query) vs training mode (sampled queries).
        seed: seed of this dataset's own RNG for training-time sampling, for reproducible
            single-process use (tests, debugging). ``None`` (default, use it for training) draws from
            Python's global :mod:`random`, which mmengine seeds per dataloader worker.
    """

    #: mmengine-style class metainfo.
    METAINFO: dict[str, Any] = RESEG_METAINFO

    def __init__(self, test_mode: bool = False, seed: int | None = None) -> None:
        self.test_mode = bool(test_mode)
        self.seed = seed
        self._own_rng: random.Random | None = random.Random(seed) if seed is not None else None
        self.info: dict[str, Any] = {}

    @property
    def _rng(self) -> Any:
        """The RNG of training-time sampling: this dataset's own, or the global :mod:`random`."""
        return self._own_rng if self._own_rng is not None else random

    @property
    def metainfo(self) -> dict[str, Any]:
        """A copy of :data:`RESEG_METAINFO` (kept equal across loaders for mmengine's ConcatDataset)."""
        return copy.deepcopy(self.METAINFO)

    def full_init(self) -> None:
        """Annotations are loaded in ``__init__``; present for mmengine's dataset wrappers."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_with_rng(self, index: int, rng: random.Random) -> Sample:
        """``self[index]`` with the training-time sampling drawn from ``rng`` instead of the dataset's RNG.

        :class:`~reseg.datasets.mixed.MixedDataset` passes an RNG derived from its own index, so a
        mixed item is the same whichever worker loads it. Not thread-safe (workers are processes).
        """
        saved = self._own_rng
        self._own_rng = rng
        try:
            return self[index]
        finally:
            self._own_rng = saved

    def _check_index(self, index: int) -> int:
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{type(self).__name__} index {index} out of range (len {n})")
        return i

    def __repr__(self) -> str:
        keys = ("dataset", "split", "num_images")
        parts = ", ".join(f"{k}={self.info[k]!r}" for k in keys if k in self.info)
        return f"{type(self).__name__}({parts}, test_mode={self.test_mode})"
