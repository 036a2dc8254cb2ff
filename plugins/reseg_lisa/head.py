"""The LISA head: one ``[SEG]`` token per mask, its hidden state projected into SAM's prompt space.

Faithful to spec ``seg_token_family.md`` §1 (LISA, CVPR 2024). The pieces other ``[SEG]``-family heads
reuse are public functions here: :func:`seg_token_states` (which hidden state is "the [SEG]
embedding") and :class:`SegProjection` (the ``text_hidden_fcs`` MLP).
"""
from __future__ import annotations

import random
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from reseg.models.head import BaseHead, BatchContext, Conversation
from reseg.models.losses import mask_losses
from reseg.structures import QueryPrediction, Sample

from . import templates as T


def seg_token_states(
    hidden: torch.Tensor, input_ids: torch.Tensor, token_id: int, convention: str = "previous"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hidden states read for each occurrence of a mask token, in reading order.

    With ``convention='previous'`` (LISA's official code, spec §1.2 step 2 and §7.1) the state at the
    position *before* each ``[SEG]`` is read: the state whose LM-head output predicts ``[SEG]``. With
    ``'at'`` the state at the ``[SEG]`` position itself. Positions index the image-expanded sequence
    (our ``input_ids`` already hold one id per image token, so no ``Np - 1`` offset is needed).

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


class LISAHead(BaseHead):
    """LISA: ``[SEG]`` -> projection -> SAM sparse prompt -> one mask per ``[SEG]``.

    Args:
        ce_weight, bce_weight, dice_weight: loss weights 1.0 / 2.0 / 0.5 (spec §1.3).
        seg_convention: ``'previous'`` (official) or ``'at'`` (see :func:`seg_token_states`).
        seg_per_instance: one ``[SEG]`` per target instance ("[SEG] and [SEG]") instead of one for
            the union; the prediction for a query is then the union of its masks.
        system_prompt: the conversation's system prompt (LISA's ``llava_v1`` one by default, §1.6;
            the tiny configs shorten it to save tokens). Answers given in a query's ``answer``
            field are used as they are.
        rej_token: ``None`` (plain LISA: a no-target query is answered with ``[SEG]`` and an empty
            target mask) or e.g. ``"[REJ]"`` (GSVA, spec §4.1-4.3): a query with no target (or a
            false premise) is answered with ``[REJ]``, whose choice is learned by the text loss
            alone; under teacher forcing existence is read from the argmax at the mask slot
            (``[REJ]`` = rejected, §4.3) while the mask comes from the same ``[SEG]`` state (GSVA's
            re-evaluation pass, identical to one pass for one query per conversation); when
            generating, a generated ``[REJ]`` (or no mask token) means "no target".
        rej_in_mask_loss: GSVA's quirk (§4.2): each ``[REJ]`` slot adds a constant zero-logit mask
            against an empty target to the mask losses, counting in their denominator.
        short_questions, long_questions, answers: the training template lists (LISA's by default,
            §1.6); questions hold ``{text}``, answers ``{seg}``. A single-entry list makes the
            training conversations deterministic (the distributed-equivalence test uses that).
    """

    special_tokens = ("[SEG]",)
    mask_source_kind = "sam_decoder"
    seg_token = "[SEG]"

    def __init__(self, ce_weight: float = 1.0, bce_weight: float = 2.0, dice_weight: float = 0.5,
                 seg_convention: str = "previous", seg_per_instance: bool = False,
                 system_prompt: str = T.SYSTEM_PROMPT, rej_token: Optional[str] = None,
                 rej_in_mask_loss: bool = True, short_questions: Sequence[str] = T.SHORT_QUESTIONS,
                 long_questions: Sequence[str] = T.LONG_QUESTIONS, answers: Sequence[str] = T.ANSWERS) -> None:
        super().__init__()
        for key, tpls, field in (("short_questions", short_questions, "{text}"),
                                 ("long_questions", long_questions, "{text}"), ("answers", answers, "{seg}")):
            bad = [t for t in tpls if not isinstance(t, str) or field not in t]
            if not tpls or bad:
                raise ValueError(f"model.head.{key} must be a non-empty list of strings holding {field}, "
                                 f"got {list(tpls)!r}")
        self.short_questions, self.long_questions = tuple(short_questions), tuple(long_questions)
        self.answers = tuple(answers)
        self.system_prompt = system_prompt
        self.rej_token = rej_token
        self.rej_in_mask_loss = rej_in_mask_loss
        if rej_token is not None:
            self.special_tokens = (self.seg_token, rej_token)
        self.ce_weight, self.bce_weight, self.dice_weight = ce_weight, bce_weight, dice_weight
        self.seg_convention = seg_convention
        self.seg_per_instance = seg_per_instance
        self.projection: Optional[SegProjection] = None

    def setup(self, lmm, mask_source) -> None:
        super().setup(lmm, mask_source)
        self.seg_id = self.token_ids[self.seg_token]
        self.rej_id = self.token_ids.get(self.rej_token) if self.rej_token else None
        self.image_token = lmm.tokenizer.convert_ids_to_tokens(lmm.image_token_id)
        self.projection = SegProjection(lmm.hidden_size, mask_source.prompt_dim)

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
        """One conversation per query (spec §1.6, §1.8).

        ``slots`` lists, per mask token of the answer, ``(query, instance or None, token)`` with
        token ``"seg"`` (a mask to decode) or ``"rej"`` (a rejection).
        """
        convs = []
        rng = self.sample_rng(sample)
        for qi, q in enumerate(sample.queries):
            rej = mode == "train" and self.rejects(q, sample.task)
            n_masks = max(q.num_targets, 1) if self.seg_per_instance and not rej else 1
            slots = [(qi, k if self.seg_per_instance and q.num_targets and not rej else None,
                      "rej" if rej else "seg") for k in range(n_masks)]
            token = self.rej_token if rej else self.seg_token
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

    # ------------------------------------------------------------------ masks
    def decode_masks(self, ctx: BatchContext, mask_source, states: torch.Tensor, image_of: torch.Tensor) -> list[torch.Tensor]:
        """Per image, ``[n_i, H, W]`` logits for the mask-token states that belong to it.

        ``states [N, D]`` are projected, grouped by image and decoded with that image's embedding
        (one SAM decoder call per image, ``multimask_output=False``, spec §1.2 steps 5-8).
        """
        emb = self.projection(states)  # [N, C]
        out = []
        for i, s in enumerate(ctx.samples):
            sel = (image_of == i).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                out.append(emb.new_zeros((0, *s.size)) + emb.sum() * 0)
                continue
            low, _ = mask_source.decode(ctx.mask_embeddings[i: i + 1], emb[sel][:, None, :])
            out.append(mask_source.postprocess(low, ctx.mask_sizes[i], s.size))
        return out

    def _slots(self, ctx: BatchContext, token: str = "seg") -> list[tuple[int, int, Optional[int]]]:
        """``(sample, query, instance)`` of every ``token`` slot of the batch in reading order."""
        out = []
        for conv, si in zip(ctx.conversations, ctx.conv_sample.tolist()):
            for qi, k, kind in conv.slots:
                if kind == token:
                    out.append((si, qi, k))
        return out

    def _gather(self, ctx: BatchContext) -> tuple[torch.Tensor, torch.Tensor, list, torch.Tensor]:
        """States, image index and ``(sample, query, instance)`` of every ``[SEG]``, plus the
        conversation row and read position of each (for the existence decision)."""
        states, rows, cols = seg_token_states(ctx.lmm_out["hidden"], ctx.tokens["input_ids"], self.seg_id,
                                              self.seg_convention)
        slots = self._slots(ctx)
        if len(slots) != states.shape[0]:
            ids = [s.sample_id for s in ctx.samples]
            raise ValueError(
                f"the batch's answers hold {states.shape[0]} {self.seg_token} tokens but its queries expect "
                f"{len(slots)} masks (samples {ids}); was an answer truncated, or does a query text contain "
                f"{self.seg_token}?")
        return states, ctx.conv_sample[rows], slots, torch.stack([rows, cols - 1], 1)

    @property
    def needs_logits(self) -> bool:
        """Whether the LM head must run over the sequence: for the text loss (``ce_weight`` > 0) or
        for the ``[REJ]`` slot's argmax. With neither (the tiny demo's ``ce_weight=0``), the segmentor
        skips the vocabulary projection and its backward; the masks and gradients are the same."""
        return self.ce_weight != 0 or self.rej_token is not None

    def text_loss(self, ctx: BatchContext) -> dict[str, torch.Tensor]:
        """``{"loss_text": ce_weight * CE}`` (spec §1.3); a plain zero when the LM head was skipped."""
        if "loss_text" not in ctx.lmm_out:
            return {"loss_text": ctx.lmm_out["hidden"].new_zeros(())}
        return {"loss_text": self.ce_weight * ctx.lmm_out["loss_text"]}

    def loss(self, ctx: BatchContext, lmm, mask_source) -> dict[str, torch.Tensor]:
        losses = self.text_loss(ctx)
        states, image_of, slots, _ = self._gather(ctx)
        logits = self.decode_masks(ctx, mask_source, states, image_of)
        rejected = self._slots(ctx, "rej") if self.rej_in_mask_loss else []
        targets = []
        for i, s in enumerate(ctx.samples):
            ts = []
            for si, qi, k in slots:
                if si != i:
                    continue
                q = s.queries[qi]
                m = q.target if k is None else q.masks[k]
                ts.append(torch.from_numpy(m))
            dev = logits[i].device
            t = torch.stack(ts).to(dev, torch.float32) if ts else torch.zeros((0, *s.size), device=dev)
            n_rej = sum(1 for si, _, _ in rejected if si == i)
            if n_rej:  # GSVA §4.2: constant zero logits vs empty targets, counted in the average
                zeros = torch.zeros((n_rej, *s.size), device=dev)
                logits[i] = torch.cat([logits[i], zeros.to(logits[i].dtype)], 0)
                t = torch.cat([t, zeros], 0)
            targets.append(t)
        losses.update(mask_losses(logits, targets, self.bce_weight, self.dice_weight))
        return losses

    # ------------------------------------------------------------------ prediction
    def predict(self, ctx: BatchContext, lmm, mask_source, generate: bool) -> list[list[QueryPrediction]]:
        if generate:
            return self._predict_generate(ctx, lmm, mask_source)
        states, image_of, slots, read = self._gather(ctx)
        logits = self.decode_masks(ctx, mask_source, states, image_of)
        exists = torch.ones(len(slots), dtype=torch.bool)
        if self.rej_id is not None:  # GSVA §4.3: argmax at the slot; anything but [REJ] keeps it
            slot_logits = ctx.lmm_out["logits"][read[:, 0], read[:, 1]]
            exists = (slot_logits.argmax(-1) != self.rej_id).cpu()
        out: list[list[QueryPrediction]] = []
        for i, s in enumerate(ctx.samples):
            mine = [(j, qi) for j, (si, qi, _) in enumerate(slots) if si == i]
            local = {j: n for n, (j, _) in enumerate(mine)}
            preds = []
            for qi in range(len(s.queries)):
                idx = [j for j, q in mine if q == qi]
                rows = [local[j] for j in idx]
                preds.append(QueryPrediction(masks=logits[i][rows].detach().float().cpu(),
                                             exists=bool(exists[idx].all()) if idx else False,
                                             extras=self.prediction_extras(ctx, i, rows)))
            out.append(preds)
        return out

    def prediction_extras(self, ctx: BatchContext, image: int, rows: Optional[list[int]]) -> dict:
        """``QueryPrediction.extras`` of one query of image ``image`` whose masks are rows ``rows`` of the
        last :meth:`decode_masks` output for that image (None: the query got no mask). LISA has none;
        subclasses add e.g. heat-maps (``{"heatmaps": {name: [m, H, W] in [0, 1]}}``, drawn by the
        visualisation and the web demo)."""
        return {}

    def _predict_generate(self, ctx: BatchContext, lmm, mask_source) -> list[list[QueryPrediction]]:
        """Free generation (spec §1.9): a ``[SEG]`` yields a mask; no ``[SEG]`` (or a ``[REJ]``) means
        no mask and ``exists=False``."""
        out: list[list[QueryPrediction]] = []
        for i, s in enumerate(ctx.samples):
            preds: list[Optional[QueryPrediction]] = [None] * len(s.queries)
            for conv, si in zip(ctx.conversations, ctx.conv_sample.tolist()):
                if si != i:
                    continue
                ids, _ = lmm.encode(conv.prompt, None)
                gen, states = lmm.generate(torch.tensor(ids, device=lmm.device), ctx.image_feats[i: i + 1],
                                           max_new_tokens=ctx.max_new_tokens)
                seg_steps = [t for t, tok in enumerate(gen) if tok == self.seg_id]
                if seg_steps:
                    st = states[seg_steps]
                    masks = self.decode_masks(ctx, mask_source, st, torch.full((len(seg_steps),), i,
                                                                             device=st.device))[i]
                    masks = masks.detach().float().cpu()
                    extras = self.prediction_extras(ctx, i, list(range(len(seg_steps))))
                else:
                    masks = torch.zeros((0, *s.size))
                    extras = self.prediction_extras(ctx, i, None)
                for qi in conv.query_ids:
                    preds[qi] = QueryPrediction(masks=masks, exists=bool(seg_steps), text=lmm.decode(gen),
                                                extras=dict(extras))
            out.append(preds)  # type: ignore[arg-type]
        return out
