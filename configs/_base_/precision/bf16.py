# bf16 mixed precision: mmengine's AmpOptimWrapper runs the forward under torch.autocast(bfloat16).
# Needs a CUDA device (the runner refuses it on CPU). The real-scale schedules inherit it.
# The runner checks that `precision` and the optim wrapper agree; it never changes either
# (docs/getting_started.md, "The config is what runs").
precision = "bf16"
optim_wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16")
