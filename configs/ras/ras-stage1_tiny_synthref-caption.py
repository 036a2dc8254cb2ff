# RAS stage 1 (anchorseg_ras.md §2.2, §2.4 J): only the mask projector trains; the LMM captions the
# image from the candidates' mask tokens alone (no global image tokens). The synthetic MaskGroups
# records carry a caption generated from the scene description. Stage 2 starts from this checkpoint:
#   python tools/train.py configs/ras/ras_tiny_synthref-ores.py --cfg-options load_from=work_dirs/<this>/iter_200.pth
# [GUESS] (§2.4 J): which masks are captioned (here: the image's candidate pool) and the recipe.
_base_ = ["./ras_tiny_synthref-ores.py"]
model = dict(
    lmm=dict(trainable_modules=[], train_projector=False),  # LLM, embeddings, image projector frozen
    head=dict(stage="caption"),
)
# one conversation per image (its caption), so more images per batch
train_dataloader = dict(batch_size=16)
max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=10**9)  # captioning is not scored
val_cfg = None
val_dataloader = None
val_evaluator = None
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=20, end=max_iters),
]
