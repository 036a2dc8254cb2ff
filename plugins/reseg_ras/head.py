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

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from reseg.models.heads import BaseHead, Conversation, HeadBatch, HeadPredictions, MaskSlot
from reseg.structures import Query, Sample

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
    #: the classifier reads the state *at* each second-copy mask token (§2.4 G)
    read_rule = "at"
    #: every mask token's input embedding is the projected candidate (or reference) mask (§2.4 E)
    input_token = RF.MASK_SLOT
    #: selection is one forward pass, no generation (§2.2 "Non-autoregressive decoding")
    prediction_mode = "forward"
    numbered_pool = False

    def __init__(self, stage: str = "select", pos_weight: float = RF.POS_WEIGHT,
                 threshold: float = RF.SELECT_THRESHOLD, top1_tasks: tuple[str, ...] = ("res",),
                 label_rule: str = "coverage", label_thr: float = 0.5, classifier_hidden: int | None = None,
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
        # the selection stage reads hidden states only and supervises no text (§2.4 G); stage 1's
        # answer is a caption, which exists only as generated text
        self.needs_logits = stage == "caption"
        if stage == "caption":
            self.prediction_mode = "generate"
        self.pos_weight = float(pos_weight)
        self.threshold = float(threshold)
        self.top1_tasks = tuple(top1_tasks)
        self.label_rule = label_rule
        self.label_thr = float(label_thr)
        self.classifier_hidden = classifier_hidden
        self.system_prompt = system_prompt
        self.question = question
        self.caption_key = caption_key

    def setup(self, lmm: nn.Module, mask_source: nn.Module | None) -> None:
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

    def candidate_slots(self, query: int, n: int) -> list[MaskSlot]:
        """One slot per candidate: the second copy's mask tokens (the last ``n`` of the sequence)."""
        return [MaskSlot(query=query, token=RF.MASK_SLOT, kind="candidate", candidate=j) for j in range(n)]

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
                                 query_ids=list(range(len(sample.queries))), with_image=False)]
        return [Conversation(prompt=self.select_prompt(n, q), answer=None, query_ids=[k],
                             slots=self.candidate_slots(k, n)) for k, q in enumerate(sample.queries)]

    # ------------------------------------------------------------------ mask tokens
    def input_embeddings(self, batch: HeadBatch, conv: int) -> torch.Tensor:
        """``[K, D]`` mask embeddings of a conversation in the order its mask tokens appear: the
        candidates, the query's reference masks, and (RAS) the candidates again (§2.4 E-F)."""
        i = int(batch.conv_image[conv])
        cand = batch.mask_source.candidate_embeddings(batch.pool, i)
        if self.stage == "caption":
            return cand
        parts = [cand]
        query = batch.samples[i].queries[batch.conversations[conv].query_ids[0]]
        if query.reference_masks is not None and len(query.reference_masks):
            parts.append(batch.mask_source.embed_masks(batch.pool, i, query.reference_masks))
        if not self.numbered_pool:  # RAS: the second copy
            parts.append(cand)
        return torch.cat(parts, 0)

    # ------------------------------------------------------------------ selection
    def forward(self, batch: HeadBatch) -> dict[str, Any]:
        """Per conversation, ``[N]`` logits of the classifier at the second copy's mask tokens (§2.4 G)."""
        if self.stage == "caption" or self.numbered_pool:
            return {}
        slots = batch.slots.where(kind="candidate")
        return {"logits": [self.classifier(slots.states[slots.of_conversation(c)]).squeeze(-1).float()
                           for c in range(len(batch.conversations))]}

    def sample_labels(self, sample: Sample, query_index: int) -> np.ndarray:
        """``[N] uint8`` labels of the sample's pool for one query (§2.4 L): the dataset's own labels for
        its own pool, else derived from the GT group with ``label_rule``."""
        query = sample.queries[query_index]
        given = query.pool_labels if sample.meta.get("pool_source") == "dataset" else None
        return RF.candidate_labels(sample.candidate_masks, query.masks, self.label_rule, self.label_thr, given)

    def get_targets(self, batch: HeadBatch) -> list[np.ndarray]:
        """Per conversation, the labels of its pool for its query."""
        return [self.sample_labels(batch.samples[int(batch.conv_image[c])], conv.query_ids[0])
                for c, conv in enumerate(batch.conversations)]

    def loss_by_feat(self, outputs: dict[str, Any], targets: list[np.ndarray],
                     batch: HeadBatch) -> dict[str, torch.Tensor]:
        if self.stage == "caption":
            return dict(loss_text=batch.lmm_out["loss_text"])
        terms = []
        n_pos = 0
        for lg, labels in zip(outputs["logits"], targets):
            y = torch.as_tensor(labels, device=lg.device)
            n_pos += int(y.sum())
            if lg.numel():
                terms.append(RF.weighted_bce(lg, y, self.pos_weight))
        # every query weighs the same, whatever its pool size; a batch of empty pools gives a 0 loss
        loss = torch.stack(terms).mean() if terms else batch.lmm_out["hidden"].sum() * 0.0
        # logged (not a loss): positives per query, on the loss's device so DDP can average the log
        n = max(len(outputs["logits"]), 1)
        return dict(loss_select=loss, pos_per_query=torch.tensor(n_pos / n, device=loss.device))

    def predict_by_feat(self, outputs: dict[str, Any], batch: HeadBatch) -> HeadPredictions:
        if self.stage == "caption":  # a caption, no selection
            return HeadPredictions(selected=[[] for _ in batch.conversations], texts=[t.strip() for t in batch.texts])
        selected, probs = [], []
        for c, lg in enumerate(outputs["logits"]):
            sample = batch.samples[int(batch.conv_image[c])]
            p = torch.sigmoid(lg).detach().cpu().numpy()
            selected.append(RF.select_candidates(p, self.threshold, top1=sample.task in self.top1_tasks))
            probs.append(p)
        return HeadPredictions(selected=selected, candidate_probs=probs)


class RASARHead(RASHead):
    """The autoregressive baseline (anchorseg_ras.md §2.2: 2.13 s vs RAS's 0.56 s, cIoU 45.34 vs 53.75).

    Same pool, tokens and tokenizer as :class:`RASHead`, no second copy: the candidates are numbered in
    the prompt (``"1 <mask-pool-pre><mask-emb> 2 ..."``) and the LMM is trained with its text loss to
    answer the 1-based indices of the selected candidates (``"2, 5"``, or ``"none"``), then generates
    them greedily at inference (always: a selection exists only as generated text). Integers outside
    ``1..N`` are dropped and counted in ``extras['invalid_indices']``.
    """

    numbered_pool = True
    prediction_mode = "generate"

    def __init__(self, empty_answer: str = "none", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.stage != "select":
            raise ValueError("RASARHead has no caption stage; train stage 1 with RASHead(stage='caption')")
        self.needs_logits = True  # trained with the text loss
        self.empty_answer = empty_answer

    def setup(self, lmm: nn.Module, mask_source: nn.Module | None) -> None:
        super().setup(lmm, mask_source)
        del self.classifier  # the baseline answers in text

    def select_prompt(self, n: int, query: Query) -> str:
        return self._user(f"<image>\n{RF.pool_block(n, numbered=True)}\n{self.query_text(query)}")

    def candidate_slots(self, query: int, n: int) -> list[MaskSlot]:
        """The candidates are answered in text: slots without a token."""
        return [MaskSlot(query=query, kind="candidate", candidate=j) for j in range(n)]

    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        convs = super().build_conversations(sample, mode)
        if mode == "train":  # the answer: the indices of the positive candidates
            for conv in convs:
                conv.answer = RF.format_indices(np.flatnonzero(self.sample_labels(sample, conv.query_ids[0])),
                                                self.empty_answer)
        return convs

    def loss_by_feat(self, outputs: dict[str, Any], targets: Any, batch: HeadBatch) -> dict[str, torch.Tensor]:
        return dict(loss_text=batch.lmm_out["loss_text"])

    def predict_by_feat(self, outputs: dict[str, Any], batch: HeadBatch) -> HeadPredictions:
        selected, probs, extras, texts = [], [], [], []
        for c in range(len(batch.conversations)):
            text = batch.texts[c].strip()
            n = int(batch.samples[int(batch.conv_image[c])].candidate_masks.shape[0])
            sel, invalid = RF.parse_indices(text, n)
            p = np.zeros(n, dtype=np.float32)
            p[sel] = 1.0
            selected.append(sel)
            probs.append(p)
            texts.append(text)
            extras.append(dict(invalid_indices=invalid, generated_tokens=len(batch.generated[c])))
        return HeadPredictions(selected=selected, candidate_probs=probs, extras=extras, texts=texts)
