#!/usr/bin/env python
"""Where does a ``[SEG]`` token attend? Similarity heat-maps, S-IoU and P-prompt for any [SEG]-family head.

    python tools/analyze_seg_token.py CONFIG CHECKPOINT|none [--split val|test] [--out DIR]
        [--max-samples N] [--p-sam original|model] [--p-points sasp|extremes]

For each query with a target in the config's ``--split`` dataloader (the first ``--max-samples``
images), the similarity between the ``[SEG]`` state and the image-token states (READ's map,
``specs/seg_token_family.md`` §2.3; raw dot product, each row's own image tokens) is

* saved as an overlay ``image | heat-map (+ the P-prompt points) | ground truth`` in ``--out``;
* scored by the two diagnostics of the READ paper (``specs/read_paper_notes.md``):
  - **S-IoU**: the full-resolution map thresholded at the per-query best t in {0, 0.01, ..., 1};
  - **P-prompt**: SAM prompted with the similarity points alone (no ``[SEG]`` embedding). The
    points are READ's SasP selection (``--p-points sasp``: the head's settings for a READ head,
    READ-7B's otherwise) or the paper's k most / k least similar cells (``extremes``); integer
    cell pixels, no DtoC. ``--p-sam original`` (default) uses the SAM the config loads before
    training (``model.mask_source`` with its checkpoint), as the paper prompts the original SAM;
    ``model`` uses the checkpoint's (fine-tuned) decoder.

The teacher-forced masks of the model itself are scored on the same queries for comparison.
gIoU/cIoU follow LISA (§1.8). A table is printed and ``analyze_seg_token.json`` written to ``--out``.
Works for every head with LISA's ``[SEG]`` gather (LISA, READ, LISA with ``[REJ]``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import warnings

import cv2
import numpy as np
import torch
from mmengine.config import Config

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("config")
    p.add_argument("checkpoint", help="checkpoint file, or 'none' for the model at initialisation")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="which dataloader of the config to read (val_dataloader or test_dataloader)")
    p.add_argument("--out", help="output folder (default work_dirs/analyze_seg_token/<config name>)")
    p.add_argument("--max-samples", type=int, default=50, help="images to analyse (0 = all)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--p-sam", choices=["original", "model"], default="original")
    p.add_argument("--p-points", choices=["sasp", "extremes"], default="sasp")
    p.add_argument("--num-points", type=int, help="SasP points for P-prompt (default: the head's, or 30)")
    p.add_argument("--down-sample", type=int, help="SasP grid down-sampling (default: the head's, or 2)")
    p.add_argument("--k", type=int, default=5, help="--p-points extremes: k positive and k negative points")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None)
    return p.parse_args(argv)


# ------------------------------------------------------------------------------ drawing
POINT_COLORS = {1: (40, 220, 40), 0: (230, 40, 40), -1: (160, 160, 160)}


def analysis_panel(image: np.ndarray, smap: np.ndarray, gt: np.ndarray, points: np.ndarray, labels: np.ndarray,
                   lines: list[str], min_height: int = 256) -> np.ndarray:
    """``image | heat-map with points (green +, red -, grey neutral) | ground truth`` above ``lines``."""
    from reseg.engine.visualization import GT_COLOR, blend, heatmap_overlay

    h, w = image.shape[:2]
    s = max(1, int(np.ceil(min_height / h)))
    up = lambda a: cv2.resize(a, (w * s, h * s), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    img = up(image)
    heat = heatmap_overlay(img, cv2.resize(smap.astype(np.float32), (w * s, h * s), interpolation=cv2.INTER_LINEAR))
    for (x, y), lab in zip(points.tolist(), labels.tolist()):
        c = (int((x + 0.5) * s), int((y + 0.5) * s))
        cv2.circle(heat, c, 4, (255, 255, 255), -1)
        cv2.circle(heat, c, 3, POINT_COLORS[int(lab)], -1)
    gt_panel = blend(img, up(gt.astype(np.uint8)).astype(bool), GT_COLOR)
    sep = np.full((img.shape[0], 4, 3), 255, np.uint8)
    row = np.concatenate([img, sep, heat, sep, gt_panel], 1)
    wrapped = [part for line in lines for part in textwrap.wrap(line, max(20, row.shape[1] // 9)) or [""]]
    band = np.full((18 * len(wrapped) + 8, row.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(wrapped):
        cv2.putText(band, line, (6, 18 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([row, band], 0)


# ------------------------------------------------------------------------------ analysis
def p_prompt_settings(head, grid: tuple[int, int], args) -> dict:
    """The SasP settings of the P-prompt points: CLI > the head's (a READ head) > READ-7B's."""
    from reseg_read import functional as RF

    d = args.down_sample or getattr(head, "down_sample", None) or RF.READ7B_DOWN_SAMPLE
    if args.down_sample is None and not hasattr(head, "down_sample") and (grid[0] % d or grid[1] % d):
        d = 1  # READ-7B's 2 does not divide this grid
    return dict(num_points=args.num_points or getattr(head, "num_points", RF.READ7B_NUM_POINTS), down_sample=d,
                thresholds=getattr(head, "thresholds", "fixed"), t_pos=getattr(head, "t_pos", RF.READ_T_POS),
                t_neg=getattr(head, "t_neg", RF.READ_T_NEG), stat_k=getattr(head, "stat_k", RF.PAPER_STAT_K))


def p_prompt_points(sim: torch.Tensor, grid, size, aspect: str, input_size: int, rule: str, settings: dict,
                    k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer points ``[P, 2]`` and labels ``[P]`` of one query's similarity ``sim [Np]``."""
    from reseg_read import functional as RF

    if rule == "sasp":
        pts, labels = RF.similarity_as_points(sim[None], grid, size, aspect=aspect, input_size=input_size,
                                              use_dtoc=False, **settings)
        return pts[0], labels[0]
    values, cells = RF.coarse_grid(sim[None], grid, settings["down_sample"], size, aspect)
    idx, labels = RF.extreme_points(values[0], k)
    return cells[idx].float(), labels


def load_model(cfg: Config, checkpoint: str, device: str):
    """The config's model with the checkpoint's weights (``'none'``: as initialised), in eval mode."""
    from reseg.engine.checkpoint import load_checkpoint_file
    from reseg.plugins import load_plugins
    from reseg.registry import MODELS

    load_plugins()  # the heads are plugins
    model = MODELS.build(cfg.model)
    if checkpoint != "none":
        result = model.load_state_dict(load_checkpoint_file(checkpoint)["state_dict"], strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise SystemExit(f"checkpoint {checkpoint!r} does not match the config: missing "
                             f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}")
    return model.to(device).eval()


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("reseg"):
        return analyze(args)


def analyze(args) -> int:
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    import reseg.datasets  # noqa: F401
    from reseg.evaluation.functional import query_stats, summarize_giou_ciou
    from reseg.models.heads import SegTokenHead
    from reseg.models.segmentor import assemble
    from reseg.registry import DATASETS, MASK_SOURCES
    from reseg_read import functional as RF

    model = load_model(cfg, args.checkpoint, args.device)
    head = model.head
    if not isinstance(head, SegTokenHead):
        sys.exit(f"{type(head).__name__} is not a [SEG]-family head (reseg.models.heads.SegTokenHead)")
    lmm = model.lmm
    frame = lmm.image_token_frame
    grid, aspect, input_size = tuple(frame.grid), frame.aspect, frame.input_size
    settings = p_prompt_settings(head, grid, args)

    sam, sam_kind = model.mask_source, "model"
    if args.p_sam == "original":
        if cfg.model.mask_source.get("checkpoint"):
            sam, sam_kind = MASK_SOURCES.build(cfg.model.mask_source).to(args.device).eval(), "original"
        else:
            warnings.warn("model.mask_source.checkpoint is None: there is no original SAM to load; "
                          "P-prompt uses the checkpoint's decoder (--p-sam model)", stacklevel=2)

    loader = cfg.get(f"{args.split}_dataloader")
    if not loader:
        sys.exit(f"the config has no {args.split}_dataloader")
    ds = DATASETS.build(loader.dataset)
    n_images = len(ds) if args.max_samples <= 0 else min(args.max_samples, len(ds))
    out_dir = args.out or os.path.join("work_dirs", "analyze_seg_token",
                                       os.path.splitext(os.path.basename(args.config))[0])
    os.makedirs(out_dir, exist_ok=True)

    stats: dict[str, list] = {"S-IoU": [], "P-prompt": [], "model": []}
    records, skipped = [], 0
    for start in range(0, n_images, args.batch_size):
        batch = [ds[i] for i in range(start, min(start + args.batch_size, n_images))]
        with torch.no_grad():
            ctx = model.prepare(batch, "val")
            model.run_lmm(ctx)
            slots = ctx.slots.where(kind="mask")
            sim = ctx.similarity(slots)
            preds = assemble(ctx, head.predict_by_feat(head(ctx), ctx))
            pixels, sam_sizes = sam.preprocess([s.image for s in batch])
            sam_emb = sam.embed(pixels)
        for j, slot in enumerate(slots.slots):
            si, qi, inst = int(slots.image[j]), slot.query, slot.instance
            s = batch[si]
            q = s.queries[qi]
            gt = q.target if inst is None else q.masks[inst]
            if s.task == "vqa" or not gt.any():
                skipped += 1
                continue
            with torch.no_grad():
                smap = RF.full_resolution_map(sim[j: j + 1], grid, s.size, aspect, input_size)[0]
                t_best, s_mask = RF.best_threshold_mask(smap, gt, q.ignore)
                pts, labels = p_prompt_points(sim[j], grid, s.size, aspect, input_size, args.p_points, settings,
                                              args.k)
                coords = RF.to_sam_frame(pts, s.size, sam_sizes[si])
                low, _ = sam.decode(sam_emb[si: si + 1], sam_emb.new_zeros((1, 0, sam.prompt_dim)),
                                    points=(coords[None], labels[None]))
                p_mask = (sam.postprocess(low, sam_sizes[si], s.size)[0] > 0).cpu().numpy()
            m_mask = preds[si][qi].binary_mask()
            row = {name: query_stats(mask, gt, q.ignore)
                   for name, mask in (("S-IoU", s_mask), ("P-prompt", p_mask), ("model", m_mask))}
            for name, st in row.items():
                stats[name].append(st)
            n = len(records)
            png = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{n:04d}_{s.sample_id}_q{qi}") + ".png"
            lines = [f"Q: {q.text}",
                     f"S-IoU {row['S-IoU'].iou:.3f} (t={t_best:.2f})  P-prompt {row['P-prompt'].iou:.3f}  "
                     f"model {row['model'].iou:.3f}"]
            panel = analysis_panel(s.image, smap.cpu().numpy(), gt, pts.long().cpu().numpy(),
                                   labels.cpu().numpy(), lines)
            cv2.imwrite(os.path.join(out_dir, png), panel[..., ::-1])
            records.append(dict(sample_id=s.sample_id, query=q.text, best_t=t_best, overlay=png,
                                **{f"{k}_iou": v.iou for k, v in row.items()}))

    metrics = {name: summarize_giou_ciou(st) for name, st in stats.items()}
    result = dict(config=os.path.abspath(args.config), checkpoint=args.checkpoint, split=args.split,
                  head=type(head).__name__, aspect=aspect, grid=list(grid), n_images=n_images,
                  n_queries=len(records), n_skipped=skipped,
                  p_prompt=dict(sam=sam_kind, points=args.p_points, k=args.k, **settings),
                  metrics=metrics, queries=records)
    print(f"{os.path.basename(args.config)} | {args.checkpoint} | {args.split} | {len(records)} queries "
          f"({skipped} without a target skipped) | P-prompt: {args.p_points} points, {sam_kind} SAM")
    print(f"{'':<10}{'gIoU':>8}{'cIoU':>8}")
    for name, m in metrics.items():
        print(f"{name:<10}{m['gIoU']:>8.4f}{m['cIoU']:>8.4f}")
    path = os.path.join(out_dir, "analyze_seg_token.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"overlays and {os.path.basename(path)} written to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
