# Tiny LISA as `make demo` trains it: lisa_tiny-rsam128_synthref.py on a pre-trained tiny SAM, frozen whole.
_base_ = ["./lisa_tiny-rsam128_synthref.py"]

# `make pretrain-demo` trains this SAM on the synthetic train split with point, box and attribute prompts
# (tools/research/pretrain_tiny.py --sam-attr-prompts); LISA trains its decoder, here it stays frozen so that the
# [SEG] projection learns to address the prompts the decoder already reads (docs/benchmarks.md,
# "Tiny LISA: the demo").
model = dict(mask_source=dict(checkpoint="data/tiny_models/sam128_attr/sam_tiny.pth", train_mask_decoder=False))
