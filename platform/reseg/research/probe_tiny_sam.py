"""Can the tiny SAM of a config follow a query whose encoding is perfect? An oracle probe.

The copy probe (``tools/research/probe_tiny_llm.py``) asks whether the tiny LLM can read the question.
This probe asks the other half: if the ``[SEG]`` prompt were a perfect, query-dependent code, could the
config's tiny SAM (as the config loads it: pre-trained checkpoint or random) learn to segment the
referred object within a CPU budget? The LLM is replaced by a bag of words: the mean of learned
embeddings of the expression's token ids (``nn.EmbeddingBag``), then LISA's ``[SEG]`` projection
(:class:`reseg.models.heads.SegProjection`) into SAM's prompt space. Training uses LISA's mask losses
with the config's head weights on the REFER-format *train* split of the synthetic benchmark; the
probe reports gIoU on the *val* split (LISA's rule, ``logits > 0``), overall and per kind of
expression (attribute only, size, absolute position, relation to another object; a bag of words
cannot encode word order, so relations are its weak spot by construction).

* ``--train-encoder``: also train SAM's image encoder (the tiny config freezes it, as LISA does).
* ``--decoder dot``: replace SAM's mask decoder by a per-cell dot product of the prompt with the
  (1x1-projected) image embedding: the simplest query-to-mask readout, to tell the decoder's share
  of the difficulty from the encoder's.
* ``--query``: what encodes the expression. ``bag`` (default): the bag of words above. ``encoder``:
  a 4-layer pre-norm transformer (the tiny LLM's width and heads) over the expression's tokens and
  positions, read at a learned query token appended after them (``--causal`` masks it causally, as
  an LLM's). ``llm``: the config's own tiny LLaMA (a fresh one, text only: ``<s>`` + expression +
  ``[SEG]``, read at ``[SEG]``), to tell the LLM architecture from LLaVA's image tokens and template;
  ``--wrap lisa`` puts the expression inside LISA's conversation and ``--read shift`` reads the state
  before ``[SEG]`` as LISA does, to tell the template and the read position apart.
  Nothing of the image reaches the query code, so the code can only describe the query.
* ``--val-every N``: also report the validation gIoU every N steps (the learning curve).

    python tools/research/probe_tiny_sam.py [--config C] [--steps 300] [--train-encoder] [--decoder sam|dot]
        [--query bag|encoder|llm] [--causal] [--wrap none|lisa] [--read at|shift] [--val-every N]
        [--cfg-options k=v]
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

from reseg.cfg_options import KeyValueAction
from reseg.research.tiny import clipped_step, probe_setup, refer_splits

#: Words that put a synthetic expression in a category (the phrasings of
#: ``reseg.datasets.synthref.language``: "the star left of the red circle", "the circle above the star",
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
    p.add_argument("--query", choices=("bag", "encoder", "llm"), default="bag",
                   help="what encodes the expression (see the module docstring)")
    p.add_argument("--causal", action="store_true", help="--query encoder: causal attention mask")
    p.add_argument("--wrap", choices=("none", "lisa"), default="none",
                   help="--query llm: the expression alone, or inside LISA's conversation (without the image)")
    p.add_argument("--read", choices=("at", "shift"), default="at",
                   help="--query llm: read the state at [SEG], or at the token before it (LISA's shift)")
    p.add_argument("--val-every", type=int, default=0, help="also validate every N steps (0: at the end only)")
    p.add_argument("--val-images", type=int, default=144)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None,
                   help="override config keys, e.g. model.mask_source.checkpoint=data/other/sam_tiny.pth")
    return p.parse_args(argv)


class ExpressionEncoder(nn.Module):
    """A small pre-norm transformer over an expression's tokens, read at a learned query token
    appended after them (right padding, so no row is all padding under a causal mask), optionally
    causal."""

    def __init__(self, vocab: int, width: int, heads: int, layers: int = 4, causal: bool = False,
                 max_len: int = 64) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(max_len, width)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.causal = causal

    def forward(self, ids: list[torch.Tensor]) -> torch.Tensor:
        """``[n, width]`` codes of ``n`` expressions given as token-id tensors."""
        length = max(len(x) for x in ids) + 1
        if length > self.positions.num_embeddings:
            raise ValueError(f"expression of {length - 1} tokens exceeds the encoder's "
                             f"{self.positions.num_embeddings - 1}")
        x = self.query.new_zeros(len(ids), length, self.query.shape[0])
        pad = torch.ones(len(ids), length, dtype=torch.bool)
        for i, t in enumerate(ids):
            x[i, : len(t)] = self.tokens(t)
            x[i, len(t)] = self.query
            pad[i, : len(t) + 1] = False
        x = x + self.positions(torch.arange(length))[None]
        mask = nn.Transformer.generate_square_subsequent_mask(length) if self.causal else None
        h = self.layers(x, mask=mask, src_key_padding_mask=pad)
        read = torch.tensor([len(t) for t in ids])
        return self.norm(h[torch.arange(len(ids)), read])


class TinyLLMText(nn.Module):
    """The config's tiny LLaMA (freshly initialised) on text only: ``<s>`` + expression + ``[SEG]``,
    the last-layer state at ``[SEG]``. Right padding, as the platform's collate pads: a left-padded
    causal row would start with positions that may attend to nothing.

    Args:
        lmm_cfg: the config's ``model.lmm``.
        wrap: ``'none'``: the expression alone. ``'lisa'``: inside LISA's teacher-forced validation
            conversation without the image, ``USER: What is {text} in this image? Please output
            segmentation mask. ASSISTANT: [SEG].`` (``reseg.models.heads.templates``: ``VAL_SHORT``,
            ``VAL_ANSWER``, no system prompt, as the tiny config).
        read: ``'at'``: the state at ``[SEG]``; ``'shift'``: the state of the token before it (LISA's
            convention, spec seg_token_family.md §1.3).
    """

    def __init__(self, lmm_cfg: dict, wrap: str = "none", read: str = "at") -> None:
        super().__init__()
        from reseg.registry import LMMS

        lmm = LMMS.build(lmm_cfg)
        self.seg_id = lmm.add_tokens(["[SEG]"])[0]
        self.tokenizer = lmm.tokenizer
        self.lm = lmm.model.model.language_model
        self.wrap, self.read = wrap, read

    def text_of(self, expression: str) -> str:
        """The text the LLM reads for ``expression`` (without ``<s>``)."""
        if self.wrap == "none":
            return f"{expression}[SEG]"
        from reseg.models.heads import templates as T

        user = T.llava_v1_prompt(T.VAL_SHORT.format(text=expression), image_token="", system="")
        return f"{user} {T.VAL_ANSWER.format(seg='[SEG]')}"

    def forward(self, texts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        seqs = [torch.tensor(tok(self.text_of(t), add_special_tokens=True).input_ids, dtype=torch.long)
                for t in texts]
        at = []
        for t, x in zip(texts, seqs):
            hits = (x == self.seg_id).nonzero(as_tuple=True)[0]
            if len(hits) != 1:
                raise ValueError(f"expected one [SEG] in the probe's text for {t!r}, found {len(hits)}")
            at.append(int(hits[0]) - (1 if self.read == "shift" else 0))
        length = max(len(x) for x in seqs)
        input_ids = torch.full((len(seqs), length), tok.pad_token_id, dtype=torch.long)
        attention = torch.zeros(len(seqs), length, dtype=torch.long)
        for i, x in enumerate(seqs):
            input_ids[i, : len(x)] = x
            attention[i, : len(x)] = 1
        hidden = self.lm(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return hidden[torch.arange(len(seqs)), torch.tensor(at)]


def main(argv=None) -> int:
    args = parse_args(argv)
    from reseg.models.heads import SegProjection
    from reseg.models.lmm.tiny_tokenizer import build_tiny_tokenizer
    from reseg.models.losses import mask_losses
    from reseg.registry import MASK_SOURCES

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
    if args.query == "bag":
        query: nn.Module = nn.EmbeddingBag(len(tok), width, mode="mean")
    elif args.query == "encoder":
        query = ExpressionEncoder(len(tok), width, int(lmm_cfg.tiny.text.num_attention_heads), causal=args.causal)
    else:
        query = TinyLLMText(lmm_cfg.to_dict(), wrap=args.wrap, read=args.read)
    proj = SegProjection(width, sam.prompt_dim)
    dot = nn.Conv2d(sam.prompt_dim, sam.prompt_dim, 1) if args.decoder == "dot" else None
    extra = list(dot.parameters()) if dot is not None else []
    params = ([p for p in query.parameters() if p.requires_grad] + list(proj.parameters()) + extra
              + [p for p in sam.parameters() if p.requires_grad])

    def encode(texts: list[str]) -> torch.Tensor:
        if args.query == "llm":
            return query(texts)  # tokenizes its own text (with or without the conversation)
        ids = [torch.tensor(tok(t, add_special_tokens=False).input_ids or [tok.unk_token_id]) for t in texts]
        if args.query == "bag":
            offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
            return query(torch.cat(ids), offsets)
        return query(ids)

    def forward(samples):
        pixels, sizes = sam.preprocess([s.image for s in samples])
        emb = sam.embed(pixels)
        logits, targets, texts = [], [], []
        for i, s in enumerate(samples):
            prompt = proj(encode([q.text for q in s.queries]))  # [n, C]
            if dot is not None:
                low = torch.einsum("nc,chw->nhw", prompt, dot(emb[i: i + 1])[0])[:, None]
                low = F.interpolate(low, size=sam.mask_input_size, mode="bilinear", align_corners=False)
            else:
                low, _ = sam.decode(emb[i: i + 1], prompt[:, None, :])
            logits.append(sam.postprocess(low, sizes[i], s.size))
            targets.append(torch.from_numpy(np.stack([q.target for q in s.queries])).float())
            texts += [q.text for q in s.queries]
        return logits, targets, texts

    def validate() -> tuple[float, int, str]:
        sam.eval()
        query.eval()
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
        sam.train()
        query.train()
        all_ious = [v for vs in per_kind.values() for v in vs]
        kinds = "  ".join(f"{k} {np.mean(v):.3f} ({len(v)})" for k, v in sorted(per_kind.items()))
        return float(np.mean(all_ious)), len(all_ious), kinds

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
        if args.val_every and (step + 1) % args.val_every == 0 and step + 1 < args.steps:
            giou, n_val, kinds = validate()
            print(f"  val after {step + 1} steps: gIoU {giou:.3f} ({n_val}); {kinds}", flush=True)
    giou, n_val, kinds = validate()
    label = args.query + (" causal" if args.causal and args.query == "encoder" else "")
    if args.query == "llm" and (args.wrap, args.read) != ("none", "at"):
        label += f" wrap={args.wrap} read={args.read}"
    print(f"oracle prompt ({label}), "
          f"decoder {args.decoder}, encoder {'trained' if args.train_encoder else 'frozen'}: "
          f"gIoU {giou:.3f} on {n_val} validation expressions after {args.steps} steps "
          f"({time.time() - t0:.0f}s); by kind: {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
