"""Models: the segmentor, LMM backbones, mask sources, shared losses and the head base class."""
from .head import BaseHead, BatchContext, Conversation
from .segmentor import ReasoningSegmentor

__all__ = ["BaseHead", "BatchContext", "Conversation", "ReasoningSegmentor"]
