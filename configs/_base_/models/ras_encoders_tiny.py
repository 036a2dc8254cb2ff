# RAS mask tokenizer, tiny scale: random-weight, CPU-sized versions of the encoder set of
# specs/anchorseg_ras.md §2.4 B (same classes and code paths as the real set; nothing is loaded).
# Concatenated width 32 + 32 + 64 + 32 + 32 = 192; the projector's output width is the LMM's
# (the head calls build_projector once it knows it).
mask_tokenizer = dict(
    type="MaskTokenizer",
    encoders=[
        # OpenAI-CLIP-style ViT (open_clip, custom tiny config): 64 px, patch 8 -> 8 x 8 x 32
        dict(type="OpenClipEncoder",
             model_cfg=dict(embed_dim=32, quick_gelu=True,
                            vision_cfg=dict(image_size=64, patch_size=8, width=32, layers=1, head_width=16))),
        # SigLIP SO400M architecture (timm), tiny: 112 px, patch 14 -> 8 x 8 x 32
        dict(type="TimmEncoder", model_name="vit_so400m_patch14_siglip_384", img_size=112,
             model_kwargs=dict(embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0)),
        # ConvNeXt (timm), tiny dims: 128 px, stride 32 -> 4 x 4 x 64
        dict(type="TimmEncoder", model_name="convnext_atto", img_size=128,
             model_kwargs=dict(dims=(16, 32, 48, 64), depths=(1, 1, 1, 1))),
        # DINOv2 architecture (timm), tiny: 112 px, patch 14 -> 8 x 8 x 32 (cls token dropped)
        dict(type="TimmEncoder", model_name="vit_small_patch14_dinov2", img_size=112,
             model_kwargs=dict(embed_dim=32, depth=1, num_heads=2)),
        # fixed 2-D sinusoidal position map: 8 x 8 x 32
        dict(type="PositionEncoding", channels=32, grid=8),
    ],
    out_dim=None,        # set by the head from the LMM width
    norm="layernorm",    # per encoder, before concatenation (§2.4 C, [GUESS])
    empty="centroid",    # a mask that vanishes on a grid takes its centroid cell (§2.4 C option 1)
)
