# AnchorSeg ablation, "query bank + prior" row: the anchor's similarity map enters SAM as a dense mask
# prompt (spec anchorseg_ras.md §1.5), without the TMCC losses (§1.7). Everything else is
# configs/anchorseg/anchorseg_tiny_synthref.py (the full model = this + TMCC).
_base_ = ["./anchorseg_tiny_synthref.py"]

model = dict(head=dict(use_prior=True, tmcc=False))
