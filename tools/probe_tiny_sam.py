#!/usr/bin/env python
"""Can the tiny SAM of a config follow a query whose encoding is perfect? An oracle probe.

The copy probe (``tools/probe_tiny_llm.py``) asks whether the tiny LLM can read the question. This
probe asks the other half: if the ``[SEG]`` prompt were a perfect, query-dependent code, could the
config's tiny SAM (as the config loads it: pre-trained checkpoint or random) learn to segment the
referred object within a CPU budget? The LLM is replaced by a bag of words: the mean of learned
embeddings of the expression's token ids (``nn.EmbeddingBag``), then LISA's ``[SEG]`` projection
(:class:`reseg_lisa.head.SegProjection`) into SAM's prompt space. Training uses LISA's mask losses
with the config's head weights on the REFER-format *train* split of the synthetic benchmark; the
probe reports gIoU on the *val* split (LISA's rule, ``logits > 0``), overall and per kind of
expression (attribute only, size, absolute position, relation to another object; a bag of words
cannot encode word order, so relations are its weak spot by construction).

* ``--train-encoder``: also train SAM's image encoder (the tiny config freezes it, as LISA does).
* ``--decoder dot``: replace SAM's mask decoder by a per-cell dot product of the prompt with the
  (1x1-projected) image embedding: the simplest query-to-mask readout, to tell the decoder's share
  of the difficulty from the encoder's.

    python tools/probe_tiny_sam.py [--config C] [--steps 300] [--train-encoder] [--decoder sam|dot] [--cfg-options k=v]
"""
from __future__ import annotations

import argparse
import collections
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import DictAction

from pretrain_tiny import clipped_step, probe_setup, refer_splits  # tools/ is on sys.path when run as a script

#: Words that put a synthetic expression in a category (the phrasings of
#: ``reseg.datasets.synth_language``: "the star left of the red circle", "the circle above the star",
#: "the leftmost shape", "the shape furthest to the left", "the upper square", "the big star").
RELATION_WORDS = ("of", "above", "below", "under")
POSITION_WORDS = ("left", "right", "top", "bottom", "upper", "lower", "highest", "lowest")
SIZE_WORDS = ("big", "bigger", "biggest", "large", "larger", "largest", "small", "smaller", "smallest")


def expression_kind(text: str) -> str:
    """``'relation'``, ``'position'``, ``'size'`` or ``'attribute'`` (checked in that order)."""
    words = text.lower().replace(".", " ").split()
    if any(w in RELATION_WORDS for w in words):
        return "relation"
    if any(any(p in w for p in POSITION_WORDS) for w in words):  # also "leftmost", "bottommost"
        return "position"
    if any(w in SIZE_WORDS for w in words):
        return "size"
    return "attribute"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/lisa/lisa_tiny_synthref.py")
    p.add_argument("--data", default="data/synthref")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8, help="images per step (up to 3 expressions each)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-encoder", action="store_true", help="train SAM's image encoder too")
    p.add_argument("--decoder", choices=("sam", "dot"), default="sam")
    p.add_argument("--val-images", type=int, default=144)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default=None,
                   help="override config keys, e.g. model.mask_source.checkpoint=data/other/sam_tiny.pth")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from reseg.models.lmm.tiny_tokenizer import build_tiny_tokenizer
    from reseg.models.losses import mask_losses
    from reseg.registry import MASK_SOURCES
    from reseg_lisa.head import SegProjection

    full, rng = probe_setup(args.config, args.seed, "probe_tiny_sam", args.cfg_options)
    lmm_cfg = full.model.lmm
    ms_cfg = full.model.mask_source.to_dict()
    ms_cfg["freeze_image_encoder"] = not args.train_encoder
    sam = MASK_SOURCES.build(ms_cfg)
    tok = build_tiny_tokenizer(lmm_cfg.tiny.tokenizer_dir)  # the tiny LLaVA's own (offline) tokenizer
    head = full.model.get("head", {})
    bce_w, dice_w = float(head.get("bce_weight", 2.0)), float(head.get("dice_weight", 0.5))
    train, val = refer_splits(args.data, args.seed)
    width = int(lmm_cfg.tiny.text.hidden_size)
    bag = nn.EmbeddingBag(len(tok), width, mode="mean")
    proj = SegProjection(width, sam.prompt_dim)
    dot = nn.Conv2d(sam.prompt_dim, sam.prompt_dim, 1) if args.decoder == "dot" else None
    extra = list(dot.parameters()) if dot is not None else []
    params = list(bag.parameters()) + list(proj.parameters()) + extra + [p for p in sam.parameters() if p.requires_grad]

    def forward(samples):
        pixels, sizes = sam.preprocess([s.image for s in samples])
        emb = sam.embed(pixels)
        logits, targets, texts = [], [], []
        for i, s in enumerate(samples):
            ids = [torch.tensor(tok(q.text, add_special_tokens=False).input_ids or [tok.unk_token_id]) for q in s.queries]
            offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
            prompt = proj(bag(torch.cat(ids), offsets))  # [n, C]
            if dot is not None:
                low = torch.einsum("nc,chw->nhw", prompt, dot(emb[i: i + 1])[0])[:, None]
                low = F.interpolate(low, size=sam.mask_input_size, mode="bilinear", align_corners=False)
            else:
                low, _ = sam.decode(emb[i: i + 1], prompt[:, None, :])
            logits.append(sam.postprocess(low, sizes[i], s.size))
            targets.append(torch.from_numpy(np.stack([q.target for q in s.queries])).float())
            texts += [q.text for q in s.queries]
        return logits, targets, texts

    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    t0 = time.time()
    sam.train()
    for step in range(args.steps):
        logits, targets, _ = forward([train[rng.randrange(len(train))] for _ in range(args.batch)])
        losses = mask_losses(logits, targets, bce_w, dice_w)
        loss = sum(losses.values())
        clipped_step(loss, opt, sched, params)
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}/{args.steps}  " + "  ".join(f"{k} {v.item():.4f}" for k, v in losses.items())
                  + f"  {time.time() - t0:.0f}s", flush=True)
    sam.eval()
    per_kind: dict[str, list[float]] = collections.defaultdict(list)
    with torch.no_grad():
        n = min(args.val_images, len(val))
        for start in range(0, n, args.batch):
            logits, targets, texts = forward([val[k] for k in range(start, min(start + args.batch, n))])
            for lg, tg in zip(logits, targets):
                for m, g in zip(lg, tg):
                    p, t = m > 0, g > 0.5
                    union = int((p | t).sum())
                    iou = 1.0 if union == 0 else int((p & t).sum()) / union
                    per_kind[expression_kind(texts.pop(0))].append(iou)
    all_ious = [v for vs in per_kind.values() for v in vs]
    kinds = "  ".join(f"{k} {np.mean(v):.3f} ({len(v)})" for k, v in sorted(per_kind.items()))
    print(f"oracle prompt, decoder {args.decoder}, encoder {'trained' if args.train_encoder else 'frozen'}: "
          f"gIoU {np.mean(all_ious):.3f} on {len(all_ious)} validation expressions after {args.steps} steps "
          f"({time.time() - t0:.0f}s); by kind: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
