"""Building blocks of the ``[SEG]`` family: heads whose answer holds one mask token per mask.

LISA (seg_token_family.md §1), READ (§2), GSVA's ``[REJ]`` (§4) and AnchorSeg (anchorseg_ras.md §1)
share the conversation (LISA's templates), the read of a mask token's hidden state
(:func:`seg_token_states`), the projection into the mask decoder's prompt space
(:class:`SegProjection`), the text and mask losses and the prediction rule. :class:`SegTokenHead`
holds them; a method subclasses it and implements :meth:`~SegTokenHead.forward` (how the states
drive the mask source), adding its own losses in :meth:`~SegTokenHead.loss_by_feat` if it has any.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from reseg.models.losses import mask_losses
from reseg.structures import Sample

from . import templates as T
from .base import BaseHead, Conversation, HeadBatch, HeadPredictions, MaskSlot, SlotTargets


def seg_token_states(
    hidden: torch.Tensor, input_ids: torch.Tensor, token_id: int, convention: str = "previous"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states read for each occurrence of a mask token, in reading order.

    With ``convention='previous'`` (LISA's official code, spec §1.2 step 2 and §7.1) the state at the
    position *before* each ``[SEG]`` is read: the state whose LM-head output predicts ``[SEG]``. With
    ``'at'`` the state at the ``[SEG]`` position itself. Positions index the image-expanded sequence
    (reseg's ``input_ids`` hold one id per image token, so no ``Np - 1`` offset is needed).

    Args:
        hidden: ``[C, L, D]``; input_ids: ``[C, L]``.
    Returns:
        ``states [N, D]``, ``rows [N]`` (conversation of each) and ``cols [N]`` (token position).
    """
    if convention not in ("previous", "at"):
        raise ValueError(f"convention must be 'previous' or 'at', got {convention!r}")
    rows, cols = (input_ids == token_id).nonzero(as_tuple=True)
    read = cols - 1 if convention == "previous" else cols
    if bool((read < 0).any()):
        raise ValueError("a mask token at position 0 has no previous state")
    return hidden[rows, read], rows, cols


class SegProjection(nn.Sequential):
    """``text_hidden_fcs``: Linear(D, D), ReLU, Linear(D, C), Dropout(0) (spec §1.1)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim),
                         nn.Dropout(dropout))


class SegTokenHead(BaseHead):
    """The ``[SEG]`` family's conversations, losses and prediction rule; subclasses implement :meth:`forward`.

    ``forward(batch)`` returns at least ``masks``: per image ``[n_i, H, W]`` logits of the batch's
    ``'mask'`` slots (``batch.slots.where(kind='mask')``); :meth:`heatmaps` may turn its other outputs
    into maps drawn with the predictions. :attr:`projection` (the ``[SEG]`` state -> prompt MLP)
    is built in :meth:`setup`.

    Args:
        ce_weight, bce_weight, dice_weight: loss weights 1.0 / 2.0 / 0.5 (LISA, spec §1.3).
        seg_convention: which state a mask token reads: ``'previous'`` (official) or ``'at'``
            (:func:`seg_token_states`); the head's :attr:`read_rule`.
        seg_per_instance: one ``[SEG]`` per target instance ("[SEG] and [SEG]") instead of one for
            the union; the prediction for a query is then the union of its masks.
        system_prompt: the conversation's system prompt (LISA's ``llava_v1`` one by default, §1.6;
            the tiny configs shorten it to save tokens). Answers given in a query's ``answer``
            field are used as they are.
        rej_token: ``None`` (plain LISA: a no-target query is answered with ``[SEG]`` and an empty
            target mask) or e.g. ``"[REJ]"`` (GSVA, spec §4.1-4.3): a query with no target (or a
            false premise) is answered with ``[REJ]``, whose choice is learned by the text loss
            alone; under teacher forcing existence is read from the argmax where the model chose the
            mask token (``[REJ]`` = rejected, §4.3) while the mask comes from the same ``[SEG]`` state
            (GSVA's re-evaluation pass, identical to one pass for one query per conversation); when
            generating, no generated mask token means "no target".
        rej_in_mask_loss: GSVA's quirk (§4.2): each ``[REJ]`` slot adds a constant zero-logit mask
            against an empty target to the mask losses, counting in their denominator.
        short_questions, long_questions, answers: the training template lists (LISA's by default,
            §1.6); questions hold ``{text}``, answers ``{seg}``. A single-entry list makes the
            training conversations deterministic.
    """

    special_tokens = ("[SEG]",)
    mask_source_kind = "sam_decoder"
    #: the mask token of the family
    seg_token = "[SEG]"
    #: where the existence decision is read, relative to a mask token's position: the position whose
    #: LM-head output chose the token (or ``[REJ]``)
    decision_offset = -1

    def __init__(self, ce_weight: float = 1.0, bce_weight: float = 2.0, dice_weight: float = 0.5,
                 seg_convention: str = "previous", seg_per_instance: bool = False,
                 system_prompt: str = T.SYSTEM_PROMPT, rej_token: str | None = None,
                 rej_in_mask_loss: bool = True, short_questions: Sequence[str] = T.SHORT_QUESTIONS,
                 long_questions: Sequence[str] = T.LONG_QUESTIONS, answers: Sequence[str] = T.ANSWERS) -> None:
        super().__init__()
        for key, tpls, placeholder in (("short_questions", short_questions, "{text}"),
                                       ("long_questions", long_questions, "{text}"), ("answers", answers, "{seg}")):
            bad = [t for t in tpls if not isinstance(t, str) or placeholder not in t]
            if not tpls or bad:
                raise ValueError(f"model.head.{key} must be a non-empty list of strings holding {placeholder}, "
                                 f"got {list(tpls)!r}")
        if seg_convention not in ("previous", "at"):
            raise ValueError(f"model.head.seg_convention must be 'previous' or 'at', got {seg_convention!r}")
        self.short_questions, self.long_questions = tuple(short_questions), tuple(long_questions)
        self.answers = tuple(answers)
        self.system_prompt = system_prompt
        self.rej_token = rej_token
        self.rej_in_mask_loss = rej_in_mask_loss
        if rej_token is not None:
            self.special_tokens = (self.seg_token, rej_token)
        self.ce_weight, self.bce_weight, self.dice_weight = ce_weight, bce_weight, dice_weight
        self.seg_convention = seg_convention
        self.read_rule = seg_convention
        self.mask_tokens = (self.seg_token,)
        self.seg_per_instance = seg_per_instance
        self.projection: SegProjection | None = None

    def setup(self, lmm, mask_source) -> None:
        super().setup(lmm, mask_source)
        self.seg_id = self.token_ids[self.seg_token]
        self.rej_id = self.token_ids.get(self.rej_token) if self.rej_token else None
        self.image_token = lmm.tokenizer.convert_ids_to_tokens(lmm.image_token_id)
        self.projection = SegProjection(lmm.hidden_size, mask_source.prompt_dim)

    @property
    def needs_logits(self) -> bool:
        """Whether the LM head must run over the sequence: for the text loss (``ce_weight`` > 0) or
        for the ``[REJ]`` decision. With neither, the segmentor skips the vocabulary projection and its
        backward; the masks and gradients are the same."""
        return self.ce_weight != 0 or self.rej_token is not None

    # ------------------------------------------------------------------ conversations
    def question(self, text: str, is_sentence: bool, mode: str, rng: Any = None) -> str:
        text = text.strip()
        if mode == "train":
            rng = rng if rng is not None else random
            tpl = rng.choice(self.long_questions if is_sentence else self.short_questions)
            return tpl.format(text=text)
        return (T.VAL_LONG if is_sentence else T.VAL_SHORT).format(text=text)

    def rejects(self, query, task: str = "res") -> bool:
        """Whether the training answer rejects ``query`` (``[REJ]`` enabled and no target)."""
        return (self.rej_token is not None and task != "vqa"
                and (not query.exists or query.num_targets == 0))

    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        """One conversation per query (spec §1.6, §1.8), one ``'mask'`` slot per ``[SEG]`` of its answer
        (one per target instance with ``seg_per_instance``) or one ``'reject'`` slot for a ``[REJ]``."""
        convs = []
        rng = self.sample_rng(sample)
        for qi, q in enumerate(sample.queries):
            rej = mode == "train" and self.rejects(q, sample.task)
            n_masks = max(q.num_targets, 1) if self.seg_per_instance and not rej else 1
            token = self.rej_token if rej else self.seg_token
            slots = [MaskSlot(query=qi, instance=k if self.seg_per_instance and q.num_targets and not rej else None,
                              token=token, kind="reject" if rej else "mask") for k in range(n_masks)]
            tokens = T.join_tokens([token] * n_masks)
            # VQA conversations (LISA's llava_instruct share, spec §1.7) ask their own question and
            # carry their own text answer (no mask token).
            question = q.text if sample.task == "vqa" else self.question(q.text, q.is_sentence, mode, rng)
            prompt = T.llava_v1_prompt(question, self.image_token, self.system_prompt)
            if mode == "train":
                answer = " " + (q.answer if q.answer is not None else rng.choice(self.answers).format(seg=tokens))
            elif mode == "val":  # teacher forcing: always a [SEG] slot (GSVA's re-evaluation pass)
                answer = " " + T.VAL_ANSWER.format(seg=tokens)
            else:
                answer = None
            if answer is not None and answer.count(token) != len(slots):
                slots = slots[: answer.count(token)]
            convs.append(Conversation(prompt=prompt, answer=answer, query_ids=[qi], slots=slots))
        return convs

    # ------------------------------------------------------------------ losses
    def loss_by_feat(self, outputs: dict[str, Any], targets: SlotTargets, batch: HeadBatch) -> dict[str, torch.Tensor]:
        """``loss_text`` (``ce_weight`` x the LMM's CE) and the mask BCE / Dice (spec §1.3)."""
        losses = {"loss_text": self.text_loss(batch, self.ce_weight)}
        losses.update(self.mask_loss(outputs["masks"], targets.masks, batch))
        return losses

    def mask_loss(self, logits: list[torch.Tensor], targets: list[torch.Tensor], batch: HeadBatch,
                  with_rejects: bool | None = None) -> dict[str, torch.Tensor]:
        """LISA's mask BCE / Dice over per-image logits and targets; with ``rej_in_mask_loss`` (or
        ``with_rejects``) each ``[REJ]`` slot adds a zero-logit mask against an empty target (GSVA §4.2)."""
        if self.rej_in_mask_loss if with_rejects is None else with_rejects:
            rejected = batch.slots.where(kind="reject")
            logits, targets = list(logits), list(targets)
            for i, sel in rejected.by_image():
                if sel.numel():
                    zeros = torch.zeros((sel.numel(), *batch.samples[i].size), device=logits[i].device)
                    logits[i] = torch.cat([logits[i], zeros.to(logits[i].dtype)], 0)
                    targets[i] = torch.cat([targets[i], zeros], 0)
        return mask_losses(logits, targets, self.bce_weight, self.dice_weight)

    # ------------------------------------------------------------------ prediction
    def existence(self, batch: HeadBatch) -> torch.Tensor | None:
        """``[n]`` bool per mask slot: with ``[REJ]``, whether the argmax where the model chose the mask
        token (:attr:`decision_offset`) is anything but ``[REJ]`` (GSVA §4.3); None without ``[REJ]``."""
        if self.rej_id is None:
            return None
        slots = batch.slots.where(kind="mask")
        if len(slots) == 0:
            return torch.zeros(0, dtype=torch.bool)
        logits = batch.lmm_out["logits"][slots.conv, slots.position + self.decision_offset]
        return (logits.argmax(-1) != self.rej_id).cpu()

    def heatmaps(self, outputs: dict[str, Any], batch: HeadBatch) -> dict[str, list[torch.Tensor]]:
        """Maps to draw with the predictions: ``{name: per image [n_i, H, W] in [0, 1]}`` (none by default)."""
        return {}

    def predict_by_feat(self, outputs: dict[str, Any], batch: HeadBatch) -> HeadPredictions:
        return HeadPredictions(masks=outputs["masks"], exists=self.existence(batch),
                               heatmaps=self.heatmaps(outputs, batch))
