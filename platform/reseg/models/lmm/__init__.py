"""LMM backbones (LLaVA family)."""
from .llava import LlavaLMM

__all__ = ["LlavaLMM"]
