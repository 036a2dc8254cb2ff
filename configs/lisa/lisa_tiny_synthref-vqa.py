# Tiny LISA with text-only VQA about the synthetic scenes added to its training mix, as LISA mixes in VQA.
_base_ = ["./lisa_tiny_synthref.py"]
train_dataloader = dict(dataset=dict(_delete_=True, type="MixedDataset", datasets=[
    dict(type="RefCOCODataset", data_root="data/synthref/refer_seg", dataset="synthref", split="train",
         num_queries_per_sample=3),
    dict(type="ReasonSegDataset", data_root="data/synthref/reason_seg", split="train"),
    dict(type="SynthVQADataset", data_root="data/synthref/refer_seg", split="train", num_queries_per_sample=3)],
    rates=[3, 1, 3], length=8000))
