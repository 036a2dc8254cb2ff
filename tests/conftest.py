"""Shared fixtures.

``synth_root``: a small synthetic benchmark (``reseg.datasets.synthref``) generated once per test
session into a temporary folder, laid out like the real datasets::

    <synth_root>/refer_seg/{synthref/{instances.json, refs(unc).p}, images/synthref/*.jpg}
    <synth_root>/reason_seg/ReasonSeg/{train,val,test}/*.jpg + *.json
    <synth_root>/refer_seg/{grefcoco_synth/{instances.json, grefs(unc).json}, images/grefcoco_synth/*.jpg}
    <synth_root>/refer_seg/{fprefcoco_synth/{instances.json, refs(berkeley_exclude_unified).p},
                            images/fprefcoco_synth/*.jpg}
    <synth_root>/mask_groups/{train,validation}.json + images/*.jpg
    <synth_root>/synthref_meta.json

Load it with ``RefCOCODataset(synth_root / "refer_seg", dataset="synthref", split=...)``,
``ReasonSegDataset(synth_root / "reason_seg", split=...)``,
``GRefCOCODataset(synth_root / "refer_seg", dataset="grefcoco_synth", split=...)``,
``FPRefCOCODataset(synth_root / "refer_seg", dataset="fprefcoco_synth", split=...)`` and
``MaskGroupsDataset(synth_root / "mask_groups", split=...)``. Tests must not modify it (copy first).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from reseg.plugins import load_plugins

# The test session is an entry point like tools/*.py: load the plugins (the built-in heads) once, so
# tests may build any model straight from the registries.
load_plugins()

#: Images per split of the session benchmark (small: generation takes about a second).
SYNTH_REFER_COUNTS = {"train": 16, "val": 6, "testA": 4, "testB": 4}
SYNTH_REASON_COUNTS = {"train": 8, "val": 8, "test": 4}
SYNTH_GREF_COUNTS = {"train": 8, "val": 6, "testA": 2, "testB": 2}
SYNTH_FP_COUNTS = {"train": 6, "val": 6, "testA": 2, "testB": 2}
SYNTH_MASKGROUPS_COUNTS = {"train": 6, "validation": 6}
SYNTH_SEED = 0


def make_synth_config(seed: int = SYNTH_SEED, **overrides):
    """The :class:`~reseg.datasets.synthref.SynthRefConfig` of the session benchmark."""
    from reseg.datasets.synthref import SynthRefConfig

    kwargs = dict(seed=seed, refer_counts=dict(SYNTH_REFER_COUNTS), reason_counts=dict(SYNTH_REASON_COUNTS),
                  gref_counts=dict(SYNTH_GREF_COUNTS), fp_counts=dict(SYNTH_FP_COUNTS),
                  maskgroups_counts=dict(SYNTH_MASKGROUPS_COUNTS), ignore_prob=0.6)
    kwargs.update(overrides)
    return SynthRefConfig(**kwargs)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a small synthetic benchmark in the real REFER, ReasonSeg, gRefCOCO, FP-RefCOCO and
    MaskGroups layouts (read-only)."""
    from reseg.datasets.synthref import generate_synthref

    root = tmp_path_factory.mktemp("synthref")
    generate_synthref(root, make_synth_config())
    return root


@pytest.fixture(scope="session")
def synth_config():
    """``synth_config(seed=..., **overrides)`` -> a config like the session benchmark's."""
    return make_synth_config
