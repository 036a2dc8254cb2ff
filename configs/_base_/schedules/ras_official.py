# RAS's stage-2 recipe as the spec guesses it (anchorseg_ras.md §2.4 J, every value a [GUESS]: the paper
# gives none): AdamW lr 2e-5, global batch 128, cosine decay, 3 % linear warm-up, 1 epoch. Here per GPU
# batch 4 x 8 GPUs x gradient accumulation 4 = 128; mmengine counts micro-batches (see lisa_official.py).
# bf16 mixed precision; the optim wrapper's type comes with it from the precision piece.
_base_ = ["../precision/bf16.py"]
grad_accum = 4
optimizer_steps = 750  # ~96k MaskGroups-HQ training records / 128 per step
max_iters = optimizer_steps * grad_accum
warmup = int(0.03 * max_iters)
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    optimizer=dict(type="AdamW", lr=2e-5, betas=(0.9, 0.999), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
    accumulative_counts=grad_accum,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup),
    dict(type="CosineAnnealingLR", T_max=max_iters - warmup, eta_min=0.0, by_epoch=False, begin=warmup,
         end=max_iters),
]
