"""Pre-train the tiny SAM and the tiny vision tower (and, optionally, the whole tiny LLaVA) on the synthetic benchmark.

At real scale SAM and the CLIP tower arrive pretrained; the tiny scale mirrors that, using only the
synthetic REFER *train* split (COCO ``instances.json``; no query text, no validation data):

* ``sam``: the tiny config's own ``SAMMaskSource`` (so the architecture always matches the config) is
  trained, encoder + decoder, with random point and box prompts on every annotated object, as SAM
  itself is trained; an auxiliary dense head asks the image embedding to encode the colour and shape
  under each cell (discarded afterwards) -> ``<out>/sam_tiny.pth``. ``--sam-attr-prompts`` also
  trains the decoder to follow *attribute prompts* (learned colour/shape embeddings as the sparse
  prompt, target = every matching object, :func:`attribute_target`; the embeddings are discarded
  afterwards). Real SAM's released decoder saw points, boxes and masks only, but the SAM paper's
  text-to-mask experiment (§7.5) trains it with CLIP embeddings of the object as prompts, which is
  what this mirrors at the tiny scale. It costs point-prompt quality, so it is off by default;
  ``make demo`` turns it on for the demo's 128 px SAM (``configs/lisa/lisa_tiny-sam128_synthref.py``),
  with which tiny LISA's masks follow the colour and shape a query names rather than giving every
  query of an image nearly the same mask (``tools/analyze_predictions.py`` measures both; the numbers
  are in docs/benchmarks.md). ``--sam-located-share P`` adds an anchor
  point to that share of the attribute prompts (its positional encoding, as SAM encodes a point,
  added to the same token; the anchor may lie outside the image), and the target becomes the single
  matching object nearest to it (:func:`located_target`; with the field ``"any"``, the nearest object
  of any kind): SAM §7.5's "text prompt plus a point", in the one token a ``[SEG]`` state gives;
* ``vision``: the tiny config's CLIP vision tower learns dense per-patch labels (the colour and the
  shape of the visible object under each patch, or background), a stand-in for the visual
  vocabulary a pretrained CLIP brings -> ``<out>/vision_tiny.pth``;
* ``llava``: the whole tiny LLaVA (pre-trained tower frozen, projector and LLM trained) is
  instruction-tuned with text answers, a stand-in for LLaVA-1.5, which LISA starts from: referring
  questions in LISA's question templates answered with the referred object's colour and shape in
  LISA's answer templates (``"Sure, it is red circle."`` where LISA later says ``"Sure, it is
  [SEG]."``), plus scene VQA (:mod:`reseg.datasets.synthref.vqa`) -> ``<out>/llava_tiny.pth``;
  ``--llava-copy-share`` answers that share of the referring questions by repeating the expression
  instead. Load it with ``--cfg-options model.lmm.tiny.checkpoint=<out>/llava_tiny.pth``. It stands
  in for the question-dependent ``[SEG]`` states a pretrained LLaVA gives LISA; tiny LISA trained
  from it does no better than from random weights (docs/benchmarks.md), so it is off by default.

All are tensor-only state dicts; generated files live under ``data/`` and are never committed.

    python tools/research/pretrain_tiny.py --data data/synthref --out data/tiny_models [--parts vision,sam[,llava]]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from reseg.research.tiny import clipped_step, expression


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/synthref", help="synthetic benchmark root (tools/make_synthref.py)")
    p.add_argument("--out", default="data/tiny_models")
    p.add_argument("--config", default="configs/lisa/lisa_tiny_synthref.py",
                   help="config whose model.mask_source defines the tiny SAM")
    p.add_argument("--parts", default="vision,sam", help="comma list of: vision, sam, llava "
                   "(llava loads the vision tower of <out>/vision_tiny.pth; an experiment, off by default)")
    p.add_argument("--steps", type=int, default=600, help="SAM steps")
    p.add_argument("--batch", type=int, default=8, help="images per SAM step")
    p.add_argument("--sam-aux-weight", type=float, default=0.5,
                   help="weight of the dense colour/shape head on SAM's embedding (0: class-agnostic only)")
    p.add_argument("--sam-attr-prompts", action="store_true",
                   help="also train SAM's decoder with attribute prompts (an experiment; off by default)")
    p.add_argument("--sam-located-share", type=float, default=0.0,
                   help="with --sam-attr-prompts: share of attribute prompts that also carry an anchor point "
                        "(its positional encoding added to the token; target = the matching object nearest "
                        "to it, or the nearest object of any kind; an experiment, off by default)")
    p.add_argument("--vision-steps", type=int, default=300)
    p.add_argument("--vision-batch", type=int, default=32)
    p.add_argument("--llava-steps", type=int, default=300)
    p.add_argument("--llava-batch", type=int, default=8, help="images per LLaVA step (3 questions each)")
    p.add_argument("--llava-copy-share", type=float, default=0.0,
                   help="share of referring answers that repeat the expression instead of naming colour and shape")
    p.add_argument("--objects", type=int, default=6, help="prompted objects per image")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="retrain even if the output exists")
    args = p.parse_args(argv)
    if not 0.0 <= args.sam_located_share <= 1.0:
        p.error(f"--sam-located-share: expected a share in [0, 1], got {args.sam_located_share}")
    if args.sam_located_share > 0 and not args.sam_attr_prompts:
        p.error("--sam-located-share needs --sam-attr-prompts (it locates attribute prompts)")
    return args


def load_objects(data_root: str):
    """Images and all object masks of the synthetic REFER train split (COCO format)."""
    import cv2

    from reseg.datasets.io import coco_segmentation_to_mask

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
    images, masks, labels = [], [], []
    for im in coco["images"]:
        if im["id"] not in train_ids or im["id"] not in anns:
            continue
        h, w = im["height"], im["width"]
        img = cv2.imread(os.path.join(img_dir, im["file_name"]))[..., ::-1].copy()
        ms, ls = [], []
        for a in anns[im["id"]]:
            m = coco_segmentation_to_mask(a["segmentation"], h, w)
            if m.sum() >= 16:
                ms.append(m)
                synth = a.get("synth", {})
                ls.append((synth.get("colour"), synth.get("kind")))
        if ms:
            images.append(img)
            masks.append(np.stack(ms))
            labels.append(ls)
    return images, masks, labels


def sample_prompt(mask: np.ndarray, scale: float, rng: np.random.Generator, kind: str = "any"):
    """A positive point inside ``mask`` (``[1, 2]``) or a jittered box (``[4]``), in the SAM frame."""
    ys, xs = np.nonzero(mask)
    if kind == "point" or (kind == "any" and rng.random() < 0.5):
        k = rng.integers(len(xs))
        return ("point", np.array([[xs[k] + 0.5, ys[k] + 0.5]]) * scale)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    jit = 0.1 * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0]) * rng.normal(size=4)
    return ("box", (np.array([x0, y0, x1, y1]) + jit) * scale)


#: What an attribute prompt names, by the code drawn for it in ``train_sam``: 0 colour, 1 shape, 2 both.
ATTR_FIELDS = ("colour", "shape", "both")


#: What a *located* attribute prompt names (``--sam-located-share``): an attribute of ``ATTR_FIELDS``, or
#: ``"any"`` (no attribute: every object is a candidate).
LOCATED_FIELDS = ATTR_FIELDS + ("any",)


def matching_objects(labels: list, j: int, field: str) -> list[int]:
    """Indices of the objects that match object ``j`` in ``field`` (one of ``LOCATED_FIELDS``), ``j`` included."""
    if field not in LOCATED_FIELDS:
        raise ValueError(f"attribute prompt field {field!r}: expected one of {LOCATED_FIELDS}")
    c, k = labels[j]
    return [n for n, (c2, k2) in enumerate(labels)
            if field == "any" or ((field == "shape" or c2 == c) and (field == "colour" or k2 == k))]


def attribute_target(masks: np.ndarray, labels: list, j: int, field: str) -> np.ndarray:
    """The target of an attribute prompt built from object ``j``: the union of *every* object of the
    image that matches ``j`` in ``field`` (``"colour"``, ``"shape"`` or ``"both"``), ``j`` included.

    ``masks`` is ``[n, H, W]`` bool, ``labels`` the objects' ``(colour, kind)`` pairs in the same order.
    """
    if field not in ATTR_FIELDS:
        raise ValueError(f"attribute prompt field {field!r}: expected one of {ATTR_FIELDS}")
    return masks[matching_objects(labels, j, field)].any(0)


def located_target(masks: np.ndarray, labels: list, j: int, field: str, anchor) -> np.ndarray:
    """The target of a *located* attribute prompt: of the objects matching ``j`` in ``field`` (one of
    ``LOCATED_FIELDS``), the single one nearest to ``anchor``.

    ``anchor`` is ``(x, y)`` in image pixels and may lie outside the image (far to the left, it picks the
    leftmost match). The distance is the anchor's to the object's nearest pixel centre, so an anchor
    inside an object picks that object; objects without visible pixels are never picked; ties go to the
    lower index. This is SAM's text-plus-point prompting (SAM paper §7.5: a point added to a text prompt
    picks among the objects the text names) folded into one sparse token.
    """
    match = matching_objects(labels, j, field)
    ax, ay = float(anchor[0]), float(anchor[1])
    best, best_d = None, np.inf
    for n in match:
        ys, xs = np.nonzero(masks[n])
        if len(xs) == 0:
            continue
        d = float(np.min((xs + 0.5 - ax) ** 2 + (ys + 0.5 - ay) ** 2))
        if d < best_d:
            best, best_d = n, d
    if best is None:
        raise ValueError(f"located prompt from object {j}: no object matching it in {field!r} has visible pixels")
    return masks[best].copy()


def grid_labels(masks, labels, scale: float, S: int, grid: int, colours, kinds) -> tuple[np.ndarray, np.ndarray]:
    """Colour / shape ids (0 = background) at the centres of SAM's ``grid x grid`` embedding cells.

    SAM's frame: the image resized by ``scale`` (longest side ``S``) at the top-left, zero padding.
    """
    step = S / grid
    centres = (np.arange(grid) + 0.5) * step / scale  # in original pixels
    h, w = masks.shape[1:]
    ys = np.clip(centres.astype(int), 0, None)
    col = np.zeros((grid, grid), np.int64)
    shp = np.zeros((grid, grid), np.int64)
    valid_y, valid_x = ys < h, ys < w
    for m, (c, k) in zip(masks, labels):
        sub = np.zeros((grid, grid), bool)
        sub[np.ix_(valid_y, valid_x)] = m[np.ix_(ys[valid_y], ys[valid_x])]
        col[sub] = colours.index(c) + 1 if c in colours else 0
        shp[sub] = kinds.index(k) + 1 if k in kinds else 0
    return col.reshape(-1), shp.reshape(-1)


def train_sam(args, images, masks, labels) -> None:
    from mmengine.config import Config

    from reseg.models.losses import dice_loss, sigmoid_bce_loss
    from reseg.registry import MASK_SOURCES

    out_file = os.path.join(args.out, "sam_tiny.pth")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    cfg = Config.fromfile(args.config).model.mask_source.to_dict()
    cfg.update(checkpoint=None, freeze_image_encoder=False, freeze_prompt_encoder=False, train_mask_decoder=True)
    src = MASK_SOURCES.build(cfg)
    sam = src.sam
    S = src.image_size
    from reseg.datasets.synthref.scene import COLOURS, KINDS

    colours, kinds = list(COLOURS), list(KINDS)
    grid = src.embedding_size[0]
    heads = torch.nn.ModuleDict(dict(colour=torch.nn.Linear(src.prompt_dim, len(colours) + 1),
                                     shape=torch.nn.Linear(src.prompt_dim, len(kinds) + 1)))
    dense_targets = [grid_labels(m, lab, S / max(im.shape[:2]), S, grid, colours, kinds)
                     for im, m, lab in zip(images, masks, labels)]
    # Attribute prompts (learned colour/shape embeddings, discarded afterwards): the decoder learns to
    # follow a *semantic* sparse prompt, not only points and boxes (see the module docstring).
    attr = torch.nn.ModuleDict(dict(colour=torch.nn.Embedding(len(colours), src.prompt_dim),
                                    shape=torch.nn.Embedding(len(kinds), src.prompt_dim)))
    opt = torch.optim.AdamW(list(sam.parameters()) + list(heads.parameters()) + list(attr.parameters()),
                            lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    t0 = time.time()
    for step in range(args.steps):
        idx = rng.choice(len(images), size=min(args.batch, len(images)), replace=False)
        pixels, sizes = src.preprocess([images[i] for i in idx])
        emb = sam.image_encoder(pixels)
        losses = []
        pe = sam.prompt_encoder
        for b, i in enumerate(idx):
            h, w = images[i].shape[:2]
            scale = S / max(h, w)
            chosen = rng.choice(len(masks[i]), size=min(args.objects, len(masks[i])), replace=False)
            kind_p = [0.35, 0.3, 0.35] if args.sam_attr_prompts else [0.5, 0.5, 0.0]
            kinds_of = rng.choice(3, size=len(chosen), p=kind_p)
            for kind, sel in (("point", chosen[kinds_of == 0]), ("box", chosen[kinds_of == 1]),
                              ("attr", chosen[kinds_of == 2])):
                if len(sel) == 0:
                    continue
                if kind == "attr":  # colour and/or shape of the object -> every object that matches
                    which = rng.integers(0, 3, size=len(sel))  # LOCATED_FIELDS: 0 colour, 1 shape, 2 both, 3 any
                    # located prompts (an anchor added to the token -> the nearest match only); no draws at share 0
                    located = (rng.random(len(sel)) < args.sam_located_share if args.sam_located_share > 0
                               else np.zeros(len(sel), bool))
                    anchors = np.zeros((len(sel), 2))
                    if located.any():
                        which[located] = rng.integers(0, 4, size=int(located.sum()))
                        anchors[located] = rng.uniform(-0.5, 1.5, size=(int(located.sum()), 2)) * [w, h]
                    cid = torch.tensor([colours.index(labels[i][j][0]) for j in sel])
                    kid = torch.tensor([kinds.index(labels[i][j][1]) for j in sel])
                    wsel = torch.as_tensor(which)[:, None]
                    sparse = (attr["colour"](cid) * ((wsel == 0) | (wsel == 2))
                              + attr["shape"](kid) * ((wsel == 1) | (wsel == 2)))
                    if located.any():  # + the anchor's positional encoding, as a point prompt's (SAM input frame)
                        where = torch.as_tensor(anchors * scale, dtype=torch.float32)[:, None, :]
                        enc = pe.pe_layer.forward_with_coords(where, pe.input_image_size)[:, 0]
                        sparse = sparse + enc * torch.as_tensor(located, dtype=torch.float32)[:, None]
                    sparse = sparse[:, None, :]
                    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(len(sel), -1, *src.embedding_size)
                    tgt = [located_target(masks[i], labels[i], j, LOCATED_FIELDS[wh], a) if loc
                           else attribute_target(masks[i], labels[i], j, ATTR_FIELDS[wh])
                           for j, wh, loc, a in zip(sel, which, located, anchors)]
                    low, _ = sam.mask_decoder(image_embeddings=emb[b: b + 1], image_pe=pe.get_dense_pe(),
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=False)
                    logits = src.postprocess(low, sizes[b], (h, w))
                    target = torch.from_numpy(np.stack(tgt)).float()
                    losses.append(sigmoid_bce_loss(logits, target) + dice_loss(logits, target))
                    continue
                prompts = torch.as_tensor(np.stack([sample_prompt(masks[i][j], scale, rng, kind)[1] for j in sel]),
                                          dtype=torch.float32)
                if kind == "point":  # [k, 1, 2] one positive point each
                    positive = torch.ones(len(sel), 1, dtype=torch.int)
                    sparse, dense = pe(points=(prompts, positive), boxes=None, masks=None)
                else:
                    sparse, dense = pe(points=None, boxes=prompts, masks=None)
                low, _ = sam.mask_decoder(image_embeddings=emb[b: b + 1], image_pe=pe.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=False)
                logits = src.postprocess(low, sizes[b], (h, w))
                target = torch.from_numpy(masks[i][sel]).float()
                losses.append(sigmoid_bce_loss(logits, target) + dice_loss(logits, target))
        losses = [torch.cat(losses)]
        cells = emb.flatten(2).transpose(1, 2)  # [B, grid*grid, C]
        tc = torch.as_tensor(np.stack([dense_targets[i][0] for i in idx]))
        ts = torch.as_tensor(np.stack([dense_targets[i][1] for i in idx]))
        aux = (torch.nn.functional.cross_entropy(heads["colour"](cells).flatten(0, 1), tc.flatten())
               + torch.nn.functional.cross_entropy(heads["shape"](cells).flatten(0, 1), ts.flatten()))
        loss = losses[0].mean() + args.sam_aux_weight * aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"[sam] aux {aux.item():.4f}", end="  ")
            print(f"[sam] step {step:4d}/{args.steps}  loss {loss.item():.4f}  {time.time() - t0:.0f}s", flush=True)
    _save(sam.state_dict(), out_file, dict(config=args.config, mask_source=cfg, steps=args.steps, seed=args.seed,
                                           batch=args.batch, aux_weight=args.sam_aux_weight,
                                           attr_prompts=args.sam_attr_prompts,
                                           located_share=args.sam_located_share,
                                           final_loss=float(loss.item()), seconds=round(time.time() - t0, 1)))


def patch_labels(image_shape, masks, labels, lmm, colours, kinds) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch colour and shape ids (0 = background) in the vision tower's input frame.

    The label maps go through the same geometry as the image (pad-to-square or centre crop, then
    resize), sampled at patch centres with nearest-neighbour.
    """
    import cv2

    h, w = image_shape[:2]
    col = np.zeros((h, w), np.uint8)
    shp = np.zeros((h, w), np.uint8)
    for m, (c, k) in zip(masks, labels):
        col[m] = colours.index(c) + 1 if c in colours else 0
        shp[m] = kinds.index(k) + 1 if k in kinds else 0
    gh, gw = lmm.image_grid
    size = lmm.model.config.vision_config.image_size
    out = []
    for lab in (col, shp):
        if lmm.image_aspect == "pad":
            s = max(h, w)
            canvas = np.zeros((s, s), np.uint8)
            top, left = (s - h) // 2, (s - w) // 2
            canvas[top: top + h, left: left + w] = lab
        else:  # resize shortest side, centre crop
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            canvas = lab[top: top + s, left: left + s]
        sq = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_NEAREST)
        step = size // gw
        out.append(sq[step // 2:: step, step // 2:: step][:gh, :gw].reshape(-1))
    return out[0], out[1]


def train_vision(args, images, masks, labels) -> None:
    from mmengine.config import Config

    from reseg.datasets.synthref.scene import COLOURS, KINDS
    from reseg.registry import LMMS

    out_file = os.path.join(args.out, "vision_tiny.pth")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    cfg = Config.fromfile(args.config).model.lmm.to_dict()
    cfg["tiny"].pop("vision_checkpoint", None)
    lmm = LMMS.build(cfg)
    tower = lmm.model.model.vision_tower
    layer = lmm.model.config.vision_feature_layer
    colours, kinds = list(COLOURS), list(KINDS)
    dim = lmm.model.config.vision_config.hidden_size
    heads = torch.nn.ModuleDict(dict(colour=torch.nn.Linear(dim, len(colours) + 1),
                                     shape=torch.nn.Linear(dim, len(kinds) + 1)))
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.vision_steps, pct_start=0.05)
    targets = [patch_labels(im.shape, m, lab, lmm, colours, kinds) for im, m, lab in zip(images, masks, labels)]
    t0 = time.time()
    for step in range(args.vision_steps):
        idx = rng.choice(len(images), size=min(args.vision_batch, len(images)), replace=False)
        pixels = lmm.preprocess_images([images[i] for i in idx])
        hs = tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:]  # drop CLS
        tc = torch.as_tensor(np.stack([targets[i][0] for i in idx]), dtype=torch.long)
        ts = torch.as_tensor(np.stack([targets[i][1] for i in idx]), dtype=torch.long)
        loss = (torch.nn.functional.cross_entropy(heads["colour"](hs).flatten(0, 1), tc.flatten())
                + torch.nn.functional.cross_entropy(heads["shape"](hs).flatten(0, 1), ts.flatten()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.vision_steps - 1:
            print(f"[vision] step {step:4d}/{args.vision_steps}  loss {loss.item():.4f}  {time.time() - t0:.0f}s",
                  flush=True)
    _save(tower.state_dict(), out_file, dict(config=args.config, steps=args.vision_steps, seed=args.seed,
                                             final_loss=float(loss.item()), seconds=round(time.time() - t0, 1)))


def referring_answer_conversations(sample, attrs: dict, system_prompt: str, image_token: str, rng,
                                   copy_share: float = 0.0) -> list:
    """``(prompt, answer)`` pairs: each referring query of ``sample`` in one of LISA's question
    templates, answered in one of LISA's answer templates with ``[SEG]`` replaced by the referred
    object's ``"<colour> <kind>"`` (``attrs``: annotation id -> (colour, kind)) or, for a
    ``copy_share`` of them, by the :func:`expression` itself. Queries whose target is not exactly
    one annotated object are skipped."""
    from reseg.models.heads import templates as T

    out = []
    for q in sample.queries:
        ann_ids = [a for a in q.meta.get("ann_ids", []) if a in attrs]
        if len(ann_ids) != 1:
            continue
        target = expression(q.text) if rng.random() < copy_share else " ".join(attrs[ann_ids[0]])
        question = T.SHORT_QUESTIONS[rng.integers(len(T.SHORT_QUESTIONS))].format(text=q.text.strip())
        answer = T.ANSWERS[rng.integers(len(T.ANSWERS))].format(seg=target)
        out.append((T.llava_v1_prompt(question, image_token, system_prompt), " " + answer))
    return out


def train_llava(args) -> None:
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from reseg.datasets.io import read_json
    from reseg.models.heads import templates as T
    from reseg.registry import DATASETS, LMMS

    DefaultScope.get_instance("pretrain_tiny_llava", scope_name="reseg")
    out_file = os.path.join(args.out, "llava_tiny.pth")
    vision_file = os.path.join(args.out, "vision_tiny.pth")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed + 2)
    full = Config.fromfile(args.config)
    cfg = full.model.lmm.to_dict()
    cfg["tiny"].pop("checkpoint", None)
    cfg["tiny"]["vision_checkpoint"] = vision_file if os.path.isfile(vision_file) else None
    cfg.update(trainable_modules="all", train_vision_tower=False, train_projector=True, lora=None)
    lmm = LMMS.build(cfg)
    system_prompt = full.model.head.get("system_prompt", T.SYSTEM_PROMPT)
    image_token = lmm.tokenizer.convert_ids_to_tokens(lmm.image_token_id)
    root = os.path.join(args.data, "refer_seg")
    common = dict(data_root=root, dataset="synthref", split_by="unc", split="train",
                  image_dir=os.path.join(root, "images", "synthref"), num_queries_per_sample=3, seed=args.seed)
    refer = DATASETS.build(dict(type="RefCOCODataset", **common))
    vqa = DATASETS.build(dict(type="SynthVQADataset", **common))
    attrs = {a["id"]: (a["synth"]["colour"], a["synth"]["kind"])
             for a in read_json(os.path.join(root, "synthref", "instances.json"))["annotations"] if "synth" in a}
    params = [p for p in lmm.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.llava_steps, pct_start=0.1)
    lmm.train()
    t0 = time.time()
    for step in range(args.llava_steps):
        samples, convs, image_of = [], [], []
        for _ in range(args.llava_batch):
            use_vqa = rng.random() < 0.25
            ds = vqa if use_vqa else refer
            s = ds[int(rng.integers(len(ds)))]
            pairs = ([(T.llava_v1_prompt(q.text, image_token, system_prompt), " " + q.answer) for q in s.queries]
                     if use_vqa else referring_answer_conversations(s, attrs, system_prompt, image_token, rng,
                                                                    args.llava_copy_share))
            if not pairs:
                continue
            samples.append(s)
            convs += pairs
            image_of += [len(samples) - 1] * len(pairs)
        tokens = lmm.collate([lmm.encode(p, a) for p, a in convs])
        feats = lmm.image_features(lmm.preprocess_images([s.image for s in samples]))
        out = lmm(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], image_feats=feats,
                  image_index=torch.tensor(image_of, device=feats.device), labels=tokens["labels"])
        loss = out["loss_text"]
        clipped_step(loss, opt, sched, params)
        if step % 50 == 0 or step == args.llava_steps - 1:
            print(f"[llava] step {step:4d}/{args.llava_steps}  loss {loss.item():.4f}  {time.time() - t0:.0f}s",
                  flush=True)
    _save(lmm.model.state_dict(), out_file, dict(config=args.config, steps=args.llava_steps, seed=args.seed,
                                                 final_loss=float(loss.item()), seconds=round(time.time() - t0, 1)))


def _save(state_dict: dict, out_file: str, info: dict) -> None:
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    tmp = out_file + ".tmp"
    torch.save(state_dict, tmp)
    os.replace(tmp, out_file)
    with open(os.path.splitext(out_file)[0] + ".json", "w") as f:
        json.dump(info, f, indent=2, default=str)
    print(f"saved {out_file}")


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    files = {"sam": "sam_tiny.pth", "vision": "vision_tiny.pth", "llava": "llava_tiny.pth"}
    unknown = set(parts) - set(files)
    if unknown:
        sys.exit(f"error: unknown --parts {sorted(unknown)}; expected a comma list of {sorted(files)}")
    todo = [p for p in parts if args.force or not os.path.isfile(os.path.join(args.out, files[p]))]
    for p in set(parts) - set(todo):
        print(f"{os.path.join(args.out, files[p])} exists; pass --force to retrain")
    if not todo:
        return 0
    t0 = time.time()
    images, masks, labels = load_objects(args.data)
    print(f"loaded {len(images)} images, {sum(len(m) for m in masks)} objects in {time.time() - t0:.1f}s")
    if "vision" in todo:
        train_vision(args, images, masks, labels)
    if "llava" in todo:
        train_llava(args)
    if "sam" in todo:
        train_sam(args, images, masks, labels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
