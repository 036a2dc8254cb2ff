# One test run over every synthetic benchmark, one table each (tools/test.py groups by prefix):
# RES (REFER format), ReasonSeg (short/long), gRefCOCO-format GRES and FP-RefCOCO-format false premises.
_eval_root = "data/synthref"
_refer_root = _eval_root + "/refer_seg"
_collate = dict(type="reseg_collate")

test_dataloader = dict(
    batch_size=8,
    num_workers=1,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=_collate,
    dataset=dict(type="ConcatDataset", datasets=[
        dict(type="RefCOCODataset", data_root=_refer_root, dataset="synthref", split_by="unc", split="val",
             test_mode=True),
        dict(type="ReasonSegDataset", data_root=_eval_root + "/reason_seg", split="val", test_mode=True),
        dict(type="GRefCOCODataset", data_root=_refer_root, dataset="grefcoco_synth", split="val", test_mode=True),
        dict(type="FPRefCOCODataset", data_root=_refer_root, dataset="fprefcoco_synth", split="val",
             test_mode=True),
    ]),
)
test_evaluator = [
    dict(type="SegIoUMetric", prefix="res", tasks=["res"]),
    dict(type="SegIoUMetric", prefix="reasonseg", tasks=["reason"], split_by="is_sentence"),
    dict(type="GRESMetric", prefix="gres", tasks=["gres"]),
    dict(type="FalsePremiseMetric", prefix="fp", tasks=["fp"]),
]
