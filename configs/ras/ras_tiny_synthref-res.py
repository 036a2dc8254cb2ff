# Tiny RAS fine-tuned for RES (anchorseg_ras.md §2.2 "RES-FT", §2.4 J) on the REFER-format synthetic split.
# RES data has no pools, so the candidates come from the tiny SAM's automatic masks, computed once per
# image by `make pools` (tools/make_pools.py with configs/_base_/proposers/sam_tiny_amg.py) and read back
# by a PrecomputedProposer. Single-target RES selects the top-1 candidate (§2.4 I, [GUESS]).
_base_ = [
    "../_base_/models/ras_tiny.py",
    "../_base_/schedules/cpu_tiny.py",
    "../_base_/default_runtime.py",
]
pools_dir = "data/synthref/pools"
refer_root = "data/synthref/refer_seg"
model = dict(
    lmm=dict(tiny=dict(vision_checkpoint="data/tiny_models/vision_tiny.pth")),
    mask_source=dict(
        pool="proposer",
        proposer=dict(_delete_=True, type="PrecomputedProposer",
                      pool_file=[pools_dir + "/synthref_train.jsonl", pools_dir + "/synthref_val.jsonl"]),
    ),
)
_refer = dict(type="RefCOCODataset", data_root=refer_root, dataset="synthref", split_by="unc",
              image_dir=refer_root + "/images/synthref")
_collate = dict(type="reseg_collate")
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True), collate_fn=_collate,
    dataset=dict(_refer, split="train", num_queries_per_sample=3))
val_dataloader = dict(
    batch_size=8, num_workers=1, sampler=dict(type="DefaultSampler", shuffle=False), collate_fn=_collate,
    dataset=dict(_refer, split="val", test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(type="SegIoUMetric", prefix="res", tasks=["res"])
test_evaluator = val_evaluator
