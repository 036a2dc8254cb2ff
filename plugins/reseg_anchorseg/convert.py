"""AnchorSeg's official checkpoints (``rui-qian/AnchorSeg``) -> reseg: ``--from anchorseg``.

The ``[SEG]`` family's shared layout plus AnchorSeg's own modules (docs/convert_checkpoint.md):

* ``model/AnchorSeg.py``: ``model.latent_hidden_fcs`` (same shape as ``text_hidden_fcs``) -> the
  head's ``latent_projection``; a ``model.decoder_modules_initialized`` flag buffer and ``ppm`` (the
  policy-prompted masking module) carry nothing reseg uses (it reads the last layer, PPM mode 1,
  which has no weights);
* ``model/segment_anything/modeling/mask_decoder.py``: ``mask_decoder.latent_token_positional_embedding``
  (K+1 x C, added to the sparse prompt) -> ``head.slot_pos`` and ``mask_decoder.positional_embedding``
  (4 x C, added to the mask tokens) -> ``head.mask_token_pos``;
* ``model/llava/model/llava_arch.py``: trained with ``--separate_mm_projector`` (the released recipe,
  ``scripts/7b_reason_seg_val/train_anchorseg_llava1.5_ema.sh``), the LLaVA fork also builds
  ``model.out_mm_projector`` (Linear, GELU, Linear). Its only use, ``encode_images``'
  ``output_image_features``, is computed in ``model/AnchorSeg.py``'s ``evaluate`` and never read, so
  its four tensors are ignored.
"""
from reseg.plugin_api import BUFFERS_IGNORED, SEG_FAMILY_KEY_SOURCES, SEG_FAMILY_RULES, CheckpointConverter

_SAM_DECODER = r"^model\.visual_model\.mask_decoder\."


class AnchorSegConverter(CheckpointConverter):
    """``AnchorSegForCausalLM`` releases: the shared layout + the latent projection and two positional
    embeddings, without the PPM module and the unused separate projector."""

    key_sources = SEG_FAMILY_KEY_SOURCES + (
        ("rui-qian/AnchorSeg", "model/AnchorSeg.py"),
        ("rui-qian/AnchorSeg", "model/segment_anything/modeling/mask_decoder.py"),
        ("rui-qian/AnchorSeg", "model/llava/model/llava_arch.py"),
    )
    # AnchorSeg's parameters inside SAM's decoder come before the shared SAM rule
    rules = (
        (r"^model\.latent_hidden_fcs\.0\.", "head.latent_projection."),
        (_SAM_DECODER + r"latent_token_positional_embedding$", "head.slot_pos"),
        (_SAM_DECODER + r"positional_embedding$", "head.mask_token_pos"),
    ) + SEG_FAMILY_RULES
    ignored = BUFFERS_IGNORED + (
        (r"^model\.decoder_modules_initialized$", "AnchorSeg's initialisation flag buffer"),
        (r"^ppm\.", "AnchorSeg's PolicyPromptedMasking; reseg reads the last layer (PPM mode 1, no weights)"),
        (r"^model\.out_mm_projector\.[02]\.(weight|bias)$",
         "AnchorSeg's --separate_mm_projector output projector (model/llava/model/llava_arch.py); its "
         "output is never read at inference (model/AnchorSeg.py)"),
    )
