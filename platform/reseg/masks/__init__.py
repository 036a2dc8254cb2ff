"""Mask representations shared by every part of reseg: :mod:`reseg.masks.rle`, the COCO RLE codec."""
from reseg.masks.rle import decode_rle, encode_rle, encode_rles, rle_runs, rle_size

__all__ = ["decode_rle", "encode_rle", "encode_rles", "rle_runs", "rle_size"]
