"""Mixing training sources by rate, as LISA's ``HybridDataset`` does (spec seg_token_family.md §1.7).

``MixedDataset(datasets=[sem_seg, refer_seg, vqa, reason_seg], rates=[9, 3, 3, 1], length=N)``: item
``i`` draws a source with probability proportional to its rate (9/16, 3/16, 3/16, 1/16), then a
sub-dataset of the source uniformly (a source may be a list of datasets, like LISA's
``refer_seg = refclef || refcoco || refcoco+ || refcocog``), then a uniformly random item of it.

Reproducible and worker-safe: the draws of item ``i`` come from a ``numpy`` generator seeded by
``(seed, epoch, i)``, and so does the sub-dataset's own training-time sampling (which refs and
sentences are asked) when it is a :class:`~reseg.datasets.base.ResegDataset`. ``ds[i]`` is therefore
the same in every process and on every call. ``seed=None`` takes the seed from mmengine's seeding
(:func:`mmengine.dist.sync_random_seed`, i.e. numpy's global state, which the Runner seeds from
``randomness=dict(seed=...)``, and broadcast to every rank).

How many distinct draws a run sees: ``length`` is the epoch length. With mmengine's
``InfiniteSampler`` (iteration-based training) indices repeat every ``length`` items, so set
``length`` to the number of items the run consumes (``max_iters * batch_size * world_size``) for
fresh draws throughout. With epoch-based training, :meth:`MixedDataset.set_epoch` changes the
draws; it reaches the workers when they are re-created each epoch (``persistent_workers=False``).
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from reseg.datasets.base import ResegDataset
from reseg.registry import DATASETS
from reseg.structures import Sample

DatasetLike = dict | Any


def _build(cfg: DatasetLike, where: str) -> Any:
    if isinstance(cfg, dict):
        return DATASETS.build(cfg)
    if hasattr(cfg, "__getitem__") and hasattr(cfg, "__len__"):
        return cfg
    raise TypeError(f"{where}: expected a dataset config (dict) or a dataset, got {type(cfg).__name__}")


def _name(ds: Any) -> str:
    info = getattr(ds, "info", None)
    if isinstance(info, dict) and "dataset" in info:
        split = info.get("split")
        return f"{info['dataset']}|{split}" if split is not None else str(info["dataset"])
    return type(ds).__name__


@DATASETS.register_module()
class MixedDataset(ResegDataset):
    """Training data drawn from several sources by rate (LISA's ``HybridDataset``, spec §1.7).

    Args:
        datasets: one entry per source: a dataset config (dict), a dataset, or a list of those
            (a source made of several sub-datasets, one drawn uniformly per item, as LISA does).
        rates: relative source probabilities (non-negative, not all 0); ``None``: equal.
        length: the number of items per epoch; ``None``: the total length of all sub-datasets.
        seed: base seed of the draws; ``None``: from mmengine's seeding (see the module docstring).

    ``metainfo`` is that of the sub-datasets, which must all be equal (the rule of mmengine's
    ``ConcatDataset``; every reseg loader has :data:`~reseg.datasets.base.RESEG_METAINFO`), so a
    ``MixedDataset`` can itself be concatenated with reseg loaders. Each returned
    :class:`~reseg.structures.Sample` gets ``meta['mixed'] = dict(index, source, dataset, item)`` and
    ``meta['seed']``, the seed of the head's training-time choices (``BaseHead.sample_rng``).
    """

    def __init__(
        self,
        datasets: Sequence[DatasetLike | Sequence[DatasetLike]],
        rates: Sequence[float] | None = None,
        length: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(test_mode=False, seed=seed)
        if not datasets:
            raise ValueError("MixedDataset needs at least one source in 'datasets'")
        self.sources: list[list[Any]] = []
        for s, entry in enumerate(datasets):
            members = list(entry) if isinstance(entry, (list, tuple)) else [entry]
            if not members:
                raise ValueError(f"MixedDataset: source {s} is an empty list")
            self.sources.append([_build(m, f"MixedDataset source {s}[{j}]") for j, m in enumerate(members)])
        if rates is None:
            rates = [1.0] * len(self.sources)
        rates = [float(r) for r in rates]
        if len(rates) != len(self.sources):
            raise ValueError(f"MixedDataset: {len(rates)} rates for {len(self.sources)} sources")
        if any(not np.isfinite(r) or r < 0 for r in rates) or sum(rates) <= 0:
            raise ValueError(f"MixedDataset: rates must be finite, >= 0 and not all 0, got {rates}")
        for s, members in enumerate(self.sources):
            empty = [_name(d) for d in members if len(d) == 0]
            if empty and rates[s] > 0:
                raise ValueError(f"MixedDataset: source {s} has empty datasets {empty} (rate {rates[s]})")
        self.rates = rates
        self.probs = np.asarray(rates, dtype=np.float64) / sum(rates)
        self._metainfo = self._common_metainfo()
        total = sum(len(d) for members in self.sources for d in members)
        self.length = int(total if length is None else length)
        if self.length < 1:
            raise ValueError(f"MixedDataset: length must be >= 1, got {length}")
        if seed is None:
            from mmengine.dist import sync_random_seed

            seed = int(sync_random_seed())
        self.base_seed = int(seed)
        self.epoch = 0
        self.info = dict(
            dataset="mixed",
            sources=[[_name(d) for d in members] for members in self.sources],
            source_lengths=[[len(d) for d in members] for members in self.sources],
            rates=list(self.rates),
            probabilities=[round(float(p), 6) for p in self.probs],
            length=self.length,
            seed=self.base_seed,
        )

    def _common_metainfo(self) -> dict[str, Any]:
        flat = [(s, j, d) for s, members in enumerate(self.sources) for j, d in enumerate(members)]
        first = None
        for s, j, d in flat:
            meta = getattr(d, "metainfo", None)
            if not isinstance(meta, dict):
                raise TypeError(f"MixedDataset: source {s}[{j}] ({_name(d)}) has no metainfo dict")
            if first is None:
                first = meta
            elif meta != first:
                raise ValueError(
                    f"MixedDataset: the metainfo of source {s}[{j}] ({_name(d)}) differs from that of the "
                    f"first dataset (mmengine's ConcatDataset rule): {meta} != {first}"
                )
        return dict(first)

    @property
    def metainfo(self) -> dict[str, Any]:
        import copy

        return copy.deepcopy(self._metainfo)

    def set_epoch(self, epoch: int) -> None:
        """Change the draws of every index (see the module docstring for when workers see it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.base_seed, self.epoch, index]))

    def draw(self, index: int) -> tuple[int, int, int]:
        """``(source, dataset, item)`` that index ``index`` reads (nothing is loaded)."""
        i = self._check_index(index)
        return self._draw(self._generator(i))

    def _draw(self, rng: np.random.Generator) -> tuple[int, int, int]:
        source = int(rng.choice(len(self.sources), p=self.probs))
        members = self.sources[source]
        member = int(rng.integers(len(members)))
        item = int(rng.integers(len(members[member])))
        return source, member, item

    def __getitem__(self, index: int) -> Any:
        i = self._check_index(index)
        rng = self._generator(i)
        source, member, item = self._draw(rng)
        ds = self.sources[source][member]
        if isinstance(ds, ResegDataset):
            sample = ds.get_with_rng(item, random.Random(int(rng.integers(2**63))))
        else:
            sample = ds[item]
        if isinstance(sample, Sample):
            sample.meta["mixed"] = dict(index=i, source=source, dataset=member, item=item)
            # the seed of the head's own choices (BaseHead.sample_rng): keyed by (seed, epoch, index) too
            sample.meta["seed"] = int(rng.integers(2**63))
        return sample

    def __repr__(self) -> str:
        return (f"MixedDataset(sources={self.info['sources']}, rates={self.rates}, length={self.length}, "
                f"seed={self.base_seed})")
