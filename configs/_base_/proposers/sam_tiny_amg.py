# The point-pre-trained tiny SAM (make pretrain) as the automatic mask proposer of `make pools`.
proposer = dict(
    type="SAMAutomaticProposer", variant="custom", image_size=256, prompt_dim=64,
    encoder=dict(embed_dim=64, depth=2, num_heads=2), decoder_mlp_dim=256, decoder_heads=4, iou_head_hidden_dim=64,
    checkpoint="data/tiny_models/sam_tiny.pth",
    multimask_output=False,  # the tiny SAM was trained with single-mask outputs only
    # SAM's generator with an 8 x 8 grid (SAM: 32 x 32) for CPU speed and thresholds low enough for the tiny
    # SAM's untrained IoU head (docs/benchmarks.md, "Candidate pools and their oracle")
    amg=dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.7, box_nms_thresh=0.7,
             points_per_batch=64),
    min_area=32, nms_iou=0.8, max_candidates=32,
)
