# The autoregressive baseline of RAS (anchorseg_ras.md §2.2: the LMM writes the selected candidates'
# indices as text) on the same tiny model, pool and data as ras_tiny_synthref-ores.py, for
# `tools/benchmark.py ras` (single pass vs generation: latency ratio and cIoU).
_base_ = ["./ras_tiny_synthref-ores.py"]
model = dict(
    head=dict(_delete_=True, type="RASARHead", top1_tasks=("res",), label_rule="coverage", label_thr=0.5),
    val_mode="generate",   # a selection exists only as generated text
    max_new_tokens=48,     # "1, 2, ..., 12": enough for every candidate of a 12-mask pool
)
