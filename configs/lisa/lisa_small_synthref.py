# "Small" LISA: the tiny config's classes at a few hundred MB of weights (~105M-parameter LLM, ~11M
# CLIP tower, SAM encoder at 512 px), random weights. For tools/benchmark.py (memory, speed, MFU on
# CPU), not for accuracy: nothing here is pre-trained.
_base_ = ["./lisa_tiny_synthref.py"]
model = dict(
    lmm=dict(
        tiny=dict(
            vision=dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6,
                        image_size=224, patch_size=16),
            text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=8,
                      num_key_value_heads=8, max_position_embeddings=1024),
            vision_checkpoint=None,
        ),
        max_length=1024,
    ),
    mask_source=dict(image_size=512, prompt_dim=128, encoder=dict(embed_dim=256, depth=4, num_heads=4),
                     decoder_mlp_dim=1024, decoder_heads=8, iou_head_hidden_dim=128, checkpoint=None),
)
train_dataloader = dict(batch_size=2)
