# RAS fine-tuned for RES at real scale (anchorseg_ras.md §2.2 "RES-FT"): RefCOCO/+/g with a Co-DETR pool,
# the RES-oriented pool of the paper (§2.4 A: instances with score > 0.3, sorted by score, [GUESS]).
# Co-DETR lives in the mmdetection repository's projects/CO-DETR (not in the mmdet wheel): install the
# extra (`pip install -e .[mmdet]`, mmcv via tools/install_mmdet.sh), point `mmdet_root` at your
# mmdetection checkout and the checkpoint at its weights. Proposals are expensive: compute them once per
# image with tools/make_pools.py and train on the pool file (the PrecomputedProposer lines below).
_base_ = ["./ras_llava15-13b_sam-vit-h_maskgroups-hq.py"]
mmdet_root = "third_party/mmdetection"
codetr = dict(
    type="MMDetProposer",
    config=mmdet_root + "/projects/CO-DETR/configs/codino/co_dino_5scale_swin_l_16xb1_16e_o365tococo.py",
    checkpoint="checkpoints/co_dino_5scale_swin_large_16e_o365tococo.pth",
    score_thr=0.3, nms_iou=0.8, min_area=32, max_candidates=100)
model = dict(mask_source=dict(pool="proposer", proposer=dict(_delete_=True, **codetr)))
# model = dict(mask_source=dict(pool="proposer", proposer=dict(_delete_=True, type="PrecomputedProposer",
#     pool_file=["pools/refcoco_codetr_train.jsonl", "pools/refcoco_codetr_val.jsonl"])))

dataset_dir = "datasets"
refer_root = dataset_dir + "/refer_seg"
coco_images = refer_root + "/images/mscoco/images/train2014"


def _refer(name, split_by, split="train", **kw):
    return dict(type="RefCOCODataset", data_root=refer_root, dataset=name, split_by=split_by, split=split,
                image_dir=coco_images, **kw)


train_dataloader = dict(dataset=dict(_delete_=True, type="ConcatDataset", datasets=[
    _refer("refcoco", "unc", num_queries_per_sample=3), _refer("refcoco+", "unc", num_queries_per_sample=3),
    _refer("refcocog", "umd", num_queries_per_sample=3)]))
val_dataloader = dict(dataset=dict(_delete_=True, **_refer("refcoco", "unc", split="val", test_mode=True)))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type="SegIoUMetric", prefix="res", tasks=["res"])
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(save_best="res/cIoU"))
