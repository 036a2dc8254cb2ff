"""SAM as a mask source: the ``segment_anything`` classes, real (ViT-B/L/H checkpoints) or tiny.

Contract (docs/architecture.md, "Mask source"): :meth:`SAMMaskSource.embed` runs the image encoder
once per image; :meth:`SAMMaskSource.decode` takes custom sparse embeddings ``[n, T, C]`` (the pip
``PromptEncoder`` has no ``text_embeds`` argument, so ours are concatenated after its point/box
output) and returns low-resolution logits; :meth:`SAMMaskSource.postprocess` returns logits at the
original image size (spec seg_token_family.md §1.2 step 8).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reseg.registry import MASK_SOURCES

#: Encoder sizes of the released SAM variants (``segment_anything/build_sam.py``).
SAM_VARIANTS = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}

#: SAM's pixel normalisation (spec §1.5).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def build_sam(
    variant: str = "vit_h",
    image_size: int = 1024,
    prompt_dim: int = 256,
    encoder: dict | None = None,
    decoder_depth: int = 2,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    iou_head_hidden_dim: int = 256,
):
    """A ``segment_anything.modeling.Sam`` of a released variant or of a custom (tiny) size."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    if variant == "custom":
        if encoder is None:
            raise ValueError("SAM variant 'custom' needs `encoder=dict(embed_dim=..., depth=..., num_heads=...)`")
        enc = dict(window_size=0, global_attn_indexes=())
        enc.update(encoder)
    elif variant in SAM_VARIANTS:
        enc = dict(SAM_VARIANTS[variant], window_size=14)
    else:
        raise ValueError(f"unknown SAM variant {variant!r}; expected one of {sorted(SAM_VARIANTS)} or 'custom'")
    patch = int(enc.pop("patch_size", 16))  # released SAM: 16; a custom (tiny) encoder may use a finer grid
    if image_size % patch:
        raise ValueError(f"SAM image_size {image_size} must be a multiple of the encoder's patch_size {patch}")
    grid = image_size // patch
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=patch, mlp_ratio=4, out_chans=prompt_dim, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, **enc),
        prompt_encoder=PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=decoder_depth, embedding_dim=prompt_dim,
                                          mlp_dim=decoder_mlp_dim, num_heads=decoder_heads),
            transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=iou_head_hidden_dim),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )


def load_state_dict_file(path: str | Path, key: str) -> dict:
    """Load a tensor-only state dict (``.pth`` under ``weights_only=True``, or ``.safetensors``) from the
    file config key ``key`` names (a relative path is under the reseg root, :mod:`reseg.paths`)."""
    from reseg.engine.checkpoint import read_state_dict
    from reseg.paths import require_weights_file

    return read_state_dict(str(require_weights_file(path, key)))


SAM_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def load_sam_checkpoint(sam: nn.Module, checkpoint: str | Path, key: str, variant: str,
                        parts: Sequence[str] = SAM_PARTS) -> None:
    """Load a SAM state dict into ``sam``; missing or unexpected keys are an error naming the file,
    the config ``key`` and the ``variant`` it was built as.

    ``parts`` names the submodules to take from the file (default: all three); the others keep their
    random initialisation, e.g. ``("image_encoder",)`` for a pre-trained encoder under a fresh decoder.
    """
    unknown = [p for p in parts if p not in SAM_PARTS]
    if unknown or not parts:
        raise ValueError(f"{key.rsplit('.', 1)[0]}.checkpoint_parts={list(parts)!r}: expected a non-empty "
                         f"subset of {list(SAM_PARTS)}")
    sd = load_state_dict_file(checkpoint, key)
    sd = {k: v for k, v in sd.items() if k.split(".", 1)[0] in parts}
    missing, unexpected = sam.load_state_dict(sd, strict=False)
    missing = [k for k in missing if k.split(".", 1)[0] in parts]
    if missing or unexpected:
        raise RuntimeError(
            f"SAM checkpoint {str(checkpoint)!r} ({key}) does not match variant {variant!r}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:3]})")


@MASK_SOURCES.register_module()
class SAMMaskSource(nn.Module):
    """SAM image encoder + prompt encoder + mask decoder, as a reseg mask source.

    Args:
        variant: ``vit_b`` / ``vit_l`` / ``vit_h`` or ``custom`` (tiny; give ``encoder``).
        checkpoint: SAM weights (``sam_vit_h_4b8939.pth``, or a tiny checkpoint); None = random.
        checkpoint_parts: which of ``image_encoder`` / ``prompt_encoder`` / ``mask_decoder`` to load
            from ``checkpoint`` (default all); the rest stay randomly initialised.
        image_size, prompt_dim, encoder, decoder_*: model sizes (defaults are the released SAM).
        freeze_image_encoder / freeze_prompt_encoder / train_mask_decoder: LISA's defaults
            (spec §1.1): encoders frozen, decoder trained. A frozen encoder runs under ``no_grad``.
    """

    kind = "sam_decoder"

    def __init__(
        self,
        variant: str = "vit_h",
        checkpoint: str | None = None,
        image_size: int = 1024,
        prompt_dim: int = 256,
        encoder: dict | None = None,
        decoder_depth: int = 2,
        decoder_mlp_dim: int = 2048,
        decoder_heads: int = 8,
        iou_head_hidden_dim: int = 256,
        freeze_image_encoder: bool = True,
        freeze_prompt_encoder: bool = True,
        train_mask_decoder: bool = True,
        checkpoint_parts: Sequence[str] = SAM_PARTS,
    ) -> None:
        super().__init__()
        if checkpoint is not None:  # before anything is built; a relative path is under the reseg root
            from reseg.paths import require_weights_file

            checkpoint = str(require_weights_file(checkpoint, "model.mask_source.checkpoint"))
        self.sam = build_sam(variant, image_size, prompt_dim, encoder, decoder_depth, decoder_mlp_dim,
                             decoder_heads, iou_head_hidden_dim)
        if checkpoint is not None:
            load_sam_checkpoint(self.sam, checkpoint, "model.mask_source.checkpoint", variant,
                                parts=tuple(checkpoint_parts))
        self.image_size = image_size
        self.prompt_dim = prompt_dim
        self.freeze_image_encoder = freeze_image_encoder
        self.sam.image_encoder.requires_grad_(not freeze_image_encoder)
        self.sam.prompt_encoder.requires_grad_(not freeze_prompt_encoder)
        self.sam.mask_decoder.requires_grad_(train_mask_decoder)
        from segment_anything.utils.transforms import ResizeLongestSide

        self.resizer = ResizeLongestSide(image_size)

    @property
    def device(self) -> torch.device:
        return self.sam.pixel_mean.device

    @property
    def embedding_size(self) -> tuple[int, int]:
        return tuple(self.sam.prompt_encoder.image_embedding_size)

    @property
    def mask_input_size(self) -> tuple[int, int]:
        """``(4h, 4w)``: the frame of a dense mask prompt (``decode(dense=...)``), 256x256 for SAM-1024."""
        return tuple(self.sam.prompt_encoder.mask_input_size)

    # ------------------------------------------------------------------ images
    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resize longest side, normalise, zero-pad (spec §1.5).

        Returns ``[B, 3, S, S]`` and each image's resized ``(h', w')`` (for cropping back).
        """
        batch, sizes = [], []
        for im in images:
            r = self.resizer.apply_image(im)  # uint8 HxWx3, longest side = S (PIL bilinear)
            sizes.append((int(r.shape[0]), int(r.shape[1])))
            t = torch.from_numpy(np.ascontiguousarray(r)).permute(2, 0, 1).to(self.device, torch.float32)
            batch.append(self.sam.preprocess(t[None])[0])  # normalise + pad bottom/right
        return torch.stack(batch, 0), sizes

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` image embeddings; one encoder pass per image (``pixels`` ``[B,3,S,S]``)."""
        if self.freeze_image_encoder:
            with torch.no_grad():
                return self.sam.image_encoder(pixels)
        return self.sam.image_encoder(pixels)

    # ------------------------------------------------------------------ decoding
    def decode(
        self,
        embedding: torch.Tensor,
        sparse: torch.Tensor,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        dense: torch.Tensor | None = None,
        mask_token_offset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``n`` masks for one image.

        Args:
            embedding: ``[1, C, h, w]`` this image's embedding (shared by its ``n`` queries).
            sparse: ``[n, T, C]`` custom prompt embeddings (e.g. projected ``[SEG]`` states),
                appended after any point embeddings.
            points: optional ``(coords [n, P, 2] in the S frame, labels [n, P])``.
            dense: optional ``[n, 1, 4h, 4w]`` mask prompt (logits) through ``mask_downscaling``.
            mask_token_offset: optional ``[M, C]`` added to the decoder's ``M`` output mask tokens for
                this call (a learned position embedding such as AnchorSeg's, anchorseg_ras.md §1.6).
                The decoder runs with ``mask_tokens.weight + offset`` in place of its weight
                (``torch.func.functional_call``): ``segment_anything`` stays unmodified and the
                gradient reaches both the weight and the offset.
        Returns:
            ``low_res [n, 1, 4h, 4w]`` logits (``multimask_output=False``: slot 0) and ``iou [n, 1]``.
        """
        pe = self.sam.prompt_encoder
        pts_sparse, dense_emb = pe(points=points, boxes=None, masks=dense)
        n = sparse.shape[0]
        if dense is None:
            dense_emb = dense_emb.expand(n, -1, -1, -1)
        sparse_all = torch.cat([pts_sparse.to(sparse.dtype), sparse], 1) if points is not None else sparse
        kwargs = dict(image_embeddings=embedding, image_pe=pe.get_dense_pe(), sparse_prompt_embeddings=sparse_all,
                      dense_prompt_embeddings=dense_emb, multimask_output=False)
        decoder = self.sam.mask_decoder
        if mask_token_offset is None:
            return decoder(**kwargs)
        tokens = decoder.mask_tokens.weight
        if tuple(mask_token_offset.shape) != tuple(tokens.shape):
            raise ValueError(f"mask_token_offset must be {list(tokens.shape)} (the decoder's mask tokens), "
                             f"got {list(mask_token_offset.shape)}")
        shifted = {"mask_tokens.weight": tokens + mask_token_offset.to(tokens.dtype)}
        return torch.func.functional_call(decoder, shifted, args=(), kwargs=kwargs)

    def postprocess(self, low_res: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
        """``[n, H, W]`` logits at the original size: upsample to S, crop ``[:h', :w']``, upsample."""
        x = F.interpolate(low_res.float(), (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = x[..., : resized[0], : resized[1]]
        x = F.interpolate(x, original, mode="bilinear", align_corners=False)
        return x[:, 0]
