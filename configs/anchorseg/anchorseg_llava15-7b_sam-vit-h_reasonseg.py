# AnchorSeg at real scale, the released 7B ReasonSeg setting (spec anchorseg_ras.md §1.9,
# scripts/7b_reason_seg_val/train_anchorseg_llava1.5_ema.sh): LLaVA-1.5-7B (CLIP ViT-L/14-336, a 24x24
# token grid) + SAM ViT-H; LoRA r=8 / alpha=16 / dropout 0.05 on the LLM's q_proj and v_proj;
# lm_head, embed_tokens, SAM's mask decoder and prompt encoder, both projections and the new decoder
# embeddings fully trained; CLIP, the projector and SAM's image encoder frozen. AdamW lr 3e-4, betas
# (0.9, 0.95), wd 0, 100 warm-up steps then linear decay to 0 over 120 epochs x 500 steps, micro-batch 2 x
# grad-accum 10 on one GPU, clip 1.0; trained on ReasonSeg train only (3 queries per image), the best
# checkpoint picked by ReasonSeg-val cIoU. Loss: CE 1.0 + BCE 2.0 + Dice 2.0 (mask and TMCC terms).
# Differences from the released training (docs/methods/anchorseg.md): the official CLIP input is
# zero-padded bottom/right with padded patches masked in the ViT; here LLaVA-1.5's centred
# pad-to-square (image_aspect="pad"), which the prior pipeline follows. The released init
# (--version=../dataset_sesame/llava-v1.5-7b) is a local folder whose content (plain LLaVA-1.5 or a
# segmentation-pretrained checkpoint) the code does not tell (§1.9 [GUESS]); point model.lmm.pretrained
# at your starting point. ReasonSeg's "explanatory=0.1" answers are not generated. Set the paths with
# --cfg-options as for LISA.
_base_ = ["../lisa/lisa_llava15-7b_sam-vit-h_reasonseg.py"]

steps_per_epoch = 500
epochs = 120
grad_accum = 10
max_iters = epochs * steps_per_epoch * grad_accum  # iterations are micro-batches
dataset_dir = "datasets"  # holds reason_seg/ laid out as LISA's README describes

model = dict(
    lmm=dict(
        lora=dict(_delete_=True, r=8, lora_alpha=16, lora_dropout=0.05,
                  target_modules=r".*language_model.*\.(q_proj|v_proj)"),
        trainable_modules=("lm_head", "embed_tokens"),
        train_vision_tower=False,
        train_projector=False,
        image_aspect="pad",
    ),
    mask_source=dict(freeze_image_encoder=True, freeze_prompt_encoder=False, train_mask_decoder=True),
    head=dict(type="AnchorSegHead", num_latents=7, use_prior=True, tmcc=True, tmcc_inputs="logits",
              gaussian_ksize=31, gaussian_sigma=7.0, slot_embedding=True, mask_token_embedding=True,
              seg_convention="previous", ce_weight=1.0, bce_weight=2.0, dice_weight=2.0, image_aspect="pad"),
)

train_dataloader = dict(
    batch_size=2,
    dataset=dict(_delete_=True, type="ReasonSegDataset", data_root=dataset_dir + "/reason_seg", split="train",
                 num_queries_per_sample=3),
)

# validation every 10 epochs (--eval_interval=10, read as epochs: an assumption)
train_cfg = dict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=10 * steps_per_epoch * grad_accum)
# optim_wrapper (AdamW 3e-4, betas (0.9, 0.95), clip 1.0, accumulation 10) is LISA's, inherited from
# _base_/schedules/lisa_official.py; the scheduler is restated because its end is this run's max_iters.
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=100 * grad_accum),
    dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=100 * grad_accum, end=max_iters),
]
default_hooks = dict(checkpoint=dict(interval=steps_per_epoch * grad_accum, save_best="seg/cIoU", rule="greater"))
randomness = dict(seed=42)
