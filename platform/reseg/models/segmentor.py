"""``ReasoningSegmentor``: LMM backbone + mask source + head, as one mmengine ``BaseModel``.

The segmentor owns the batch (the head contract v2, :mod:`reseg.models.heads.base`). Per batch it runs
the vision tower and the mask-source encoder **once per image** however many queries the image has,
asks the head for its conversations, tokenises them, runs the LMM over all of them at once (the
teacher-forced pass, or batched free generation followed by a teacher-forced pass over the generated
answers), reads every mask slot's hidden state by the head's read rule, hands the head a
:class:`~reseg.models.heads.HeadBatch`, and turns the head's per-slot answers into one
:class:`~reseg.structures.QueryPrediction` per query.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from mmengine.model import BaseModel

from reseg.models.heads.base import HeadBatch, HeadPredictions, MaskSlot, SlotBatch
from reseg.registry import HEADS, LMMS, MASK_SOURCES, MODELS
from reseg.structures import QueryPrediction, Sample

IGNORE_INDEX = -100


def _build(registry, cfg: Any, what: str):
    if isinstance(cfg, dict) or hasattr(cfg, "keys"):
        return registry.build(cfg)
    if cfg is None:
        return None
    return cfg  # an already-built module


@MODELS.register_module()
class ReasoningSegmentor(BaseModel):
    """A reasoning-segmentation model made of three registered parts.

    Args:
        lmm: config of an ``LMMS`` type (e.g. :class:`reseg.models.lmm.LlavaLMM`).
        mask_source: config of a ``MASK_SOURCES`` type (e.g. :class:`SAMMaskSource`), or None.
        head: config of a ``HEADS`` type (e.g. ``LISAHead`` from the ``lisa`` plugin).
        val_mode: ``'teacher_forcing'`` (LISA's validation protocol, spec seg_token_family.md §1.8)
            or ``'generate'`` (free generation, §1.9) for ``val_step``/``test_step``.
        max_new_tokens: generation budget in ``'generate'`` mode.
    """

    def __init__(self, lmm: dict, head: dict, mask_source: dict | None = None,
                 val_mode: str = "teacher_forcing", max_new_tokens: int = 32,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if val_mode not in ("teacher_forcing", "generate"):
            raise ValueError(f"model.val_mode must be 'teacher_forcing' or 'generate', got {val_mode!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"model.max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        self.lmm = _build(LMMS, lmm, "lmm")
        self.mask_source = _build(MASK_SOURCES, mask_source, "mask_source")
        self.head = _build(HEADS, head, "head")
        self.head.setup(self.lmm, self.mask_source)
        self.val_mode = val_mode
        self.max_new_tokens = max_new_tokens

    # ------------------------------------------------------------------ the batch
    def prepare(self, samples: list[Sample], mode: str, with_tokens: bool = True) -> HeadBatch:
        """Run the shared parts once per image and tokenise the head's conversations."""
        if not samples:
            raise ValueError("empty batch")
        images = [s.image for s in samples]
        image_feats = self.lmm.image_features(self.lmm.preprocess_images(images))
        batch = HeadBatch(samples=list(samples), mode=mode, conversations=[], image_feats=image_feats,
                          conv_image=torch.zeros(0, dtype=torch.long, device=image_feats.device),
                          frames=self.lmm.image_token_frames([s.size for s in samples]),
                          mask_source=self.mask_source)
        if getattr(self.mask_source, "kind", None) == "candidate_pool":
            # proposals (unless the samples carry a pool) and encoder features, once per image; the
            # batch's samples are copies carrying the pool actually used
            batch.samples, batch.pool = self.mask_source.prepare(samples)
        elif self.mask_source is not None and hasattr(self.mask_source, "embed"):
            pixels, batch.mask_sizes = self.mask_source.preprocess(images)
            batch.mask_embeddings = self.mask_source.embed(pixels)
        conv_image: list[int] = []
        for i, s in enumerate(batch.samples):
            for c in self.head.build_conversations(s, mode):
                batch.conversations.append(c)
                conv_image.append(i)
        batch.conv_image = torch.tensor(conv_image, dtype=torch.long, device=image_feats.device)
        if with_tokens and batch.conversations:
            batch.tokens = self.lmm.collate([
                self.lmm.encode(c.prompt, c.answer, with_image=c.with_image) for c in batch.conversations])
        return batch

    def _input_embeddings(self, batch: HeadBatch, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(positions [C, L], values [K, D])`` of the head's :attr:`input_token`, checked per conversation."""
        token = self.head.input_token
        if token is None:
            return None
        pos = input_ids == self.head.token_ids[token]
        values = []
        for c, k in enumerate(pos.sum(-1).tolist()):
            v = self.head.input_embeddings(batch, c)
            if v.shape[0] != k:
                raise RuntimeError(f"conversation {c}: {k} {token} tokens but {v.shape[0]} embeddings from "
                                   f"{type(self.head).__name__}.input_embeddings; does the query text contain "
                                   f"{token!r} itself?")
            values.append(v)
        return pos, torch.cat(values, 0)

    def run_lmm(self, batch: HeadBatch) -> None:
        """The teacher-forced LMM pass over the batch's tokens, then the read of every slot's state."""
        kwargs: dict[str, Any] = {}
        extra = self._input_embeddings(batch, batch.tokens["input_ids"])
        if extra is not None:
            kwargs["extra_embeds"] = extra
        labels = batch.tokens.get("labels")
        if not self.head.needs_logits:
            # the head reads hidden states only and supervises no text: no LM head, no text loss
            kwargs["with_logits"] = False
            labels = None
        batch.lmm_out = self.lmm(input_ids=batch.tokens["input_ids"], attention_mask=batch.tokens["attention_mask"],
                                 image_feats=batch.image_feats, image_index=batch.conv_image, labels=labels, **kwargs)
        batch.slots = self.read_slots(batch, [c.slots for c in batch.conversations])

    def read_slots(self, batch: HeadBatch, slots: list[list[MaskSlot]]) -> SlotBatch:
        """Find each conversation's slots in its tokens and read their states by the head's read rule.

        The slots of a conversation that share a token bind, in order, to that token's occurrences in
        the conversation's answer, which must hold exactly one per slot; a conversation without an
        answer (a prompt-only pass, or generated text) binds them to the token's last occurrences.
        """
        ids = batch.tokens["input_ids"] if batch.tokens else None
        labels = batch.tokens.get("labels") if batch.tokens else None
        rows, images, positions, flat = [], [], [], []
        for c, conv_slots in enumerate(slots):
            taken: dict[str, list[int]] = {}
            answered = labels is not None and batch.conversations[c].answer is not None
            for tok in dict.fromkeys(s.token for s in conv_slots if s.token is not None):
                if tok not in self.head.token_ids:
                    raise ValueError(f"{type(self.head).__name__}: a slot names the token {tok!r}, which is not one "
                                     f"of the head's special_tokens {list(self.head.special_tokens)}")
                want = sum(1 for s in conv_slots if s.token == tok)
                hit = ids[c] == self.head.token_ids[tok]
                if answered:
                    hit = hit & (labels[c] != IGNORE_INDEX)
                occ = hit.nonzero(as_tuple=True)[0].tolist()
                if len(occ) < want or (answered and len(occ) != want):
                    sample = batch.samples[int(batch.conv_image[c])]
                    where = "its answer holds" if answered else "it holds"
                    raise ValueError(
                        f"conversation {c} (sample {sample.sample_id!r}): {where} {len(occ)} {tok} tokens but its "
                        f"queries expect {want} masks; was the answer truncated (model.lmm.max_length), or does a "
                        f"query's answer text hold {tok} itself?")
                taken[tok] = occ[len(occ) - want:]
            for s in conv_slots:
                rows.append(c)
                images.append(int(batch.conv_image[c]))
                positions.append(taken[s.token].pop(0) if s.token is not None else -1)
                flat.append(s)
        dev = batch.device
        conv = torch.tensor(rows, dtype=torch.long, device=dev)
        position = torch.tensor(positions, dtype=torch.long, device=dev)
        offset = -1 if self.head.read_rule == "previous" else 0
        read = torch.where(position >= 0, position + offset, position)
        if bool(((position >= 0) & (read < 0)).any()):
            raise ValueError("a mask token at position 0 has no previous state")
        hidden = batch.lmm_out.get("hidden")
        dim = hidden.shape[-1] if hidden is not None else self.lmm.hidden_size
        if hidden is None or not flat:
            states = batch.image_feats.new_zeros((len(flat), dim))
        else:
            states = hidden[conv, read.clamp(min=0)]
            if bool((position < 0).any()):
                states = torch.where((position >= 0)[:, None], states, torch.zeros_like(states))
        return SlotBatch(slots=flat, conv=conv, image=torch.tensor(images, dtype=torch.long, device=dev),
                         position=position, read=read, states=states, num_images=len(batch.samples))

    def generate(self, batch: HeadBatch) -> None:
        """Free generation of every conversation of the batch at once; for a head with mask tokens, a
        teacher-forced pass over each prompt and its generated answer then reads the generated slots."""
        lmm = self.lmm
        prompts = [lmm.encode(c.prompt, None, with_image=c.with_image)[0] for c in batch.conversations]
        extra = None
        if self.head.input_token is not None:
            tid = self.head.token_ids[self.head.input_token]
            extra = []
            for c, p in enumerate(prompts):
                where = torch.as_tensor(p, device=batch.device) == tid
                values = self.head.input_embeddings(batch, c)
                if values.shape[0] != int(where.sum()):
                    raise RuntimeError(f"conversation {c}: {int(where.sum())} {self.head.input_token} tokens but "
                                       f"{values.shape[0]} embeddings from {type(self.head).__name__}.input_embeddings")
                extra.append((where, values))
        batch.generated = lmm.generate(prompts, batch.image_feats, batch.conv_image,
                                       max_new_tokens=self.max_new_tokens, extra_embeds=extra)
        batch.texts = [lmm.decode(g) for g in batch.generated]
        mask_ids = {self.head.token_ids[t]: t for t in self.head.mask_tokens}
        slots = [[MaskSlot(query=conv.query_ids[0], token=mask_ids[t]) for t in gen if t in mask_ids]
                 if conv.query_ids else [] for conv, gen in zip(batch.conversations, batch.generated)]
        if any(slots):
            batch.tokens = lmm.collate([(p + g, [IGNORE_INDEX] * (len(p) + len(g)))
                                        for p, g in zip(prompts, batch.generated)])
            for conv, conv_slots in zip(batch.conversations, slots):
                conv.slots = conv_slots
            self.run_lmm(batch)
        else:
            batch.slots = self.read_slots(batch, [[] for _ in batch.conversations])

    # ------------------------------------------------------------------ mmengine API
    def forward(self, samples: list[Sample], mode: str = "tensor") -> Any:
        if mode == "loss":
            self._loss_sample_ids = [s.sample_id for s in samples]  # named if the loss is not finite
            batch = self.prepare(samples, "train")
            self.run_lmm(batch)
            return self.head.loss_by_feat(self.head(batch), self.head.get_targets(batch), batch)
        if mode == "predict":
            return self.predict(samples, generate=self.val_mode == "generate")
        if mode == "tensor":
            batch = self.prepare(samples, "val")
            self.run_lmm(batch)
            return batch
        raise ValueError(f"unknown mode {mode!r}; expected 'loss', 'predict' or 'tensor'")

    def predict(self, samples: list[Sample], generate: bool = False) -> list[dict]:
        """One dict per sample: ``sample_id`` and ``predictions`` (one QueryPrediction per query)."""
        how = self.head.prediction_mode
        generate = generate if how == "auto" else how == "generate"
        batch = self.prepare(samples, "generate" if generate else "val", with_tokens=not generate)
        if generate:
            self.generate(batch)
        elif batch.conversations:
            self.run_lmm(batch)
        else:
            batch.slots = self.read_slots(batch, [])
        preds = self.head.predict_by_feat(self.head(batch), batch)
        return [dict(sample_id=s.sample_id, predictions=p) for s, p in zip(samples, assemble(batch, preds))]

    def parse_losses(self, losses: dict) -> tuple[torch.Tensor, dict]:
        """mmengine's sum of the ``loss*`` terms; under DDP the *logged* values are averaged over ranks.

        The loss each rank backpropagates stays its own (DDP averages the gradients); only the numbers
        in the log become the mean over ranks, so a 2-process run logs the same curve as 1 process at
        the same global batch when the ranks' loss denominators are equal (tests/test_distributed.py).
        """
        loss, log_vars = super().parse_losses(losses)
        from mmengine.dist import get_world_size

        world = get_world_size()
        if world > 1:
            import torch.distributed as dist

            names = list(log_vars)
            vals = torch.stack([log_vars[k].detach().float().reshape(()) for k in names])
            dist.all_reduce(vals)
            log_vars = type(log_vars)((k, v / world) for k, v in zip(names, vals))
        self._check_finite(log_vars)
        return loss, log_vars

    def _check_finite(self, log_vars: dict) -> None:
        """Stop on a NaN/inf loss *before* the optimizer step, naming the iteration, the loss terms and
        the batch's samples; the weights and the last checkpoint stay as they were. Under DDP the
        check reads the rank-averaged values, so every rank stops at the same iteration."""
        bad = {k: float(v) for k, v in log_vars.items() if not bool(torch.isfinite(torch.as_tensor(v)).all())}
        if not bad:
            return
        from mmengine.logging import MessageHub

        it = MessageHub.get_current_instance().get_info("iter")
        where = f"iteration {int(it) + 1}" if it is not None else "this iteration"
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in log_vars.items())
        raise FloatingPointError(
            f"non-finite loss at {where} ({', '.join(bad)} not finite; {terms}); batch sample ids "
            f"{getattr(self, '_loss_sample_ids', '?')}. Training stopped before the optimizer step, so the "
            "weights and the last checkpoint are unchanged. Lower the learning rate, check these samples "
            "(empty or corrupt masks?) or resume from the last checkpoint with --resume.")

    def val_step(self, data: Any) -> list:
        data = self.data_preprocessor(data, False)
        return self._run_forward(data, mode="predict")

    def test_step(self, data: Any) -> list:
        return self.val_step(data)


def assemble(batch: HeadBatch, preds: HeadPredictions) -> list[list[QueryPrediction]]:
    """Per sample, one :class:`QueryPrediction` per query from a head's per-slot (or per-conversation) answers."""
    out: list[list[QueryPrediction | None]] = [[None] * len(s.queries) for s in batch.samples]
    texts = preds.texts if preds.texts is not None else (batch.texts or [""] * len(batch.conversations))
    for c, conv in enumerate(batch.conversations):
        i = int(batch.conv_image[c])
        for q in conv.query_ids:
            if preds.selected is not None:
                out[i][q] = _selection(batch.samples[i], preds, c, texts[c])
            elif out[i][q] is None:
                out[i][q] = QueryPrediction(masks=torch.zeros((0, *batch.samples[i].size)), exists=False, text=texts[c])
    if preds.masks is not None:
        slots = batch.slots.where(kind="mask")
        exists = preds.exists if preds.exists is not None else torch.ones(len(slots), dtype=torch.bool)
        for i, sel in slots.by_image():
            s = batch.samples[i]
            local = {int(j): n for n, j in enumerate(sel.tolist())}
            for q in range(len(s.queries)):
                idx = [j for j in local if slots.slots[j].query == q]
                rows = [local[j] for j in idx]
                text = out[i][q].text if out[i][q] is not None else ""
                heat = {name: maps[i][rows] for name, maps in preds.heatmaps.items()}
                out[i][q] = QueryPrediction(
                    masks=preds.masks[i][rows].detach().float().cpu(),
                    scores=None if preds.scores is None else preds.scores[idx].detach().float().cpu(),
                    exists=bool(exists[idx].all()) if idx else False, text=text,
                    extras={"heatmaps": heat} if heat else {})
    for i, s in enumerate(batch.samples):
        for q in range(len(s.queries)):
            if out[i][q] is None:  # a query no conversation asked (a head answering a subset)
                out[i][q] = QueryPrediction(masks=torch.zeros((0, *s.size)), exists=False)
    return out  # type: ignore[return-value]


def _selection(sample: Sample, preds: HeadPredictions, c: int, text: str) -> QueryPrediction:
    """A selection head's prediction for conversation ``c``: the union of its selected candidates of the
    pool the model used (which travels with the prediction as ``pool``)."""
    pool = np.asarray(sample.candidate_masks, dtype=bool)
    sel = list(preds.selected[c])
    masks = pool[sel] if sel else np.zeros((0,) + sample.size, dtype=bool)
    probs = None if preds.candidate_probs is None else preds.candidate_probs[c]
    extras: dict[str, Any] = {}
    if probs is not None:
        extras = dict(candidate_probs=probs, candidate_masks=pool)
    if preds.extras is not None:
        extras.update(preds.extras[c])
    return QueryPrediction(masks=masks, scores=None if probs is None else (probs[sel] if len(probs) else probs),
                           exists=bool(sel), text=text, selected=sel, pool=pool, extras=extras)
