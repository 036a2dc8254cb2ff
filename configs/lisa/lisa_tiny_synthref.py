# Tiny LISA on the built-in synthetic benchmark: `make demo` trains and evaluates this on CPU.
_base_ = [
    "../_base_/models/lisa_tiny.py",
    "../_base_/datasets/synthref_lisa.py",
    "../_base_/schedules/cpu_tiny.py",
    "../_base_/default_runtime.py",
]
# The tiny SAM pre-trained class-agnostically on the synthetic masks (tools/pretrain_tiny.py).
model = dict(mask_source=dict(checkpoint="data/tiny_models/sam_tiny.pth"))
