# LISA's released schedule (spec seg_token_family.md §1.4): AdamW lr 3e-4, betas (0.9, 0.95), wd 0,
# warm-up 100 steps, linear decay to 0 at 10 epochs x 500 steps; batch 2/GPU x grad-accum 10; clip 1.0.
max_iters = 5000
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=500)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
optim_wrapper = dict(
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0),
    clip_grad=dict(max_norm=1.0),
    accumulative_counts=10,
)
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=100 * 10),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100 * 10, end=max_iters * 10),
]
