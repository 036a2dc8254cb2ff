"""Mask sources: the SAM decoder (and, later, candidate pools)."""
from .sam import SAMMaskSource, build_sam

__all__ = ["SAMMaskSource", "build_sam"]
