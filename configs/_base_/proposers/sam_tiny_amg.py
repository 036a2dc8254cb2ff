# The point-pretrained tiny SAM (tools/research/pretrain_tiny.py -> data/tiny_models/sam_tiny.pth) as an automatic
# mask proposer for the synthetic benchmark (`make pools`). SAM's automatic-mask-generator settings
# (anchorseg_ras.md §2.4 A) with the thresholds of the tiny SAM, whose predicted-IoU head is weak: a
# 8 x 8 point grid (SAM: 32 x 32) keeps it ~0.5 s an image on a CPU core (12 x 12: ~1 s, oracle cIoU
# 0.69 instead of 0.66 on 12 RES validation images).
proposer = dict(
    type="SAMAutomaticProposer", variant="custom", image_size=256, prompt_dim=64,
    encoder=dict(embed_dim=64, depth=2, num_heads=2), decoder_mlp_dim=256, decoder_heads=4, iou_head_hidden_dim=64,
    checkpoint="data/tiny_models/sam_tiny.pth",
    multimask_output=False,  # the tiny SAM was trained with single-mask outputs only
    amg=dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.7, box_nms_thresh=0.7,
             points_per_batch=64),
    min_area=32, nms_iou=0.8, max_candidates=32,
)
