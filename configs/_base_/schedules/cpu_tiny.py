# A short iteration-based schedule for the tiny scale on CPU.
# LISA's schedule shape (spec seg_token_family.md §1.4): AdamW betas (0.9, 0.95), no weight decay,
# linear warm-up then linear decay to 0, gradient clipping 1.0. The lr is the tiny scale's own.
# fp32 on any device; the optim wrapper's type comes with it from the precision piece.
_base_ = ["../precision/fp32.py"]
max_iters = 500
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100, end=max_iters),
]
