# Tiny LISA with GSVA's [REJ] token (spec seg_token_family.md §4.1-4.3), trained on a LISA-style rate
# mixture (§1.7) of every synthetic [SEG]-family source: referring, reasoning, gRefCOCO-format
# multi/no-target and FP-RefCOCO-format false premises. No-target and false-premise queries are
# answered with [REJ], so GRES N-acc and FP See are scored for real. Same test section as the plain
# tiny LISA (every benchmark, one table each).
_base_ = ["./lisa_tiny_synthref.py"]

_root = "data/synthref/refer_seg"
model = dict(head=dict(rej_token="[REJ]", rej_in_mask_loss=True))
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type="MixedDataset",
        datasets=[
            dict(type="RefCOCODataset", data_root=_root, dataset="synthref", split="train"),
            dict(type="ReasonSegDataset", data_root="data/synthref/reason_seg", split="train"),
            dict(type="GRefCOCODataset", data_root=_root, dataset="grefcoco_synth", split="train"),
            dict(type="FPRefCOCODataset", data_root=_root, dataset="fprefcoco_synth", split="train"),
        ],
        rates=[3, 1, 2, 2],
        length=4000,
    ),
)
