"""The LISA head: one ``[SEG]`` token per mask, its hidden state projected into SAM's prompt space.

Faithful to spec ``seg_token_family.md`` §1 (LISA, CVPR 2024). The conversations, the ``[SEG]`` state
read, the losses and the ``[REJ]`` variant (GSVA, §4) are the ``[SEG]`` family's, from the core
(:class:`reseg.models.heads.SegTokenHead`); what is LISA's own is how a state drives SAM.
"""
from __future__ import annotations

from reseg.models.heads import HeadBatch, SegTokenHead


class LISAHead(SegTokenHead):
    """LISA: ``[SEG]`` -> projection -> SAM sparse prompt -> one mask per ``[SEG]`` (spec §1.2 steps 5-8).

    Args: those of :class:`~reseg.models.heads.SegTokenHead` (loss weights 1.0 / 2.0 / 0.5,
    ``seg_convention``, ``seg_per_instance``, ``system_prompt``, ``rej_token``, ``rej_in_mask_loss``, the
    template lists).
    """

    def forward(self, batch: HeadBatch) -> dict:
        """Each image's ``[SEG]`` embeddings prompt one SAM decoder call (``multimask_output=False``)."""
        slots = batch.slots.where(kind="mask")
        emb = self.projection(slots.states)  # [N, C]
        return {"masks": batch.decode_masks(slots, emb, lambda i, sel: {"sparse": emb[sel][:, None, :]})}
