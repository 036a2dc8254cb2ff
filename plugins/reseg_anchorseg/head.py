"""The AnchorSeg head: a language-grounded query bank, an anchor spatial prior and TMCC (anchorseg_ras.md §1).

AnchorSeg (ACL 2026) keeps the ``[SEG]`` family's pipeline (:class:`reseg.models.heads.SegTokenHead`:
LISA's templates, teacher-forced validation, ``[REJ]``, the mask losses) and changes what drives SAM:

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
from typing import Any

import torch
import torch.nn as nn

from reseg.models.heads import Conversation, HeadBatch, SegProjection, SegTokenHead, SlotTargets
from reseg.models.image_tokens import check_frame
from reseg.models.losses import MASK_COUNT_EPS
from reseg.structures import Sample

from .functional import (
    ANCHORSEG_NUM_LATENTS,
    ASPECTS,
    GAUSSIAN_KSIZE,
    GAUSSIAN_SIGMA,
    LATENT_TOKEN,
    TMCC_INPUTS,
    check_latent_tokens,
    m2t_loss,
    minmax_normalize,
    prior_full_resolution,
    t2m_loss,
    to_sam_mask_frame,
)

#: AnchorSeg's released loss weights: CE 1.0, BCE 2.0, Dice 2.0 (§1.8; the code default for Dice is 0.5).
ANCHORSEG_DICE_WEIGHT = 2.0
#: the TMCC loss terms (§1.7)
TMCC_TERMS = ("t2m_bce", "t2m_dice", "m2t_bce", "m2t_dice")


def _bad(key: str, expected: str, got) -> ValueError:
    return ValueError(f"AnchorSegHead: model.head.{key} must be {expected}, got {got!r}")


def _learned_embedding(rows: int, dim: int) -> nn.Parameter:
    """``randn(rows, dim) / sqrt(dim)``: the official init of both new decoder embeddings (§1.6)."""
    return nn.Parameter(torch.randn(rows, dim) / math.sqrt(dim))


class AnchorSegHead(SegTokenHead):
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
        **seg_kwargs: :class:`~reseg.models.heads.SegTokenHead`'s (``seg_convention`` also picks the query convention of
            §1.3: ``'previous'`` official, ``'at'`` the paper's; ``rej_token``, ``system_prompt``, ...).
    """

    def __init__(self, num_latents: int = ANCHORSEG_NUM_LATENTS, latent_token: str = LATENT_TOKEN,
                 use_prior: bool = True, tmcc: bool = True, tmcc_inputs: str = "logits",
                 gaussian_ksize: int = GAUSSIAN_KSIZE, gaussian_sigma: float = GAUSSIAN_SIGMA,
                 slot_embedding: bool = True, mask_token_embedding: bool = True,
                 train_mask_downscaling: bool = True, skip_empty_targets: bool = True,
                 image_aspect: str | None = None, return_priors: bool = True,
                 dice_weight: float = ANCHORSEG_DICE_WEIGHT, **seg_kwargs) -> None:
        super().__init__(dice_weight=dice_weight, **seg_kwargs)
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
        self.latent_projection: SegProjection | None = None
        self.slot_pos: nn.Parameter | None = None
        self.mask_token_pos: nn.Parameter | None = None

    def setup(self, lmm, mask_source) -> None:
        super().setup(lmm, mask_source)
        self.latent_ids = [self.token_ids[t] for t in self.latent_tokens]
        block = lmm.tokenizer(self.seg_block, add_special_tokens=False).input_ids
        want = self.latent_ids + [self.seg_id]
        if not any(block[j: j + len(want)] == want for j in range(len(block))):
            raise ValueError(f"AnchorSegHead: the tokenizer splits {self.seg_block!r} into {block}, not the "
                             f"consecutive ids {want} the query bank is read from (§1.2)")
        check_frame(lmm.image_token_frame, "AnchorSegHead", self.image_aspect, ASPECTS, "the prior would be misplaced")
        self.mask_frame = tuple(mask_source.mask_input_size)
        dim = mask_source.prompt_dim
        self.latent_projection = SegProjection(lmm.hidden_size, dim)  # latent_hidden_fcs, §1.4
        if self.slot_embedding:
            self.slot_pos = _learned_embedding(self.num_latents + 1, dim)
        if self.mask_token_embedding:
            self.mask_token_pos = _learned_embedding(mask_source.sam.mask_decoder.num_mask_tokens, dim)
        if self.use_prior and self.train_mask_downscaling:
            mask_source.sam.prompt_encoder.mask_downscaling.requires_grad_(True)

    @property
    def decision_offset(self) -> int:
        """The existence decision is read before ``[LATENT0]``: where the model chooses between the
        latents and ``[REJ]``."""
        return -self.num_latents - 1

    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        """The family's conversations with every ``[SEG]`` of the answer preceded by the ``K`` latents
        (§1.2: the official ``collate_fn`` rewrite; ``[REJ]`` answers carry no latents)."""
        convs = super().build_conversations(sample, mode)
        for c in convs:
            if c.answer is not None:
                c.answer = c.answer.replace(self.seg_token, self.seg_block)
        return convs

    # ------------------------------------------------------------------ the query bank and the prior
    def sparse_prompt(self, anchor: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``Z = [z_1 .. z_K, z_anc]`` (+ the slot embedding): ``[N, K + 1, C]`` (§1.4, §1.6)."""
        z = torch.cat([self.latent_projection(latents), self.projection(anchor)[:, None]], 1)
        return z + self.slot_pos.to(z.dtype) if self.slot_pos is not None else z

    def prior(self, sim: torch.Tensor, size: tuple[int, int], frame) -> tuple[torch.Tensor, torch.Tensor]:
        """``s^ [n, Np]`` and the full-resolution prior ``[n, H, W]`` of one image's similarities (§1.5)."""
        s_hat = minmax_normalize(sim.float())
        return s_hat, prior_full_resolution(s_hat, frame.grid, size, frame.aspect, frame.input_size)

    def forward(self, batch: HeadBatch) -> dict[str, Any]:
        """The bank of every ``[SEG]`` (the anchor is its state under ``seg_convention``; the ``K`` latents
        the states just before it, §1.3), the anchor's prior (§1.5) and SAM prompted with ``Z`` and,
        with ``use_prior``, P as its dense prompt (§1.6). As in the code, generated answers are read at
        the same fixed offsets whatever was generated there."""
        slots = batch.slots.where(kind="mask")
        if batch.mode != "generate" and len(slots):
            check_latent_tokens(batch.tokens["input_ids"], slots.conv, slots.position, self.latent_ids)
        latents = (batch.hidden_at(slots, range(-self.num_latents, 0)) if len(slots)
                   else slots.states.new_zeros((0, self.num_latents, slots.states.shape[-1])))
        sim = batch.similarity(slots)
        z = self.sparse_prompt(slots.states, latents)
        priors: list = [None] * len(batch.samples)

        def prompts(i: int, sel: torch.Tensor) -> dict:
            priors[i] = self.prior(sim[sel], batch.samples[i].size, batch.frames[i])
            dense = to_sam_mask_frame(priors[i][1], self.mask_frame).to(z.dtype) if self.use_prior else None
            return {"sparse": z[sel], "dense": dense, "mask_token_offset": self.mask_token_pos}

        return {"masks": batch.decode_masks(slots, z, prompts), "priors": priors, "sim": sim}

    def heatmaps(self, outputs: dict[str, Any], batch: HeadBatch) -> dict[str, list[torch.Tensor]]:
        """The full-resolution prior of every ``[SEG]`` (``return_priors``), per image."""
        if not self.return_priors:
            return {}
        return {"prior": [p[1].detach().float().cpu() if p is not None else torch.zeros((0, *s.size))
                          for p, s in zip(outputs["priors"], batch.samples)]}

    # ------------------------------------------------------------------ losses
    def loss_by_feat(self, outputs: dict[str, Any], targets: SlotTargets, batch: HeadBatch) -> dict[str, torch.Tensor]:
        """CE + the mask BCE / Dice + (``tmcc``) T2M and M2T BCE / Dice, each ``weight * sum / n_masks``
        over the batch's non-empty targets (§1.8)."""
        losses = {"loss_text": self.text_loss(batch, self.ce_weight)}
        zero = outputs["sim"].sum() * 0.0
        tmcc = dict.fromkeys(TMCC_TERMS, zero)
        n_tmcc = 0
        kept_logits, kept_targets = [], []
        for i, (lg, t) in enumerate(zip(outputs["masks"], targets.masks)):
            keep = (t.flatten(1).sum(1) >= 1 if self.skip_empty_targets
                    else torch.ones(len(t), dtype=torch.bool, device=t.device))
            lg, t = lg[keep], t[keep]
            prior = outputs["priors"][i]
            if self.tmcc and prior is not None and len(t):
                s_hat, full = prior[0][keep], prior[1][keep]
                frame = batch.frames[i]
                kw = dict(ksize=self.gaussian_ksize, sigma=self.gaussian_sigma, inputs=self.tmcc_inputs)
                for name, (b, d) in (("t2m", t2m_loss(full, t, **kw)),
                                     ("m2t", m2t_loss(s_hat, t, frame.grid, frame.input_size, frame.aspect, **kw))):
                    tmcc[f"{name}_bce"] = tmcc[f"{name}_bce"] + b.sum()
                    tmcc[f"{name}_dice"] = tmcc[f"{name}_dice"] + d.sum()
                n_tmcc += len(t)
            kept_logits.append(lg)
            kept_targets.append(t)
        # GSVA's zero masks for [REJ] answers (the family's rule) only when empty targets are kept
        keep_rej = self.rej_in_mask_loss and not self.skip_empty_targets
        losses.update(self.mask_loss(kept_logits, kept_targets, batch, with_rejects=keep_rej))
        if self.tmcc:
            for name, value in tmcc.items():
                w = self.bce_weight if name.endswith("bce") else self.dice_weight
                losses[f"loss_{name}"] = w * value / (n_tmcc + MASK_COUNT_EPS)
        return losses
