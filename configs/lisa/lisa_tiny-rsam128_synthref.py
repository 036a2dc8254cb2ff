# Tiny LISA as `make demo` trained it until the session of 2026-12-04 (third), and the base of the demo's
# config since (configs/lisa/lisa_tiny-sam128_synthref.py: the same recipe on a pre-trained SAM; it also
# names the architecture tools/research/pretrain_tiny.py pre-trains that SAM at). The tiny LISA config
# (configs/lisa/lisa_tiny_synthref.py: same LLaVA classes, LISA head and mask losses, data and test
# section) with the tiny-scale recipe measured in docs/benchmarks.md (issue 2, session of 2026-12-03):
# * SAM: random weights, image encoder frozen, 128 px in 8 px patches (a 16 x 16 embedding grid), mask
#   decoder trained. A frozen random encoder keeps colour; the point-pre-trained one of the base config
#   is colour-blind, and its pre-trained decoder co-adapts to one constant prompt.
# * No text loss (ce_weight 0; LISA's is 1): with it, a random tiny LLM keeps the query out of the
#   state read for [SEG] and the masks stay at the average object (RES val gIoU 0.13; without it
#   0.22-0.30 over four runs).
#   The answer text is therefore not learned: evaluate with teacher forcing (the default val_mode),
#   not free generation (tools/test.py --generate), which needs the LLM to emit [SEG].
# * Dice weight 2.0, AnchorSeg's released value (anchorseg_ras.md §1.8; LISA's is 0.5), BCE at LISA's
#   2.0: RES val gIoU 0.303-0.329 over eight runs (mean 0.314; largest-object baseline 0.290), against
#   0.22-0.30 with 0.5 (docs/benchmarks.md: the demo section and the 2026-12-03 afternoon session).
# * Batch 16 images (up to 3 queries each), 600 iterations.
_base_ = ["./lisa_tiny_synthref.py"]

model = dict(
    mask_source=dict(checkpoint=None, image_size=128, encoder=dict(patch_size=8)),
    head=dict(ce_weight=0.0, dice_weight=2.0),
)
train_dataloader = dict(batch_size=16)
max_iters = 600
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100, end=max_iters),
]
