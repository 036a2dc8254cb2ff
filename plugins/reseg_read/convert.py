"""READ's official checkpoints (``rui-qian/READ``) -> reseg: ``--from read``.

``model/READ.py``: ``READForCausalLM`` / ``ReadMetaModel`` build exactly LISA's modules
(``visual_model``, ``text_hidden_fcs``) on the same LLaVA fork; READ's additions (similarity points,
DtoC) have no weights. So READ's rules are the ``[SEG]`` family's shared layout, composed here from
the core's building blocks (docs/convert_checkpoint.md).
"""
from reseg.plugin_api import BUFFERS_IGNORED, SEG_FAMILY_KEY_SOURCES, SEG_FAMILY_RULES, CheckpointConverter


class READConverter(CheckpointConverter):
    """``READForCausalLM`` releases: the shared layout (READ adds no weights)."""

    key_sources = SEG_FAMILY_KEY_SOURCES + (("rui-qian/READ", "model/READ.py"),)
    rules = SEG_FAMILY_RULES
    ignored = BUFFERS_IGNORED
