# AnchorSeg ablation, "query bank" row: the 7 latent queries + anchor condition SAM through the sparse
# prompt only: no spatial prior (no dense mask prompt) and no TMCC losses. Everything else is
# configs/anchorseg/anchorseg_tiny_synthref.py (the full model), so the rows differ in one switch each.
_base_ = ["./anchorseg_tiny_synthref.py"]

model = dict(head=dict(use_prior=False, tmcc=False))
