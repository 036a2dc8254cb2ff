"""The head contract and the building blocks heads share (see :mod:`reseg.models.heads.base`)."""
from .base import (
                   PREDICTION_MODES,
                   READ_RULES,
                   SLOT_KINDS,
                   BaseHead,
                   Conversation,
                   HeadBatch,
                   HeadPredictions,
                   MaskSlot,
                   SlotBatch,
                   SlotTargets,
                   mask_slot_targets,
)
from .seg_token import SegProjection, SegTokenHead, seg_token_states

__all__ = [
                   "PREDICTION_MODES",
                   "READ_RULES",
                   "SLOT_KINDS",
                   "BaseHead",
                   "Conversation",
                   "HeadBatch",
                   "HeadPredictions",
                   "MaskSlot",
                   "SegProjection",
                   "SegTokenHead",
                   "SlotBatch",
                   "SlotTargets",
                   "mask_slot_targets",
                   "seg_token_states",
]
