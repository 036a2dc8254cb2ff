# Tiny RAS, mask grouping (stage 2, anchorseg_ras.md §2.2, §2.4 J) on the synthetic MaskGroups split:
# text and hybrid (reference-mask) ORES queries, multi-target and empty groups, the dataset's pools.
_base_ = [
    "../_base_/models/ras_tiny.py",
    "../_base_/datasets/synthref_ores.py",
    "../_base_/schedules/cpu_tiny.py",
    "../_base_/default_runtime.py",
]
model = dict(lmm=dict(tiny=dict(vision_checkpoint="data/tiny_models/vision_tiny.pth")))
