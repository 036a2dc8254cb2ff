"""LMM backbones (LLaVA family)."""
from .llava import ContextLengthError, LlavaLMM

__all__ = ["ContextLengthError", "LlavaLMM"]
