"""Datasets: loaders for the real on-disk formats, batching; the synthetic benchmark in :mod:`.synthref`.

Importing this package registers the loaders in :data:`reseg.registry.DATASETS` and the collate
function in :data:`reseg.registry.FUNCTIONS` (both registries list ``reseg.datasets`` as a location).

Loaders (task of their samples): :class:`RefCOCODataset` (``res``), :class:`GRefCOCODataset`
(``gres``), :class:`FPRefCOCODataset` (``fp``), :class:`ReasonSegDataset` (``reason``),
:class:`MaskGroupsDataset` (``ores``); :class:`MixedDataset` mixes them by rate for training.
:class:`SynthVQADataset` (``vqa``) asks questions about the synthetic benchmark's scenes; the generator
itself (``generate_synthref``) is :mod:`reseg.datasets.synthref`.
"""
from reseg.datasets.base import RESEG_METAINFO, ResegDataset
from reseg.datasets.collate import reseg_collate
from reseg.datasets.fprefcoco import FPRefCOCODataset, premise_exists
from reseg.datasets.grefcoco import GRefCOCODataset
from reseg.datasets.io import DatasetFormatError, UnknownSplitError, decode_rle, encode_rle
from reseg.datasets.maskgroups import (
    POOL_LABEL_RULES,
    REF_PLACEHOLDER,
    MaskGroupsDataset,
    match_pool_labels,
)
from reseg.datasets.mixed import MixedDataset
from reseg.datasets.reasonseg import ReasonSegDataset
from reseg.datasets.refer import RefCOCODataset
from reseg.datasets.safe_pickle import UnsafePickleError, dump_pickle, load_pickle
from reseg.datasets.synthref.vqa import SynthVQADataset

__all__ = [
    "POOL_LABEL_RULES",
    "REF_PLACEHOLDER",
    "RESEG_METAINFO",
    "DatasetFormatError",
    "FPRefCOCODataset",
    "GRefCOCODataset",
    "MaskGroupsDataset",
    "MixedDataset",
    "ReasonSegDataset",
    "RefCOCODataset",
    "ResegDataset",
    "SynthVQADataset",
    "UnknownSplitError",
    "UnsafePickleError",
    "decode_rle",
    "dump_pickle",
    "encode_rle",
    "load_pickle",
    "match_pool_labels",
    "premise_exists",
    "reseg_collate",
]
