# LISA-7B on ReasonSeg with PyTorch FSDP (mmengine FlexibleRunner); see docs/scaling.md.
_base_ = ["./lisa_llava15-7b_sam-vit-h_reasonseg.py", "../_base_/strategies/fsdp.py"]
