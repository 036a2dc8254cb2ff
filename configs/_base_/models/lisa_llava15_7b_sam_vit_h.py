# Real-scale LISA: LLaVA-1.5-7B (Hugging Face format, e.g. a local copy of llava-hf/llava-1.5-7b-hf)
# + SAM ViT-H (sam_vit_h_4b8939.pth). Paths are local; nothing is downloaded.
# Defaults follow spec seg_token_family.md §1.1 and §1.4.
llava_path = "checkpoints/llava-1.5-7b-hf"
sam_checkpoint = "checkpoints/sam_vit_h_4b8939.pth"

model = dict(
    type="ReasoningSegmentor",
    lmm=dict(
        type="LlavaLMM",
        pretrained=llava_path,
        lora=dict(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=r".*language_model.*\.(q_proj|v_proj)"),
        trainable_modules=("lm_head", "embed_tokens"),
        train_vision_tower=False,
        train_projector=False,
        image_aspect="crop",
        gradient_checkpointing=True,
        max_length=2048,
    ),
    mask_source=dict(type="SAMMaskSource", variant="vit_h", checkpoint=sam_checkpoint,
                     freeze_image_encoder=True, freeze_prompt_encoder=True, train_mask_decoder=True),
    head=dict(type="LISAHead", ce_weight=1.0, bce_weight=2.0, dice_weight=0.5),
    val_mode="teacher_forcing",
)
