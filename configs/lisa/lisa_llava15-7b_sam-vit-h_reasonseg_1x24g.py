# LISA-7B on ReasonSeg on ONE 24 GB GPU: LoRA + gradient checkpointing + bf16 + frozen SAM encoder (the
# real config's defaults) plus DeepSpeed ZeRO-2 with the optimizer state offloaded to CPU RAM, and LISA's
# global batch of 160 kept as 2 images x 80 accumulation steps. DeepSpeed clips, accumulates and casts
# itself: LISA's optimizer goes in DeepSpeedOptimWrapper, its clipping and accumulation in the strategy.
# Not measured here (no GPU): docs/scaling.md.
#   python tools/train.py THIS_FILE --launcher pytorch   (under torchrun --nproc-per-node 1)
_base_ = ["./lisa_llava15-7b_sam-vit-h_reasonseg.py", "../_base_/strategies/deepspeed_zero2.py"]
grad_accum = 80
max_iters = 5000 * grad_accum
train_cfg = dict(max_iters=max_iters, val_interval=500 * grad_accum)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=100 * grad_accum),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100 * grad_accum, end=max_iters),
]
optim_wrapper = dict(_delete_=True, type="DeepSpeedOptimWrapper",
                     optimizer=dict(type="AdamW", lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0))
strategy = dict(zero_optimization=dict(offload_optimizer=dict(device="cpu", pin_memory=True)),
                gradient_clipping=1.0, gradient_accumulation_steps=grad_accum, train_micro_batch_size_per_gpu=2)
