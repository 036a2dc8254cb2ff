# RAS at real scale on MaskGroups-HQ (ORES; anchorseg_ras.md §2.3, §2.5): LLaVA-1.5-13B, the §2.4 B
# encoder set, the dataset's own SAM pools (`mask_pool`), text and hybrid (reference-mask) queries.
# For users' GPUs: set the paths below or override them with --cfg-options. Start from a stage-1 /
# stage-2 checkpoint with load_from=... (stage 1: --cfg-options model.head.stage=caption with a
# captioning dataset; §2.4 J).
_base_ = [
    "../_base_/models/ras_llava15_13b.py",
    "../_base_/schedules/ras_official.py",
    "../_base_/default_runtime.py",
]
data_root = "datasets/MaskGroups-HQ"  # train.json / validation.json (exported from the HF dataset) + images_resized/
_collate = dict(type="reseg_collate")
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True), collate_fn=_collate,
    dataset=dict(type="MaskGroupsDataset", data_root=data_root, split="train", num_queries_per_sample=1))
val_dataloader = dict(
    batch_size=1, num_workers=2, sampler=dict(type="DefaultSampler", shuffle=False), collate_fn=_collate,
    dataset=dict(type="MaskGroupsDataset", data_root=data_root, split="validation", test_mode=True))
test_dataloader = val_dataloader
val_evaluator = [dict(type="ORESMetric"), dict(type="PoolOracleMetric")]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(interval=1000, save_best="ores/cIoU", rule="greater"))
