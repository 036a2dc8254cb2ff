# Tiny RAS: tiny LISA's LLaVA (the real transformers class at toy sizes), a candidate-pool mask source
# (the sample's own pool, or a proposer) whose mask tokenizer is the tiny encoder set of
# ras_encoders_tiny.py, and the RAS selection head (anchorseg_ras.md §2.4; every [GUESS] an option).
_base_ = ["./lisa_tiny.py", "./ras_encoders_tiny.py"]

model = dict(
    lmm=dict(
        # stage 2 trains everything but the encoders (§2.2); the tiny LLM is random, so all of it
        trainable_modules="all",
        train_vision_tower=False,
        train_projector=True,
        # 2 x 64 candidates x 2 tokens + image + query
        tiny=dict(text=dict(max_position_embeddings=1024)),
        max_length=1024,
    ),
    mask_source=dict(
        _delete_=True,
        type="CandidatePoolSource",
        tokenizer={{_base_.mask_tokenizer}},
        proposer=None,  # MaskGroups ships its pools; RES/GRES configs set a PrecomputedProposer
        pool="auto",
        max_candidates=64,
    ),
    head=dict(_delete_=True, type="RASHead", stage="select", pos_weight=5.0, threshold=0.5,
              top1_tasks=("res",), label_rule="coverage", label_thr=0.5),
    val_mode="teacher_forcing",  # RAS selects in one forward pass; nothing is generated
)
