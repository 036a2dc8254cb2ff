# LISA at real scale: LLaVA-1.5-7B + SAM ViT-H, trained on RefCOCO/+/g + ReasonSeg, validated on
# ReasonSeg val (spec seg_token_family.md §1). For users' GPUs: set the paths below (or override with
# --cfg-options model.lmm.pretrained=... model.mask_source.checkpoint=... dataset roots).
_base_ = [
    "../_base_/models/lisa_llava15_7b_sam_vit_h.py",
    "../_base_/schedules/lisa_official.py",
    "../_base_/default_runtime.py",
]

dataset_dir = "datasets"  # holds refer_seg/ and reason_seg/ laid out as LISA's README describes
refer_root = dataset_dir + "/refer_seg"
coco_images = refer_root + "/images/mscoco/images/train2014"


def _refer(name, split_by):
    return dict(type="RefCOCODataset", data_root=refer_root, dataset=name, split_by=split_by, split="train",
                image_dir=coco_images, num_queries_per_sample=3)


train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    collate_fn=dict(type="reseg_collate"),
    dataset=dict(type="ConcatDataset", datasets=[
        _refer("refcoco", "unc"), _refer("refcoco+", "unc"), _refer("refcocog", "umd"),
        dict(type="ReasonSegDataset", data_root=dataset_dir + "/reason_seg", split="train"),
    ]),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    sampler=dict(type="DefaultSampler", shuffle=False),
    collate_fn=dict(type="reseg_collate"),
    dataset=dict(type="ReasonSegDataset", data_root=dataset_dir + "/reason_seg", split="val", test_mode=True),
)
test_dataloader = val_dataloader
val_evaluator = dict(type="SegIoUMetric", split_by="is_sentence")
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(interval=5000, save_best="seg/gIoU", rule="greater"))
