# LISA's released schedule (spec seg_token_family.md §1.4): AdamW lr 3e-4, betas (0.9, 0.95), no
# weight decay, clipping 1.0; WarmupDecayLR: linear warm-up over 100 optimizer steps, then linear
# decay to 0 at 10 epochs x 500 steps = 5000 optimizer steps; batch 2 per GPU x grad accumulation 10.
# mmengine counts *micro-batches*: with accumulative_counts=10 one optimizer step is 10 iterations,
# so the loop, the validation interval (one epoch) and the scheduler are all in micro-batches.
# bf16 mixed precision (spec §1.4); the optim wrapper's type comes with it from the precision piece.
_base_ = ["../precision/bf16.py"]
grad_accum = 10
optimizer_steps = 5000
steps_per_epoch = 500
max_iters = optimizer_steps * grad_accum
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=steps_per_epoch * grad_accum)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    optimizer=dict(type="AdamW", lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
    accumulative_counts=grad_accum,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=100 * grad_accum),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100 * grad_accum,
         end=max_iters),
]
