# Tiny RAS fine-tuned for GRES (gRefCOCO format: multi-target and no-target expressions) on the synthetic
# split (anchorseg_ras.md §2.4 J): the RES config with the gRefCOCO-format data and their own pools
# (`make pools`). Selection is p > 0.5 with an empty output allowed, which no-target expressions need (§2.5).
_base_ = ["./ras_tiny_synthref-res.py"]
model = dict(mask_source=dict(proposer=dict(
    pool_file=["data/synthref/pools/grefcoco_train.jsonl",
               "data/synthref/pools/grefcoco_val.jsonl"])))
_gres = dict(_delete_=True, type="GRefCOCODataset", data_root="data/synthref/refer_seg", dataset="grefcoco_synth")
train_dataloader = dict(dataset=dict(_gres, split="train", num_queries_per_sample=3))
val_dataloader = dict(dataset=dict(_gres, split="val", test_mode=True))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type="GRESMetric", prefix="gres", tasks=["gres"])
test_evaluator = val_evaluator
