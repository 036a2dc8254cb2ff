# The synthetic MaskGroups split (ORES, tools/make_synthref.py) in the MaskGroups-HQ record format:
# candidate pools (`mask_pool` RLE), GT groups, reference masks for hybrid queries, captions (RAS stage 1).
# Validation and test score ORES text / hybrid / overall and the pool's oracle (anchorseg_ras.md §2.5).
ores_root = "data/synthref/mask_groups"
_collate = dict(type="reseg_collate")

ores_train = dict(type="MaskGroupsDataset", data_root=ores_root, split="train", num_queries_per_sample=3)
ores_val = dict(type="MaskGroupsDataset", data_root=ores_root, split="validation", test_mode=True)

train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=_collate,
    dataset=ores_train,
)
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=_collate,
    dataset=ores_val,
)
test_dataloader = val_dataloader
val_evaluator = [
    dict(type="ORESMetric"),
    dict(type="PoolOracleMetric"),
]
test_evaluator = val_evaluator
