"""Datasets: loaders for the real on-disk formats, the synthetic benchmark generator, batching.

Importing this package registers the loaders in :data:`reseg.registry.DATASETS` and the collate
function in :data:`reseg.registry.FUNCTIONS` (both registries list ``reseg.datasets`` as a location).
"""
from reseg.datasets.base import RESEG_METAINFO, ResegDataset
from reseg.datasets.collate import reseg_collate
from reseg.datasets.io import DatasetFormatError, UnknownSplitError
from reseg.datasets.reasonseg import ReasonSegDataset
from reseg.datasets.refer import RefCOCODataset
from reseg.datasets.safe_pickle import UnsafePickleError, dump_pickle, load_pickle

__all__ = [
    "RESEG_METAINFO",
    "ResegDataset",
    "RefCOCODataset",
    "ReasonSegDataset",
    "reseg_collate",
    "DatasetFormatError",
    "UnknownSplitError",
    "UnsafePickleError",
    "load_pickle",
    "dump_pickle",
]
