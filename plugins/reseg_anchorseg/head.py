"""The AnchorSeg head: a language-grounded query bank, an anchor spatial prior and TMCC (anchorseg_ras.md §1).

AnchorSeg (ACL 2026) keeps LISA's ``[SEG]`` pipeline (:class:`reseg_lisa.head.LISAHead`: templates,
teacher-forced validation, ``[REJ]``, the mask losses) and changes what drives SAM:

* **query bank** (§1.2-§1.4): every ``[SEG]`` of an answer is preceded by ``K`` latent tokens
  ``[LATENT0]`` ... ``[LATENT{K-1}]``, supervised by the ordinary text loss and generated at
  inference. The anchor state (read as LISA reads ``[SEG]``) goes through ``projection`` (LISA's
  ``text_hidden_fcs``), the ``K`` latent states through a separate MLP of the same shape
  (``latent_projection``, ``latent_hidden_fcs``); SAM's sparse prompt is ``Z = [z_1 .. z_K, z_anc]``.
* **slot and mask-token embeddings** (§1.6): the official decoder adds a learned embedding to each
  of the ``K + 1`` prompt slots and another to SAM's 4 mask tokens. ``segment_anything`` is not
  modified: the slot embedding is added to ``Z`` before the decoder call (the decoder only ever
  sees the sum, which is what the official ``sparse + slot_pos`` computes), and the mask-token one
  is passed as :meth:`SAMMaskSource.decode`'s ``mask_token_offset``, which runs the decoder with
  ``mask_tokens.weight + offset`` through ``torch.func.functional_call``.
* **spatial prior** (§1.5): the raw dot product of the anchor with the image-token states, min-max
  normalised per query, brought to the original image and then to SAM's mask-prompt frame, enters
  SAM through the dense mask-prompt path (``mask_downscaling``, made trainable here).
* **TMCC** (§1.7-§1.8): Token-to-Mask and Mask-to-Token losses on the prior, weighted by the same
  BCE / Dice weights as the mask loss (2.0 / 2.0 in the released script).

The math is in :mod:`reseg_anchorseg.functional`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from reseg.models.head import BatchContext, Conversation
from reseg.models.losses import MASK_COUNT_EPS, mask_losses
from reseg.structures import QueryPrediction, Sample
from reseg_lisa.head import LISAHead, SegProjection
from reseg_read.functional import minmax_normalize, similarity_map
from reseg_read.head import image_token_frame

from .functional import (ANCHORSEG_NUM_LATENTS, ASPECTS, GAUSSIAN_KSIZE, GAUSSIAN_SIGMA, LATENT_TOKEN, TMCC_INPUTS,
                         m2t_loss, prior_full_resolution, query_bank_positions, t2m_loss, to_sam_mask_frame)

#: ``ctx.lmm_out`` keys: the gathered bank ``(anchor states, latent states, similarity)`` and the
#: per-image priors ``(s^ [n, Np], full-resolution map [n, H, W])`` of the last decode.
BANK_KEY = "anchorseg_bank"
PRIORS_KEY = "anchorseg_priors"
#: AnchorSeg's released loss weights: CE 1.0, BCE 2.0, Dice 2.0 (§1.8; the code default for Dice is 0.5).
ANCHORSEG_DICE_WEIGHT = 2.0


def _bad(key: str, expected: str, got) -> ValueError:
    return ValueError(f"AnchorSegHead: model.head.{key} must be {expected}, got {got!r}")


def _learned_embedding(rows: int, dim: int) -> nn.Parameter:
    """``randn(rows, dim) / sqrt(dim)``: the official init of both new decoder embeddings (§1.6)."""
    return nn.Parameter(torch.randn(rows, dim) / math.sqrt(dim))


class AnchorSegHead(LISAHead):
    """AnchorSeg: ``K`` latent queries + an anchor ``[SEG]`` whose image similarity is SAM's mask prompt.

    Args:
        num_latents: ``K``, latent tokens before every ``[SEG]`` (7, §1.2; a config value here,
            hard-wired in the official decoder).
        latent_token: format of the latent token names (``"[LATENT{}]"``, §1.2).
        use_prior: feed the anchor prior P through SAM's dense mask-prompt path (§1.5 step 4);
            False = no dense prompt (the "query bank" ablation).
        tmcc: add the T2M and M2T losses (§1.7-§1.8).
        tmcc_inputs: ``'logits'`` (the code: the ``[0, 1]`` maps go through the sigmoid as logits,
            §1.11 item 2) or ``'probabilities'`` (clean variant: the map is the probability).
        gaussian_ksize, gaussian_sigma: the soft-target Gaussian (31 / 7.0, §1.7).
        slot_embedding: add the learned per-slot embedding to ``Z`` (§1.6).
        mask_token_embedding: add the learned embedding to SAM's mask tokens (§1.6).
        train_mask_downscaling: make SAM's ``mask_downscaling`` trainable when ``use_prior`` (the
            official code trains the whole prompt encoder, §1.5 step 4 and §1.9).
        skip_empty_targets: drop ``[SEG]`` slots with an empty target from the mask and TMCC losses
            (the code's ``gt.sum() >= 1`` filter, §1.8); False keeps them in the mask loss as LISA does.
        image_aspect: the CLIP preprocessing the prior assumes; None follows ``model.lmm.image_aspect``
            (a value that disagrees with the backbone is an error: the prior would be misplaced).
        return_priors: put each query's full-resolution prior in ``QueryPrediction.extras['heatmaps']``.
        dice_weight: 2.0 (the released script, §1.8); ``ce_weight`` / ``bce_weight`` keep LISA's 1.0 / 2.0.
        **lisa_kwargs: :class:`LISAHead`'s (``seg_convention`` also picks the query convention of
            §1.3: ``'previous'`` official, ``'at'`` the paper's; ``rej_token``, ``system_prompt``, ...).
    """

    def __init__(self, num_latents: int = ANCHORSEG_NUM_LATENTS, latent_token: str = LATENT_TOKEN,
                 use_prior: bool = True, tmcc: bool = True, tmcc_inputs: str = "logits",
                 gaussian_ksize: int = GAUSSIAN_KSIZE, gaussian_sigma: float = GAUSSIAN_SIGMA,
                 slot_embedding: bool = True, mask_token_embedding: bool = True,
                 train_mask_downscaling: bool = True, skip_empty_targets: bool = True,
                 image_aspect: Optional[str] = None, return_priors: bool = True,
                 dice_weight: float = ANCHORSEG_DICE_WEIGHT, **lisa_kwargs) -> None:
        super().__init__(dice_weight=dice_weight, **lisa_kwargs)
        if isinstance(num_latents, bool) or not isinstance(num_latents, int) or num_latents < 1:
            raise _bad("num_latents", "a positive int", num_latents)
        if "{}" not in latent_token:
            raise _bad("latent_token", "a format string with one '{}' for the index", latent_token)
        if tmcc_inputs not in TMCC_INPUTS:
            raise _bad("tmcc_inputs", f"one of {list(TMCC_INPUTS)}", tmcc_inputs)
        if isinstance(gaussian_ksize, bool) or not isinstance(gaussian_ksize, int) or gaussian_ksize < 1:
            raise _bad("gaussian_ksize", "a positive int", gaussian_ksize)
        if not gaussian_sigma > 0:
            raise _bad("gaussian_sigma", "> 0", gaussian_sigma)
        if image_aspect is not None and image_aspect not in ASPECTS:
            raise _bad("image_aspect", f"None or one of {list(ASPECTS)}", image_aspect)
        self.num_latents = num_latents
        self.latent_tokens = tuple(latent_token.format(k) for k in range(num_latents))
        self.special_tokens = tuple(self.special_tokens) + self.latent_tokens
        #: what replaces every [SEG] of an answer (no spaces: the bank is read at fixed offsets, §1.2)
        self.seg_block = "".join(self.latent_tokens) + self.seg_token
        self.use_prior, self.tmcc, self.tmcc_inputs = use_prior, tmcc, tmcc_inputs
        self.gaussian_ksize, self.gaussian_sigma = gaussian_ksize, float(gaussian_sigma)
        self.slot_embedding, self.mask_token_embedding = slot_embedding, mask_token_embedding
        self.train_mask_downscaling = train_mask_downscaling
        self.skip_empty_targets = skip_empty_targets
        self.image_aspect = image_aspect
        self.return_priors = return_priors
        self.latent_projection: Optional[SegProjection] = None
        self.slot_pos: Optional[nn.Parameter] = None
        self.mask_token_pos: Optional[nn.Parameter] = None

    def setup(self, lmm, mask_source) -> None:
        super().setup(lmm, mask_source)
        self.latent_ids = [self.token_ids[t] for t in self.latent_tokens]
        block = lmm.tokenizer(self.seg_block, add_special_tokens=False).input_ids
        want = self.latent_ids + [self.seg_id]
        if not any(block[j: j + len(want)] == want for j in range(len(block))):
            raise ValueError(f"AnchorSegHead: the tokenizer splits {self.seg_block!r} into {block}, not the "
                             f"consecutive ids {want} the query bank is read from (§1.2)")
        self.aspect, self.grid, self.input_size = image_token_frame(
            lmm, "AnchorSegHead", self.image_aspect, ASPECTS, "the prior would be misplaced")
        self.mask_frame = tuple(mask_source.mask_input_size)
        dim = mask_source.prompt_dim
        self.latent_projection = SegProjection(lmm.hidden_size, dim)  # latent_hidden_fcs, §1.4
        if self.slot_embedding:
            self.slot_pos = _learned_embedding(self.num_latents + 1, dim)
        if self.mask_token_embedding:
            self.mask_token_pos = _learned_embedding(mask_source.sam.mask_decoder.num_mask_tokens, dim)
        if self.use_prior and self.train_mask_downscaling:
            mask_source.sam.prompt_encoder.mask_downscaling.requires_grad_(True)

    # ------------------------------------------------------------------ conversations
    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        """LISA's conversations with every ``[SEG]`` of the answer preceded by the ``K`` latents
        (§1.2: the official ``collate_fn`` rewrite; ``[REJ]`` answers carry no latents)."""
        convs = super().build_conversations(sample, mode)
        for c in convs:
            if c.answer is not None:
                c.answer = c.answer.replace(self.seg_token, self.seg_block)
        return convs

    # ------------------------------------------------------------------ the query bank
    def _gather(self, ctx: BatchContext):
        """LISA's gather (the anchor is LISA's ``[SEG]`` state under ``seg_convention``) plus the ``K``
        latent states and the anchor's similarity with its row's image tokens (§1.3, §1.5 step 1),
        kept in ``ctx.lmm_out`` for :meth:`decode_masks`.

        The returned read position (where a ``[REJ]`` decision is looked up under teacher forcing) is
        the position before ``[LATENT0]``: where the model chooses between the latents and ``[REJ]``.
        """
        states, _, slots, read = super()._gather(ctx)
        hidden = ctx.lmm_out["hidden"]
        rows, _, latents = query_bank_positions(ctx.tokens["input_ids"], self.seg_id, self.num_latents,
                                                self.seg_convention, self.latent_ids)
        sim = similarity_map(hidden, ctx.lmm_out["image_positions"], rows, states)
        ctx.lmm_out[BANK_KEY] = (states, hidden[rows[:, None], latents], sim)
        seg_cols = read[:, 1] + 1
        return states, ctx.conv_sample[rows], slots, torch.stack([rows, seg_cols - self.num_latents - 1], 1)

    def sparse_prompt(self, anchor: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``Z = [z_1 .. z_K, z_anc]`` (+ the slot embedding): ``[N, K + 1, C]`` (§1.4, §1.6)."""
        z = torch.cat([self.latent_projection(latents), self.projection(anchor)[:, None]], 1)
        return z + self.slot_pos.to(z.dtype) if self.slot_pos is not None else z

    def prior(self, sim: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``s^ [n, Np]`` and the full-resolution prior ``[n, H, W]`` of one image's similarities (§1.5)."""
        s_hat = minmax_normalize(sim.float())
        return s_hat, prior_full_resolution(s_hat, self.grid, size, self.aspect, self.input_size)

    def _decode(self, ctx: BatchContext, mask_source, anchor: torch.Tensor, latents: torch.Tensor,
                sim: torch.Tensor, image_of: torch.Tensor):
        """Per image ``[n_i, H, W]`` logits and ``(s^, full map)`` (None for images without ``[SEG]``)."""
        z = self.sparse_prompt(anchor, latents)
        out = [z.new_zeros((0, *s.size)) + z.sum() * 0 for s in ctx.samples]
        priors: list = [None] * len(ctx.samples)
        for i in image_of.unique().tolist():
            sel = (image_of == i).nonzero(as_tuple=True)[0]
            size, resized = ctx.samples[i].size, ctx.mask_sizes[i]
            s_hat, full = self.prior(sim[sel], size)
            dense = to_sam_mask_frame(full, self.mask_frame).to(z.dtype) if self.use_prior else None
            low, _ = mask_source.decode(ctx.mask_embeddings[i: i + 1], z[sel], dense=dense,
                                        mask_token_offset=self.mask_token_pos)
            out[i] = mask_source.postprocess(low, resized, size)
            priors[i] = (s_hat, full)
        return out, priors

    def decode_masks(self, ctx: BatchContext, mask_source, states: torch.Tensor,
                     image_of: torch.Tensor) -> list[torch.Tensor]:
        """Per image, ``[n_i, H, W]`` logits: SAM prompted with ``Z`` and, with ``use_prior``, P (§1.6)."""
        kept = ctx.lmm_out.get(BANK_KEY)
        if kept is None or kept[0] is not states:
            raise RuntimeError("AnchorSegHead.decode_masks needs the query bank of these [SEG] states: gather "
                               "them with _gather (teacher forcing); generation decodes through _decode")
        out, ctx.lmm_out[PRIORS_KEY] = self._decode(ctx, mask_source, states, kept[1], kept[2], image_of)
        return out

    # ------------------------------------------------------------------ losses
    def loss(self, ctx: BatchContext, lmm, mask_source) -> dict[str, torch.Tensor]:
        """CE + the mask BCE / Dice + (``tmcc``) T2M and M2T BCE / Dice, each ``weight * sum / n_masks``
        over the batch's non-empty targets (§1.8)."""
        losses = self.text_loss(ctx)
        states, image_of, slots, _ = self._gather(ctx)
        logits = self.decode_masks(ctx, mask_source, states, image_of)
        priors = ctx.lmm_out[PRIORS_KEY]
        n_rej = [0] * len(ctx.samples)
        if self.rej_in_mask_loss and not self.skip_empty_targets:  # GSVA's zero masks (LISAHead); empty targets
            for si, _, _ in self._slots(ctx, "rej"):
                n_rej[si] += 1
        zero = ctx.lmm_out[BANK_KEY][2].sum() * 0.0
        tmcc = {k: zero for k in ("t2m_bce", "t2m_dice", "m2t_bce", "m2t_dice")}
        n_tmcc = 0
        kept_logits, kept_targets = [], []
        for i, s in enumerate(ctx.samples):
            mine = [s.queries[qi].target if k is None else s.queries[qi].masks[k] for si, qi, k in slots if si == i]
            dev = logits[i].device
            t = (torch.from_numpy(np.stack(mine)).to(dev, torch.float32) if mine
                 else torch.zeros((0, *s.size), device=dev))
            keep = t.flatten(1).sum(1) >= 1 if self.skip_empty_targets else torch.ones(len(t), dtype=torch.bool,
                                                                                      device=dev)
            lg, t = logits[i][keep], t[keep]
            if self.tmcc and priors[i] is not None and len(t):
                s_hat, full = priors[i][0][keep], priors[i][1][keep]
                kw = dict(ksize=self.gaussian_ksize, sigma=self.gaussian_sigma, inputs=self.tmcc_inputs)
                for name, (b, d) in (("t2m", t2m_loss(full, t, **kw)),
                                     ("m2t", m2t_loss(s_hat, t, self.grid, self.input_size, self.aspect, **kw))):
                    tmcc[f"{name}_bce"] = tmcc[f"{name}_bce"] + b.sum()
                    tmcc[f"{name}_dice"] = tmcc[f"{name}_dice"] + d.sum()
                n_tmcc += len(t)
            if n_rej[i]:
                zeros = torch.zeros((n_rej[i], *s.size), device=dev)
                lg, t = torch.cat([lg, zeros.to(lg.dtype)], 0), torch.cat([t, zeros], 0)
            kept_logits.append(lg)
            kept_targets.append(t)
        losses.update(mask_losses(kept_logits, kept_targets, self.bce_weight, self.dice_weight))
        if self.tmcc:
            for name, value in tmcc.items():
                w = self.bce_weight if name.endswith("bce") else self.dice_weight
                losses[f"loss_{name}"] = w * value / (n_tmcc + MASK_COUNT_EPS)
        return losses

    # ------------------------------------------------------------------ prediction
    def _heatmaps(self, full: Optional[torch.Tensor], size: tuple[int, int]) -> dict:
        if not self.return_priors:
            return {}
        prior = full.detach().float().cpu() if full is not None else torch.zeros((0, *size))
        return {"heatmaps": {"prior": prior}}

    def predict(self, ctx: BatchContext, lmm, mask_source, generate: bool) -> list[list[QueryPrediction]]:
        if generate:
            return self._predict_generate(ctx, lmm, mask_source)
        out = super().predict(ctx, lmm, mask_source, generate)
        priors = ctx.lmm_out.get(PRIORS_KEY) or [None] * len(ctx.samples)
        slots = self._slots(ctx)
        for i, (s, preds) in enumerate(zip(ctx.samples, out)):
            mine = [qi for si, qi, _ in slots if si == i]  # the order of this image's masks
            for qi, p in enumerate(preds):
                idx = [n for n, q in enumerate(mine) if q == qi]
                p.extras.update(self._heatmaps(priors[i][1][idx] if priors[i] is not None else None, s.size))
        return out

    @torch.no_grad()
    def _predict_generate(self, ctx: BatchContext, lmm, mask_source) -> list[list[QueryPrediction]]:
        """Free generation (§1.10 ``evaluate``): the model generates the latents and ``[SEG]`` itself.

        The bank is read, with the training convention, from one teacher-forced forward over the
        prompt and the generated ids (the same states generation computed, under causal attention),
        so the ``'at'`` convention and the image-token states need no special case. As in the code,
        the latents are taken at fixed offsets before each generated ``[SEG]`` whatever was generated
        there. No ``[SEG]`` (or a ``[REJ]``) means no mask and ``exists=False``.
        """
        out: list[list[Optional[QueryPrediction]]] = [[None] * len(s.queries) for s in ctx.samples]
        for conv, i in zip(ctx.conversations, ctx.conv_sample.tolist()):
            pred = self._generate_one(ctx, lmm, mask_source, conv, i)
            for qi in conv.query_ids:
                out[i][qi] = pred
        return out  # type: ignore[return-value]

    def _generate_one(self, ctx: BatchContext, lmm, mask_source, conv: Conversation, i: int) -> QueryPrediction:
        """Generate the answer of one conversation about image ``i`` and decode its ``[SEG]`` tokens."""
        size = ctx.samples[i].size
        ids, _ = lmm.encode(conv.prompt, None)
        gen, _ = lmm.generate(torch.tensor(ids, device=lmm.device), ctx.image_feats[i: i + 1],
                              max_new_tokens=ctx.max_new_tokens)
        if self.seg_id not in gen:
            return QueryPrediction(masks=torch.zeros((0, *size)), exists=False, text=lmm.decode(gen),
                                   extras=self._heatmaps(None, size))
        seq = torch.tensor([ids + gen], device=lmm.device)
        res = lmm(input_ids=seq, attention_mask=torch.ones_like(seq), image_feats=ctx.image_feats[i: i + 1],
                  image_index=torch.zeros(1, dtype=torch.long, device=seq.device))
        rows, anchor, latents = query_bank_positions(seq, self.seg_id, self.num_latents, self.seg_convention)
        hidden = res["hidden"]
        states = hidden[rows, anchor]
        sim = similarity_map(hidden, res["image_positions"], rows, states)
        logits, priors = self._decode(ctx, mask_source, states, hidden[rows[:, None], latents], sim,
                                      torch.full((len(rows),), i, device=states.device))
        return QueryPrediction(masks=logits[i].detach().float().cpu(), exists=True, text=lmm.decode(gen),
                               extras=self._heatmaps(priors[i][1], size))
