"""LISA's official checkpoints (``dvlab-research/LISA``) -> reseg: ``--from lisa``.

LISA's release is the ``[SEG]`` family's shared layout and nothing else: its LLaVA fork, SAM under
``model.visual_model`` and the ``text_hidden_fcs`` projection (read from the files in
``SEG_FAMILY_KEY_SOURCES``; docs/convert_checkpoint.md).
"""
from reseg.plugin_api import BUFFERS_IGNORED, SEG_FAMILY_KEY_SOURCES, SEG_FAMILY_RULES, CheckpointConverter


class LISAConverter(CheckpointConverter):
    """``LISAForCausalLM`` releases (``model/LISA.py``): LLaVA fork + SAM + ``text_hidden_fcs``."""

    key_sources = SEG_FAMILY_KEY_SOURCES
    rules = SEG_FAMILY_RULES
    ignored = BUFFERS_IGNORED
