# Tiny LISA trained on a LISA-style mixture (spec seg_token_family.md §1.7) that adds text-only VQA
# conversations about the synthetic scenes (SynthVQADataset) to the referring and reasoning data.
# docs/benchmarks.md run 9 (measured: no gain over the plain tiny config).
_base_ = ["./lisa_tiny_synthref.py"]
train_dataloader = dict(dataset=dict(_delete_=True, type="MixedDataset", datasets=[
    dict(type="RefCOCODataset", data_root="data/synthref/refer_seg", dataset="synthref", split="train",
         num_queries_per_sample=3),
    dict(type="ReasonSegDataset", data_root="data/synthref/reason_seg", split="train"),
    dict(type="SynthVQADataset", data_root="data/synthref/refer_seg", split="train", num_queries_per_sample=3)],
    rates=[3, 1, 3], length=8000))
