# Tiny LISA with LISA's own recipe on the synthetic benchmark: the base of the tiny configs.
_base_ = [
    "../_base_/models/lisa_tiny.py",
    "../_base_/datasets/synthref_lisa.py",
    "../_base_/datasets/synthref_eval_all.py",
    "../_base_/schedules/cpu_tiny.py",
    "../_base_/default_runtime.py",
]
# The tiny SAM and vision tower pre-trained on the synthetic train split (tools/research/pretrain_tiny.py),
# as SAM and CLIP arrive pretrained at real scale.
model = dict(
    lmm=dict(tiny=dict(vision_checkpoint="data/tiny_models/vision_tiny.pth")),
    mask_source=dict(checkpoint="data/tiny_models/sam_tiny.pth"),
)
