# Tiny LISA's CPU recipe on a random frozen SAM: the base config with the departures from LISA's recipe
# that let a random tiny LLaVA learn in 600 iterations (docs/benchmarks.md, "Tiny LISA: the demo").
_base_ = ["./lisa_tiny_synthref.py"]

model = dict(
    # random weights, image encoder frozen (it keeps colour), 128 px in 8 px patches: a 16 x 16 grid
    mask_source=dict(checkpoint=None, image_size=128, encoder=dict(patch_size=8)),
    # no text loss (LISA's ce_weight is 1): the answer text is not learned, so score with teacher forcing
    # (the default val_mode), not tools/test.py --generate; Dice at AnchorSeg's 2.0 (LISA's is 0.5)
    head=dict(ce_weight=0.0, dice_weight=2.0),
)
train_dataloader = dict(batch_size=16)
max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100, end=max_iters),
]
