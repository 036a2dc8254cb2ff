"""The synthetic benchmark ``synthref``: coloured shapes on a light background, written in the file
formats of REFER (RefCOCO), ReasonSeg, gRefCOCO, FP-RefCOCO and MaskGroups, so the real loaders read
it unchanged. ``tools/make_synthref.py`` writes it; every tiny config and the test suite train on it.

Modules, in the order the generator uses them:

* :mod:`.scene`: the scene model (shapes, colours, occlusion, visible masks) and its rendering;
* :mod:`.language`: referring expressions about one object and ReasonSeg-style reasoning queries;
* :mod:`.group_language`: expressions about several objects or none, false premises, reference masks;
* :mod:`.candidate_pools`: imperfect candidate-mask pools (a stand-in for SAM proposals);
* :mod:`.items`: one image of each split family, a pure function of the config and its index;
* :mod:`.writers`: the file formats;
* :mod:`.generator`: :class:`SynthRefConfig` and :func:`generate_synthref`, which wire the above;
* :mod:`.vqa`: :class:`SynthVQADataset`, question/answer pairs about the scenes of a written split.
"""
from reseg.datasets.synthref.generator import GENERATOR_VERSION, META_FILE, SynthRefConfig, generate_synthref
from reseg.datasets.synthref.vqa import SynthVQADataset

__all__ = ["GENERATOR_VERSION", "META_FILE", "SynthRefConfig", "SynthVQADataset", "generate_synthref"]
