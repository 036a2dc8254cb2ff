# The built-in synthetic benchmark (tools/make_synthref.py), in the real RefCOCO and ReasonSeg formats.
# Training mixes the REFER-format referring split with ReasonSeg-format reasoning queries; validation
# scores both, per dataset. The test section lives in synthref_eval_all.py (every benchmark).
data_root = "data/synthref"

refer_train = dict(type="RefCOCODataset", data_root=data_root + "/refer_seg", dataset="synthref", split_by="unc",
                   split="train", image_dir=data_root + "/refer_seg/images/synthref", num_queries_per_sample=3)
reason_train = dict(type="ReasonSegDataset", data_root=data_root + "/reason_seg", split="train")
refer_val = dict(type="RefCOCODataset", data_root=data_root + "/refer_seg", dataset="synthref", split_by="unc",
                 split="val", image_dir=data_root + "/refer_seg/images/synthref", test_mode=True)
reason_val = dict(type="ReasonSegDataset", data_root=data_root + "/reason_seg", split="val", test_mode=True)

train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="reseg_collate"),
    dataset=dict(type="ConcatDataset", datasets=[refer_train, reason_train, reason_train]),
)
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="reseg_collate"),
    dataset=dict(type="ConcatDataset", datasets=[refer_val, reason_val]),
)
val_evaluator = dict(type="SegIoUMetric", split_by="dataset")
