# READ at real scale, the released READ-7B setting (spec seg_token_family.md §2.3-§2.4): LLaVA-1.5-7B
# (CLIP ViT-L/14-336: a 24x24 token grid), SAM ViT-H, 12x12 selection grid (down_sample=2), 30 points,
# thresholds 0.8 / 0.2, DtoC with the code's exp(-d^2) kernel. CLIP images are resized and centre-cropped
# as READ's code assumes (§2.7). Everything else is the real-scale LISA config
# (configs/lisa/lisa_llava15-7b_sam-vit-h_reasonseg.py: LoRA r=8, lr 3e-4, LISA's schedule and data).
# Differences from the released training, not reproduced here (docs/methods/read.md): READ starts from
# the SESAME-LLaVA-v1.5-7B weights and trains on SESAME's mixture (sem_seg, refer_seg, FP-RefCOCO,
# VQA, R-RefCOCO, ReasonSeg at 10,1,1,1,1,10); README note [4] (READ-7B test) uses lora_r=64, lr 1e-4
# and dice weight 4. Set the paths with --cfg-options as for LISA.
_base_ = ["../lisa/lisa_llava15-7b_sam-vit-h_reasonseg.py"]

model = dict(
    lmm=dict(image_aspect="crop"),
    head=dict(type="READHead", num_points=30, down_sample=2, thresholds="fixed", t_pos=0.8, t_neg=0.2,
              dtoc=True, dtoc_kernel="gaussian", seg_prompt=True, image_aspect="crop"),
)
# READ selects its checkpoint by cIoU (§2.4), LISA by gIoU.
default_hooks = dict(checkpoint=dict(save_best="seg/cIoU", rule="greater"))
