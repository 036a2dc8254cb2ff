# Tiny RAS on your own data (docs/own_data.md): the GRES config (configs/ras/ras_tiny_synthref-gres.py:
# selection with an empty output allowed, for no-target queries) on the output of tools/convert_own_data.py.
# RAS selects among candidate masks: compute the pools of both splits first (docs/proposers.md), e.g.
#
#   python tools/make_pools.py configs/_base_/proposers/sam_tiny_amg.py \
#       --dataset-config configs/ras/ras_tiny_own-data.py --split train --out data/own_data/pools/train.jsonl
#   (the same with --split val --out data/own_data/pools/val.jsonl)
#
# `--cfg-options data_root=...` (`--dataset-cfg-options` for make_pools) moves every path below.
_base_ = ["./ras_tiny_synthref-gres.py"]

data_root = "data/own_data"  # the converter's --out
dataset_name = "own_data"  # the converter's --dataset

model = dict(mask_source=dict(proposer=dict(
    pool_file=[data_root + "/pools/train.jsonl", data_root + "/pools/val.jsonl"])))
_own = dict(_delete_=True, type="GRefCOCODataset", data_root=data_root + "/refer_seg", dataset=dataset_name,
            split_by="unc", image_dir="images/" + dataset_name)
train_dataloader = dict(dataset=dict(_own, split="train", num_queries_per_sample=3))
val_dataloader = dict(dataset=dict(_own, split="val", test_mode=True))
test_dataloader = val_dataloader
