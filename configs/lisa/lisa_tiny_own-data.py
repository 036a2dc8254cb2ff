# Tiny LISA on your own data (docs/own_data.md): the tiny LISA config (configs/lisa/lisa_tiny_synthref.py:
# model, pre-trained tiny SAM / vision tower, 500-iteration CPU schedule) trained and evaluated on the
# output of tools/convert_own_data.py, in the gRefCOCO format (one, several or no target per query).
#
#   python tools/convert_own_data.py my_data.jsonl --out data/own_data
#   python tools/train.py configs/lisa/lisa_tiny_own-data.py --cfg-options data_root=data/own_data
#
# `--cfg-options data_root=...` moves every path below (tools/train.py, tools/test.py, tools/make_pools.py).
_base_ = ["./lisa_tiny_synthref.py"]

data_root = "data/own_data"  # the converter's --out
dataset_name = "own_data"  # the converter's --dataset (set it here: image_dir below is derived from it)

_own = dict(type="GRefCOCODataset", data_root=data_root + "/refer_seg", dataset=dataset_name, split_by="unc",
            image_dir="images/" + dataset_name)  # image_dir is relative to data_root: the converter's link or copy
train_dataloader = dict(dataset=dict(_own, _delete_=True, split="train", num_queries_per_sample=3))
val_dataloader = dict(dataset=dict(_own, _delete_=True, split="val", test_mode=True))
test_dataloader = dict(dataset=dict(_own, _delete_=True, split="val", test_mode=True))  # split=test if you have one

# gIoU / cIoU over every query, and short / long (is_sentence) subsets; GRES N-acc / T-acc for the
# no-target queries (tiny LISA has no rejection token: "no target" = an empty mask; see
# configs/lisa/lisa-rej_tiny_synthref-mix.py for GSVA's [REJ]).
val_evaluator = [
    dict(type="SegIoUMetric", prefix="seg", split_by="is_sentence"),
    dict(type="GRESMetric", prefix="gres", pred_exists="mask"),
]
test_evaluator = val_evaluator
