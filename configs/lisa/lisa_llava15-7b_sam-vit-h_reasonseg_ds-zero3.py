# LISA-7B on ReasonSeg with DeepSpeed ZeRO-3 (mmengine FlexibleRunner); see docs/scaling.md.
# torchrun --nproc-per-node 8 tools/train.py THIS_FILE --launcher pytorch --cfg-options model.lmm.pretrained=...
_base_ = ["./lisa_llava15-7b_sam-vit-h_reasonseg.py", "../_base_/strategies/deepspeed_zero3.py"]
# DeepSpeed clips, accumulates and casts itself: LISA's optimizer goes in DeepSpeedOptimWrapper, its clipping,
# accumulation and per-GPU batch in the strategy (spec seg_token_family.md §1.4; bf16 from the strategy preset).
optim_wrapper = dict(_delete_=True, type="DeepSpeedOptimWrapper",
                     optimizer=dict(type="AdamW", lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0))
strategy = dict(gradient_clipping=1.0, gradient_accumulation_steps=10, train_micro_batch_size_per_gpu=2)
