# Real-scale RAS (anchorseg_ras.md §2.2: LLaVA-1.5 with Vicuna-13B, the only size the paper reports):
# LLaVA-1.5-13B in Hugging Face format (e.g. a local copy of llava-hf/llava-1.5-13b-hf), the encoder set
# of §2.4 B (ras_encoders_real.py, local files), the RAS head. Nothing is downloaded.
_base_ = ["./ras_encoders_real.py"]
llava_path = "checkpoints/llava-1.5-13b-hf"

model = dict(
    type="ReasoningSegmentor",
    lmm=dict(
        type="LlavaLMM",
        pretrained=llava_path,
        # stage 2 trains the LLM fully, as LLaVA-1.5's stage 2 (§2.4 J, [GUESS]); LoRA is the alternative:
        # lora=dict(r=128, lora_alpha=256), trainable_modules=("lm_head", "embed_tokens")
        lora=None,
        trainable_modules="all",
        train_vision_tower=False,   # every encoder stays frozen (§2.2)
        train_projector=True,       # the image projector trains in stage 2 (§2.2)
        image_aspect="pad",
        gradient_checkpointing=True,
        max_length=4096,            # 576 image tokens + 2 x 100 candidates x 2 tokens + text
    ),
    mask_source=dict(
        type="CandidatePoolSource",
        tokenizer={{_base_.mask_tokenizer}},
        proposer=None,              # MaskGroups-HQ ships its pools; the RES config sets a proposer
        pool="auto",
        max_candidates=100,         # §2.4 A [GUESS]
    ),
    head=dict(type="RASHead", stage="select", pos_weight=5.0, threshold=0.5, top1_tasks=("res",),
              label_rule="coverage", label_thr=0.5),
    val_mode="teacher_forcing",
)
