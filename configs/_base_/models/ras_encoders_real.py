# RAS mask tokenizer, real scale: the encoder set of specs/anchorseg_ras.md §2.4 B ([GUESS] on the
# exact set and resolutions) from LOCAL checkpoint files. Nothing is downloaded: building without a
# file fails before any model is built, naming every missing path and its config key.
#
# Where the files come from (open_clip / timm formats; download them yourself):
#   CLIP ViT-L/14-336 (OpenAI)   hf timm/vit_large_patch14_clip_336.openai  open_clip_pytorch_model.bin
#   SigLIP SO400M/14-384         hf timm/vit_so400m_patch14_siglip_384.webli model.safetensors (timm)
#   ConvNeXt-XXL CLIP (LAION)    hf laion/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup
#                                                                            open_clip_pytorch_model.bin
#   DINOv2 ViT-L/14              hf timm/vit_large_patch14_dinov2.lvd142m    model.safetensors (timm)
# Concatenated width (§2.4 D): 1024 + 1152 + 3072 + 1024 + 256 = 6528.
encoder_checkpoint_dir = "checkpoints/ras_encoders"

mask_tokenizer = dict(
    type="MaskTokenizer",
    encoders=[
        # OpenAI CLIP ViT-L/14 at 336 px -> 24 x 24 x 1024 (QuickGELU, as OpenAI trained it)
        dict(type="OpenClipEncoder", model_name="ViT-L-14-336-quickgelu",
             checkpoint=encoder_checkpoint_dir + "/vit_large_patch14_clip_336.openai/open_clip_pytorch_model.bin"),
        # SigLIP ViT-SO400M/14 at 384 px -> 27 x 27 x 1152 (the grid sees 378 of 384 px)
        dict(type="TimmEncoder", model_name="vit_so400m_patch14_siglip_384", img_size=384,
             checkpoint=encoder_checkpoint_dir + "/vit_so400m_patch14_siglip_384.webli/model.safetensors"),
        # OpenCLIP ConvNeXt-XXL (LAION) at 1024 px -> 32 x 32 x 3072 (trunk forward_features, last stage)
        dict(type="OpenClipEncoder", model_name="convnext_xxlarge", img_size=1024,
             checkpoint=encoder_checkpoint_dir
             + "/CLIP-convnext_xxlarge-laion2B-s34B-b82K-augreg-soup/open_clip_pytorch_model.bin"),
        # DINOv2 ViT-L/14 at 518 px -> 37 x 37 x 1024 (the alternative of §2.4 B is img_size=336 -> 24 x 24)
        dict(type="TimmEncoder", model_name="vit_large_patch14_dinov2", img_size=518,
             checkpoint=encoder_checkpoint_dir + "/vit_large_patch14_dinov2.lvd142m/model.safetensors"),
        # fixed 2-D sinusoidal position map: 256 channels on a 32 x 32 grid ([GUESS], §2.4 B)
        dict(type="PositionEncoding", channels=256, grid=32),
    ],
    out_dim=None,        # LLaVA-1.5-13B: 5120; set by the head from the LMM width (§2.4 D)
    norm="layernorm",
    empty="centroid",
)
