"""RAS (ICCV 2025, "Refer to Any Segmentation Mask Group"): select a group of candidate masks.

RAS's code is not public; this follows the paper-derived design of ``anchorseg_ras.md`` §2.4, every
[GUESS] a named option (``docs/methods/ras.md``). The head needs a ``candidate_pool`` mask source
(:class:`reseg.models.mask_sources.pool.CandidatePoolSource`): each candidate mask (and each reference
mask) is one LMM token made by the mask tokenizer.

Sequence (§2.2 "Sequence layout", §2.4 F)::

    USER: <image>\\n [<mask-pool-pre> m_1] ... [<mask-pool-pre> m_N] \\n query( ... [<mask-ref-pre> r] ...)
    ASSISTANT: [<mask-pool-pre> m_1] ... [<mask-pool-pre> m_N]

With causal attention the first copies cannot see the query, so the candidates are written a second
time after it; a binary classifier reads the last-layer hidden state at each second-copy mask token
(§2.4 G) and the prediction is the union of the candidates whose probability exceeds the threshold:
one forward pass, no generation (§2.2 "Non-autoregressive decoding").

:class:`RASARHead` is the autoregressive baseline of the paper's comparison: the same pool and tokens,
no second copy, and the LMM *generates* the 1-based indices of the selected candidates as text.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn

from reseg.models.head import BaseHead, BatchContext, Conversation
from reseg.structures import Query, QueryPrediction, Sample

from . import functional as RF

#: Training stages of RAS (§2.2 "Training", §2.4 J): stage 1 aligns mask tokens with language by
#: captioning the image from its mask tokens alone; stage 2 and the fine-tunes select mask groups.
STAGES = ("caption", "select")

#: Stage-1 instruction [GUESS: the paper gives none].
CAPTION_PROMPT = "Describe the image."


class RASHead(BaseHead):
    """Non-autoregressive mask-group selection (RAS, anchorseg_ras.md §2).

    Args:
        stage: ``'select'`` (stage 2 and fine-tunes: the classifier over the second copy) or
            ``'caption'`` (stage 1: caption the image from the candidates' mask tokens only, no global
            image tokens, §2.2; the LMM's text loss is the only loss).
        pos_weight: weight of positive candidates in the BCE (§2.4 H, [GUESS] 5).
        threshold: selection threshold on the probability (§2.4 I, [GUESS] 0.5).
        top1_tasks: tasks answered with the single most probable candidate (single-target RES,
            §2.4 I [GUESS]); every other task selects ``p > threshold`` and may select nothing.
        label_rule, label_thr: how candidates are labelled against a query's GT group when the pool
            has no labels of its own (a proposer's pool; §2.4 L): ``'coverage'`` (more than
            ``label_thr`` of the candidate inside the target union, the evaluation's oracle rule) or
            ``'iou'`` (IoU >= ``label_thr`` with a target instance).
        classifier_hidden: hidden width of the classifier MLP (Linear-GELU-Linear, §2.4 G
            alternative); 0 = a single Linear(D, 1); None = the LMM width.
        system_prompt: text before ``USER:`` (empty by default at the tiny scale).
        question: the user text around the query, with ``{text}``; MaskGroups' human turn is the
            query alone (§2.3), so ``"{text}"``.
        caption_key: ``Sample.meta`` key of the stage-1 caption.
    """

    special_tokens = (RF.POOL_PRE, RF.REF_PRE, RF.MASK_SLOT)
    mask_source_kind = "candidate_pool"
    numbered_pool = False

    def __init__(self, stage: str = "select", pos_weight: float = RF.POS_WEIGHT,
                 threshold: float = RF.SELECT_THRESHOLD, top1_tasks: tuple[str, ...] = ("res",),
                 label_rule: str = "coverage", label_thr: float = 0.5, classifier_hidden: Optional[int] = None,
                 system_prompt: str = "", question: str = "{text}", caption_key: str = "caption") -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"model.head.stage must be one of {STAGES}, got {stage!r}")
        if label_rule not in ("coverage", "iou"):
            raise ValueError(f"model.head.label_rule must be 'coverage' or 'iou', got {label_rule!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"model.head.threshold is a probability in [0, 1], got {threshold!r}")
        if float(pos_weight) <= 0:
            raise ValueError(f"model.head.pos_weight must be > 0, got {pos_weight!r}")
        if "{text}" not in question:
            raise ValueError(f"model.head.question must contain '{{text}}', got {question!r}")
        self.stage = stage
        # the selection stage reads hidden states only and supervises no text (§2.4 G)
        self.needs_logits = stage == "caption"
        self.pos_weight = float(pos_weight)
        self.threshold = float(threshold)
        self.top1_tasks = tuple(top1_tasks)
        self.label_rule = label_rule
        self.label_thr = float(label_thr)
        self.classifier_hidden = classifier_hidden
        self.system_prompt = system_prompt
        self.question = question
        self.caption_key = caption_key

    def setup(self, lmm: nn.Module, mask_source: Optional[nn.Module]) -> None:
        super().setup(lmm, mask_source)
        d = lmm.hidden_size
        mask_source.set_output_dim(d)
        hidden = d if self.classifier_hidden is None else int(self.classifier_hidden)
        self.classifier = (nn.Linear(d, 1) if hidden == 0 else
                           nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, 1)))
        if self.stage == "caption":  # stage 1 trains the mask projector only (§2.2)
            self.classifier.requires_grad_(False)

    # ------------------------------------------------------------------ conversations
    def _user(self, body: str) -> str:
        head = f"{self.system_prompt} " if self.system_prompt else ""
        return f"{head}USER: {body} ASSISTANT:"

    def query_text(self, query: Query) -> str:
        n_ref = 0 if query.reference_masks is None else int(np.asarray(query.reference_masks).shape[0])
        return RF.expand_references(self.question.format(text=query.text), n_ref)

    def select_prompt(self, n: int, query: Query) -> str:
        """The RAS prompt: image, the candidates, the query, then the second copy (§2.4 F)."""
        return self._user(f"<image>\n{RF.pool_block(n)}\n{self.query_text(query)}") + RF.pool_block(n)

    def caption_prompt(self, n: int) -> str:
        """Stage 1: the candidates' tokens only, no image tokens (§2.2)."""
        return self._user(f"{RF.pool_block(n)}\n{CAPTION_PROMPT}")

    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        if sample.candidate_masks is None:
            raise ValueError(f"sample {sample.sample_id!r} reached the RAS head without a candidate pool")
        n = int(sample.candidate_masks.shape[0])
        if self.stage == "caption":
            caption = sample.meta.get(self.caption_key)
            if mode == "train" and not caption:
                raise ValueError(
                    f"RAS stage 'caption': sample {sample.sample_id!r} ({sample.meta.get('dataset', '?')}) has no "
                    f"meta[{self.caption_key!r}]; train stage 1 on a dataset with captions (MaskGroups 'caption').")
            return [Conversation(prompt=self.caption_prompt(n), answer=caption if mode == "train" else None,
                                 query_ids=list(range(len(sample.queries))), slots=[dict(n=n, refs=[])],
                                 with_image=False)]
        return [Conversation(prompt=self.select_prompt(n, q), answer=None, query_ids=[k],
                             slots=[dict(n=n, refs=self._refs(q))])
                for k, q in enumerate(sample.queries)]

    @staticmethod
    def _refs(query: Query) -> Optional[np.ndarray]:
        return None if query.reference_masks is None or len(query.reference_masks) == 0 else query.reference_masks

    # ------------------------------------------------------------------ mask tokens
    def _conv_values(self, ctx: BatchContext, mask_source: nn.Module, c: int) -> torch.Tensor:
        """``[K, D]`` mask embeddings of conversation ``c`` in the order its mask slots appear."""
        conv = ctx.conversations[c]
        i = int(ctx.conv_sample[c])
        cand = mask_source.candidate_embeddings(ctx.pool, i)
        if self.stage == "caption":
            return cand
        parts = [cand]
        refs = conv.slots[0]["refs"]
        if refs is not None:
            parts.append(mask_source.embed_masks(ctx.pool, i, refs))
        if not self.numbered_pool:  # RAS: the second copy
            parts.append(cand)
        return torch.cat(parts, 0)

    def extra_embeddings(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module]):
        ids = ctx.tokens["input_ids"]
        pos = ids == self.token_ids[RF.MASK_SLOT]
        vals = [self._conv_values(ctx, mask_source, c) for c in range(len(ctx.conversations))]
        counts = pos.sum(1).tolist()
        for c, (v, k) in enumerate(zip(vals, counts)):
            if v.shape[0] != k:
                raise RuntimeError(
                    f"conversation {c}: {k} {RF.MASK_SLOT} tokens but {v.shape[0]} mask embeddings; does the "
                    f"query text contain {RF.MASK_SLOT!r} itself?")
        return pos, torch.cat(vals, 0)

    def selection_logits(self, ctx: BatchContext) -> list[torch.Tensor]:
        """Per conversation, ``[N]`` logits read at the second copy's mask slots (§2.4 G)."""
        hidden = ctx.lmm_out["hidden"]
        ids = ctx.tokens["input_ids"]
        slot = self.token_ids[RF.MASK_SLOT]
        out = []
        for c, conv in enumerate(ctx.conversations):
            n = conv.slots[0]["n"]
            cols = (ids[c] == slot).nonzero(as_tuple=True)[0]
            second = cols[cols.numel() - n:] if n else cols[:0]
            out.append(self.classifier(hidden[c, second]).squeeze(-1).float())
        return out

    def sample_labels(self, sample: Sample, query_index: int) -> np.ndarray:
        """``[N] uint8`` labels of the sample's pool for one query (§2.4 L): the dataset's own labels for
        its own pool, else derived from the GT group with ``label_rule``."""
        query = sample.queries[query_index]
        given = query.pool_labels if sample.meta.get("pool_source") == "dataset" else None
        return RF.candidate_labels(sample.candidate_masks, query.masks, self.label_rule, self.label_thr, given)

    def labels(self, ctx: BatchContext, c: int) -> np.ndarray:
        conv = ctx.conversations[c]
        return self.sample_labels(ctx.samples[int(ctx.conv_sample[c])], conv.query_ids[0])

    # ------------------------------------------------------------------ training
    def loss(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module]) -> dict[str, torch.Tensor]:
        if self.stage == "caption":
            return dict(loss_text=ctx.lmm_out["loss_text"])
        logits = self.selection_logits(ctx)
        terms = []
        n_pos = 0
        for c, lg in enumerate(logits):
            y = torch.as_tensor(self.labels(ctx, c), device=lg.device)
            n_pos += int(y.sum())
            if lg.numel():
                terms.append(RF.weighted_bce(lg, y, self.pos_weight))
        # every query weighs the same, whatever its pool size; a batch of empty pools gives a 0 loss
        loss = torch.stack(terms).mean() if terms else ctx.lmm_out["hidden"].sum() * 0.0
        # logged (not a loss): positives per query, on the loss's device so DDP can average the log
        return dict(loss_select=loss, pos_per_query=torch.tensor(n_pos / max(len(logits), 1), device=loss.device))

    # ------------------------------------------------------------------ prediction
    def _prediction(self, sample: Sample, probs: np.ndarray, selected: list[int], text: str = "",
                    **extras: Any) -> QueryPrediction:
        pool = np.asarray(sample.candidate_masks, dtype=bool)
        masks = pool[selected] if selected else np.zeros((0,) + sample.size, dtype=bool)
        return QueryPrediction(masks=masks, scores=probs[selected] if len(probs) else probs,
                               exists=bool(selected), text=text, selected=list(selected),
                               extras=dict(candidate_probs=probs, candidate_masks=pool, **extras))

    def predict(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module],
                generate: bool) -> list[list[QueryPrediction]]:
        if self.stage == "caption":
            return self._predict_captions(ctx, lmm, mask_source)
        if generate:  # RAS never generates: selection is one forward pass (§2.2)
            ctx.tokens = lmm.collate([lmm.encode(c.prompt, c.answer) for c in ctx.conversations])
            ctx.lmm_out = lmm(input_ids=ctx.tokens["input_ids"], attention_mask=ctx.tokens["attention_mask"],
                              image_feats=ctx.image_feats, image_index=ctx.conv_sample,
                              extra_embeds=self.extra_embeddings(ctx, lmm, mask_source), with_logits=False)
        out: list[list[Optional[QueryPrediction]]] = [[None] * len(s.queries) for s in ctx.samples]
        for c, lg in enumerate(self.selection_logits(ctx)):
            i = int(ctx.conv_sample[c])
            sample = ctx.samples[i]
            probs = torch.sigmoid(lg).detach().cpu().numpy()
            sel = RF.select_candidates(probs, self.threshold, top1=sample.task in self.top1_tasks)
            out[i][ctx.conversations[c].query_ids[0]] = self._prediction(sample, probs, sel)
        return out  # type: ignore[return-value]

    def _generate(self, ctx: BatchContext, lmm: nn.Module, mask_source: nn.Module, c: int) -> tuple[str, int]:
        conv = ctx.conversations[c]
        ids, _ = lmm.encode(conv.prompt, None, with_image=conv.with_image)
        ids_t = torch.tensor(ids, device=lmm.device)
        pos = ids_t == self.token_ids[RF.MASK_SLOT]
        i = int(ctx.conv_sample[c])
        gen, _ = lmm.generate(ids_t, ctx.image_feats[i: i + 1], max_new_tokens=ctx.max_new_tokens,
                              extra_embeds=(pos, self._conv_values(ctx, mask_source, c)))
        return lmm.decode(gen).strip(), len(gen)

    def _predict_captions(self, ctx: BatchContext, lmm: nn.Module, mask_source: nn.Module):
        out = []
        for c, conv in enumerate(ctx.conversations):
            sample = ctx.samples[int(ctx.conv_sample[c])]
            text, _ = self._generate(ctx, lmm, mask_source, c)
            empty = np.zeros((0,) + sample.size, dtype=bool)
            out.append([QueryPrediction(masks=empty, exists=False, text=text, selected=[])
                        for _ in sample.queries])
        return out


class RASARHead(RASHead):
    """The autoregressive baseline (anchorseg_ras.md §2.2: 2.13 s vs RAS's 0.56 s, cIoU 45.34 vs 53.75).

    Same pool, tokens and tokenizer as :class:`RASHead`, no second copy: the candidates are numbered in
    the prompt (``"1 <mask-pool-pre><mask-emb> 2 ..."``) and the LMM is trained with its text loss to
    answer the 1-based indices of the selected candidates (``"2, 5"``, or ``"none"``), then generates
    them greedily at inference (always: a selection exists only as generated text). Integers outside
    ``1..N`` are dropped and counted in ``extras['invalid_indices']``.
    """

    numbered_pool = True

    def __init__(self, empty_answer: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.stage != "select":
            raise ValueError("RASARHead has no caption stage; train stage 1 with RASHead(stage='caption')")
        self.needs_logits = True  # trained with the text loss
        self.empty_answer = empty_answer

    def setup(self, lmm: nn.Module, mask_source: Optional[nn.Module]) -> None:
        super().setup(lmm, mask_source)
        del self.classifier  # the baseline answers in text

    def select_prompt(self, n: int, query: Query) -> str:
        return self._user(f"<image>\n{RF.pool_block(n, numbered=True)}\n{self.query_text(query)}")

    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        convs = super().build_conversations(sample, mode)
        if mode == "train":  # the answer: the indices of the positive candidates
            for conv in convs:
                conv.answer = RF.format_indices(np.flatnonzero(self.sample_labels(sample, conv.query_ids[0])),
                                                self.empty_answer)
        return convs

    def loss(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module]) -> dict[str, torch.Tensor]:
        return dict(loss_text=ctx.lmm_out["loss_text"])

    def predict(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module],
                generate: bool) -> list[list[QueryPrediction]]:
        out: list[list[Optional[QueryPrediction]]] = [[None] * len(s.queries) for s in ctx.samples]
        for c, conv in enumerate(ctx.conversations):
            i = int(ctx.conv_sample[c])
            sample = ctx.samples[i]
            text, n_tokens = self._generate(ctx, lmm, mask_source, c)
            n = conv.slots[0]["n"]
            sel, invalid = RF.parse_indices(text, n)
            probs = np.zeros(n, dtype=np.float32)
            probs[sel] = 1.0
            out[i][conv.query_ids[0]] = self._prediction(sample, probs, sel, text=text, invalid_indices=invalid,
                                                         generated_tokens=n_tokens)
        return out  # type: ignore[return-value]
