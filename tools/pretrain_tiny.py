#!/usr/bin/env python
"""Pre-train the tiny SAM class-agnostically on the synthetic benchmark, as SAM itself is trained.

At real scale SAM arrives pretrained and frozen; the tiny scale mirrors that. This script builds the
tiny config's own ``SAMMaskSource`` (so the architecture always matches the config), trains encoder +
decoder with random point and box prompts on every annotated object of the synthetic REFER train
split (COCO ``instances.json``), and writes ``<out>/sam_tiny.pth`` (a tensor-only state dict) that the
tiny configs load. Generated files live under ``data/`` and are never committed.

    python tools/pretrain_tiny.py --data data/synthref --out data/tiny_models [--steps 600]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/synthref", help="synthetic benchmark root (tools/make_synthref.py)")
    p.add_argument("--out", default="data/tiny_models")
    p.add_argument("--config", default="configs/lisa/lisa_tiny_synthref.py",
                   help="config whose model.mask_source defines the tiny SAM")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=8, help="images per step")
    p.add_argument("--objects", type=int, default=3, help="prompted objects per image")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="retrain even if the output exists")
    return p.parse_args(argv)


def load_objects(data_root: str):
    """Images and all object masks of the synthetic REFER train split (COCO format)."""
    import cv2
    from pycocotools import mask as mask_utils

    ann_file = os.path.join(data_root, "refer_seg", "synthref", "instances.json")
    img_dir = os.path.join(data_root, "refer_seg", "images", "synthref")
    if not os.path.isfile(ann_file):
        sys.exit(f"error: {ann_file!r} not found; run tools/make_synthref.py --out {data_root} first")
    with open(ann_file) as f:
        coco = json.load(f)
    from reseg.datasets.safe_pickle import load_pickle

    refs = load_pickle(os.path.join(data_root, "refer_seg", "synthref", "refs(unc).p"))
    train_ids = {r["image_id"] for r in refs if r["split"] == "train"}
    anns: dict[int, list] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    images, masks = [], []
    for im in coco["images"]:
        if im["id"] not in train_ids or im["id"] not in anns:
            continue
        h, w = im["height"], im["width"]
        img = cv2.imread(os.path.join(img_dir, im["file_name"]))[..., ::-1].copy()
        ms = []
        for a in anns[im["id"]]:
            seg = a["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
            m = mask_utils.decode(rle).astype(bool)
            if m.sum() >= 16:
                ms.append(m)
        if ms:
            images.append(img)
            masks.append(np.stack(ms))
    return images, masks


def sample_prompt(mask: np.ndarray, scale: float, rng: np.random.Generator):
    """A positive point inside ``mask`` or a jittered box, in the SAM input frame."""
    ys, xs = np.nonzero(mask)
    if rng.random() < 0.5:
        k = rng.integers(len(xs))
        return ("point", np.array([[xs[k] + 0.5, ys[k] + 0.5]]) * scale)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    jit = 0.1 * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0]) * rng.normal(size=4)
    return ("box", (np.array([x0, y0, x1, y1]) + jit) * scale)


def main(argv=None) -> int:
    args = parse_args(argv)
    out_file = os.path.join(args.out, "sam_tiny.pth")
    if os.path.isfile(out_file) and not args.force:
        print(f"{out_file} exists; pass --force to retrain")
        return 0
    from mmengine.config import Config

    from reseg.models.losses import dice_loss, sigmoid_bce_loss
    from reseg.registry import MASK_SOURCES

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = Config.fromfile(args.config).model.mask_source.to_dict()
    cfg.update(checkpoint=None, freeze_image_encoder=False, freeze_prompt_encoder=False, train_mask_decoder=True)
    src = MASK_SOURCES.build(cfg)
    sam = src.sam
    S = src.image_size
    t0 = time.time()
    images, masks = load_objects(args.data)
    print(f"loaded {len(images)} images, {sum(len(m) for m in masks)} objects in {time.time() - t0:.1f}s")
    opt = torch.optim.AdamW(sam.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    t0 = time.time()
    for step in range(args.steps):
        idx = rng.choice(len(images), size=min(args.batch, len(images)), replace=False)
        pixels, sizes = src.preprocess([images[i] for i in idx])
        emb = sam.image_encoder(pixels)
        losses = []
        for b, i in enumerate(idx):
            h, w = images[i].shape[:2]
            scale = S / max(h, w)
            chosen = rng.choice(len(masks[i]), size=min(args.objects, len(masks[i])), replace=False)
            for j in chosen:
                kind, p = sample_prompt(masks[i][j], scale, rng)
                t = torch.as_tensor(p, dtype=torch.float32)
                if kind == "point":
                    sparse, dense = sam.prompt_encoder(points=(t[None], torch.ones(1, 1, dtype=torch.int)),
                                                       boxes=None, masks=None)
                else:
                    sparse, dense = sam.prompt_encoder(points=None, boxes=t[None], masks=None)
                low, _ = sam.mask_decoder(image_embeddings=emb[b: b + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=False)
                logits = src.postprocess(low, sizes[b], (h, w))
                target = torch.from_numpy(masks[i][j][None]).float()
                losses.append(sigmoid_bce_loss(logits, target, reduction="sum")
                              + dice_loss(logits, target, reduction="sum"))
        loss = torch.stack(losses).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}/{args.steps}  loss {loss.item():.4f}  {time.time() - t0:.0f}s", flush=True)
    os.makedirs(args.out, exist_ok=True)
    tmp = out_file + ".tmp"
    torch.save(sam.state_dict(), tmp)
    os.replace(tmp, out_file)
    with open(os.path.join(args.out, "sam_tiny.json"), "w") as f:
        json.dump(dict(config=args.config, mask_source=cfg, steps=args.steps, seed=args.seed,
                       final_loss=float(loss.item()), seconds=round(time.time() - t0, 1)), f, indent=2, default=str)
    print(f"saved {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
