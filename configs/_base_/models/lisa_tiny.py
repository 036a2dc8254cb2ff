# Tiny LISA: the real transformers LLaVA and segment_anything SAM classes at toy sizes (CPU minutes).
# The tiny SAM and vision tower load weights pre-trained on the synthetic benchmark by
# tools/research/pretrain_tiny.py when those files exist (see configs/lisa/lisa_tiny_synthref.py).
tiny_data_root = "data/synthref"
tiny_models_dir = "data/tiny_models"

model = dict(
    type="ReasoningSegmentor",
    lmm=dict(
        type="LlavaLMM",
        tiny=dict(
            vision=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                        image_size=128, patch_size=16),
            text=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=4, max_position_embeddings=512),
            tokenizer_dir=tiny_models_dir + "/tokenizer",
            vision_feature_layer=-1,  # the tiny tower has 2 layers: use the last (LLaVA uses -2 of 24)
            vision_checkpoint=None,
        ),
        lora=None,
        trainable_modules="all",  # a random tiny LLM has nothing to preserve: train all of it
        train_vision_tower=True,
        train_projector=True,
        image_aspect="pad",  # keep the whole (small, non-square) image visible to the LMM
        max_length=512,
    ),
    mask_source=dict(
        type="SAMMaskSource", variant="custom", image_size=256, prompt_dim=64,
        encoder=dict(embed_dim=64, depth=2, num_heads=2), decoder_mlp_dim=256, decoder_heads=4,
        iou_head_hidden_dim=64, checkpoint=None,
        freeze_image_encoder=True, freeze_prompt_encoder=True, train_mask_decoder=True),
    # LISA's losses and templates; the long llava_v1 system prompt is dropped to save ~20 tokens a query.
    head=dict(type="LISAHead", ce_weight=1.0, bce_weight=2.0, dice_weight=0.5, system_prompt=""),
    val_mode="teacher_forcing",
)
