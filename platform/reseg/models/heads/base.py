"""The head contract (v2): the core owns the batch, a head owns only its method.

A head declares its conversations and, in each, its **mask slots** (:class:`MaskSlot`: which token,
which query, which instance or candidate). The segmentor (:class:`~reseg.models.segmentor.ReasoningSegmentor`)
does the rest of the bookkeeping: it tokenises the conversations, runs every LMM pass (the
teacher-forced forward, and batched generation), finds each slot's token, reads its hidden state by
the head's :attr:`BaseHead.read_rule`, builds its targets, regroups outputs per image and per query
and assembles the :class:`~reseg.structures.QueryPrediction` objects. A head implements the method:

* :meth:`BaseHead.build_conversations`: prompt and answer text, and the slots of each conversation;
* :meth:`BaseHead.forward`: slot states -> prompts for the mask source -> masks (named outputs);
* :meth:`BaseHead.loss_by_feat`: outputs + targets (:meth:`BaseHead.get_targets`) -> named losses;
* :meth:`BaseHead.predict_by_feat`: outputs -> per-slot masks and decisions (:class:`HeadPredictions`).

This is mmdet's ``loss`` / ``get_targets`` / ``loss_by_feat`` / ``predict_by_feat`` split
(``mmdet/models/dense_heads/base_dense_head.py``): batching, sample bookkeeping and the loop stay
outside the head.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from reseg.models.image_tokens import ImageTokenFrame, similarity_map
from reseg.structures import Sample

#: What a slot is (:attr:`MaskSlot.kind`).
SLOT_KINDS = ("mask", "reject", "candidate")
#: Which hidden state a slot reads (:attr:`BaseHead.read_rule`): the state *before* its token (the one
#: whose LM-head output predicts it: LISA's official code, seg_token_family.md §1.2 step 2, §7.1) or the
#: state *at* its token.
READ_RULES = ("previous", "at")
#: How a head predicts (:attr:`BaseHead.prediction_mode`): ``'auto'`` follows the segmentor's
#: ``val_mode`` (teacher forcing or free generation), ``'forward'`` is always one forward pass over the
#: prompt (a non-autoregressive head), ``'generate'`` always generates (an answer that exists only as text).
PREDICTION_MODES = ("auto", "forward", "generate")


@dataclass(frozen=True)
class MaskSlot:
    """One mask token of a conversation, and what it answers.

    Attributes:
        query: index into ``sample.queries`` of the query the slot answers.
        instance: index into that query's ``masks`` when the slot answers one target instance; None
            for the union of the query's targets.
        token: the slot's token text (one of the head's :attr:`~BaseHead.special_tokens`). The slots of
            a conversation that share a token bind, in order, to the *last* occurrences of that token in
            the tokenised conversation (an answer's mask tokens; a second copy that follows a first
            one in the prompt). None: the slot has no position (a candidate answered in text).
        kind: ``'mask'`` (its state becomes a mask), ``'reject'`` (the head's no-target token, e.g.
            GSVA's ``[REJ]``: no mask) or ``'candidate'`` (a member of the candidate pool, index
            :attr:`candidate`, for heads that select from a pool).
        candidate: the pool index of a ``'candidate'`` slot.
    """

    query: int
    instance: int | None = None
    token: str | None = None
    kind: str = "mask"
    candidate: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SLOT_KINDS:
            raise ValueError(f"MaskSlot.kind must be one of {SLOT_KINDS}, got {self.kind!r}")


@dataclass
class Conversation:
    """One LMM sequence built by a head for one sample.

    Attributes:
        prompt: text up to and including the assistant tag, with one ``<image>`` placeholder.
        answer: the answer text (supervised in training, teacher-forced in validation), or None
            to let the model generate.
        query_ids: indices into ``sample.queries`` covered by this conversation, in answer order.
        slots: the mask slots of the sequence (:class:`MaskSlot`), in reading order.
        with_image: False for a text-only conversation (no ``<image>`` placeholder, no image tokens).
    """

    prompt: str
    answer: str | None
    query_ids: list[int]
    slots: list[MaskSlot] = field(default_factory=list)
    with_image: bool = True


@dataclass
class SlotBatch:
    """The slots of a batch, in reading order (conversation by conversation, so grouped by image).

    Attributes:
        slots: ``N`` :class:`MaskSlot` records.
        conv: ``[N]`` long, the conversation (row) of each slot.
        image: ``[N]`` long, the image (sample) of each slot.
        position: ``[N]`` long, the token position of each slot (-1: a slot without a token).
        read: ``[N]`` long, the position whose hidden state was read (-1: none).
        states: ``[N, D]``, the hidden states read (zeros for slots without a position).
        num_images: the batch's number of images.
    """

    slots: list[MaskSlot]
    conv: torch.Tensor
    image: torch.Tensor
    position: torch.Tensor
    read: torch.Tensor
    states: torch.Tensor
    num_images: int

    def __len__(self) -> int:
        return len(self.slots)

    def where(self, kind: str | None = None, token: str | None = None) -> SlotBatch:
        """The slots of one ``kind`` (and ``token``), in the same order."""
        keep = [j for j, s in enumerate(self.slots)
                if (kind is None or s.kind == kind) and (token is None or s.token == token)]
        return self.take(keep)

    def take(self, index: Sequence[int]) -> SlotBatch:
        idx = torch.as_tensor(list(index), dtype=torch.long, device=self.conv.device)
        return SlotBatch([self.slots[j] for j in index], self.conv[idx], self.image[idx], self.position[idx],
                         self.read[idx], self.states[idx.to(self.states.device)], self.num_images)

    def by_image(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(image, indices)`` for every image of the batch (empty indices for an image without slots)."""
        for i in range(self.num_images):
            yield i, (self.image == i).nonzero(as_tuple=True)[0]

    def of_conversation(self, c: int) -> list[int]:
        """Indices of conversation ``c``'s slots."""
        return (self.conv == c).nonzero(as_tuple=True)[0].tolist()


@dataclass
class SlotTargets:
    """Ground truth of a batch's ``'mask'`` slots, per image (slot order of :meth:`SlotBatch.by_image`).

    Attributes:
        masks: per image, ``[n_i, H, W]`` float32 targets at the original size: the slot's instance, or
            the union of its query's targets (all zero for a query without a target).
        ignore: per image, ``[n_i, H, W] bool`` pixels excluded from scoring (ReasonSeg's 255), or None.
        exists: ``[n]`` bool, whether each slot's query has a target (and is not a false premise).
    """

    masks: list[torch.Tensor]
    ignore: list[torch.Tensor | None]
    exists: torch.Tensor


@dataclass
class HeadPredictions:
    """What :meth:`BaseHead.predict_by_feat` returns; the segmentor turns it into ``QueryPrediction``s.

    Mask heads fill the per-slot fields for the batch's ``'mask'`` slots (the masks of a query are its
    slots' masks, its existence the conjunction of theirs, False without a slot). Selection heads fill
    the per-conversation fields: the prediction of each of the conversation's queries is the union of
    the selected candidates of the pool the model used.

    Attributes:
        masks: per image, ``[n_i, H, W]`` logits at the original size (order of :meth:`SlotBatch.by_image`).
        exists: ``[n]`` bool per mask slot (None: every slot exists).
        scores: ``[n]`` per mask slot, or None.
        heatmaps: ``{name: per image [n_i, H, W] in [0, 1]}``: maps to draw (``extras['heatmaps']``).
        selected: per conversation, the selected candidate indices.
        candidate_probs: per conversation, ``[N_c]`` probability of each candidate (None: no scores).
        extras: per conversation, further ``QueryPrediction.extras`` entries.
        texts: per conversation, the answer text (None: the generated text, "" under teacher forcing).
    """

    masks: list[torch.Tensor] | None = None
    exists: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    heatmaps: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    selected: list[list[int]] | None = None
    candidate_probs: list[np.ndarray] | None = None
    extras: list[dict] | None = None
    texts: list[str] | None = None


@dataclass
class HeadBatch:
    """Everything the core computed for a batch, as a head sees it.

    Attributes:
        samples: the batch's samples (``B`` images; a candidate-pool source's copies carry the pool used).
        mode: ``'train'``, ``'val'`` (teacher forcing) or ``'generate'``.
        conversations: ``[C]`` conversations, flattened over samples.
        conv_image: ``[C]`` long, the image of each conversation.
        tokens: ``input_ids`` / ``labels`` / ``attention_mask`` ``[C, L]`` of the LMM pass.
        image_feats: ``[B, Np, D]`` projected visual tokens (once per image).
        frames: per image, the backbone's :class:`~reseg.models.image_tokens.ImageTokenFrame`.
        mask_source: the model's mask source.
        mask_embeddings: ``[B, C', h, w]`` SAM image embeddings (once per image), or None.
        mask_sizes: per image, the resized ``(h', w')`` in the mask source's frame.
        pool: a candidate-pool source's per-batch work (pools, encoder features), or None.
        lmm_out: the LMM pass: ``hidden`` ``[C, L, D]``, ``image_positions`` ``[C, L]``, and ``logits`` /
            ``loss_text`` when the LM head ran.
        slots: the batch's slots with their states (:class:`SlotBatch`).
        texts, generated: per conversation, the generated text and ids (free generation only).
    """

    samples: list[Sample]
    mode: str
    conversations: list[Conversation]
    conv_image: torch.Tensor
    image_feats: torch.Tensor
    frames: list[ImageTokenFrame | None]
    mask_source: nn.Module | None = None
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    mask_embeddings: torch.Tensor | None = None
    mask_sizes: list[tuple[int, int]] = field(default_factory=list)
    pool: Any = None
    lmm_out: dict[str, Any] = field(default_factory=dict)
    slots: SlotBatch | None = None
    texts: list[str] = field(default_factory=list)
    generated: list[list[int]] = field(default_factory=list)

    @property
    def device(self) -> torch.device:
        return self.image_feats.device

    # ------------------------------------------------------------------ reading the LMM
    def hidden_at(self, slots: SlotBatch, offsets: Sequence[int]) -> torch.Tensor:
        """``[n, K, D]`` hidden states at ``read + offset`` of each slot, for each of the ``K`` offsets."""
        off = torch.as_tensor(list(offsets), dtype=torch.long, device=slots.read.device)
        cols = slots.read[:, None] + off[None]
        if bool((cols < 0).any()):
            raise ValueError(f"a slot read at a position < {-min(offsets)} has no state at offsets {list(offsets)}")
        return self.lmm_out["hidden"][slots.conv[:, None], cols]

    def similarity(self, slots: SlotBatch) -> torch.Tensor:
        """``[n, Np]`` raw similarity of each slot's state with its own row's image tokens (:func:`similarity_map`)."""
        if len(slots) == 0:
            return slots.states.new_zeros((0, 0), dtype=torch.float32)
        return similarity_map(self.lmm_out["hidden"], self.lmm_out["image_positions"], slots.conv, slots.states)

    # ------------------------------------------------------------------ the mask decoder
    def decode_image(self, image: int, sparse: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
                     dense: torch.Tensor | None = None, mask_token_offset: torch.Tensor | None = None
                     ) -> torch.Tensor:
        """``[n, H, W]`` logits at the original size of image ``image`` from ``n`` prompts (one decoder call).

        ``sparse`` ``[n, T, C]`` prompt embeddings, ``points`` in the mask source's input frame, ``dense``
        ``[n, 1, 4h, 4w]`` mask prompts: see the mask source's ``decode``.
        """
        ms = self.mask_source
        low, _ = ms.decode(self.mask_embeddings[image: image + 1], sparse, points=points, dense=dense,
                           mask_token_offset=mask_token_offset)
        return ms.postprocess(low, self.mask_sizes[image], self.samples[image].size)

    def decode_masks(self, slots: SlotBatch, graph: torch.Tensor,
                     prompts: Callable[[int, torch.Tensor], dict[str, Any]]) -> list[torch.Tensor]:
        """Per image, ``[n_i, H, W]`` logits of its slots: ``prompts(image, indices)`` gives the keyword
        arguments of :meth:`decode_image` for those slots. An image without slots gets an empty stack
        that stays in the graph of ``graph`` (every trainable parameter then gets a gradient under DDP)."""
        out = []
        for i, sel in slots.by_image():
            if sel.numel() == 0:
                out.append(graph.new_zeros((0, *self.samples[i].size)) + graph.sum() * 0)
            else:
                out.append(self.decode_image(i, **prompts(i, sel)))
        return out


class BaseHead(nn.Module):
    """Base class of head plugins (see the module docstring for the contract).

    Subclasses set :attr:`special_tokens` and :attr:`mask_source_kind`, implement
    :meth:`build_conversations`, :meth:`forward`, :meth:`loss_by_feat` and :meth:`predict_by_feat`,
    and may override :meth:`get_targets` and :meth:`input_embeddings`. :meth:`setup` is called once by the
    segmentor after the LMM and the mask source are built (add tokens, size projections).
    """

    #: tokens the head adds to the tokenizer (e.g. ``("[SEG]",)``).
    special_tokens: tuple[str, ...] = ()
    #: the mask-source kind the head needs (``"sam_decoder"`` or ``"candidate_pool"``), or None.
    mask_source_kind: str | None = "sam_decoder"
    #: which hidden state a slot reads (:data:`READ_RULES`).
    read_rule: str = "previous"
    #: tokens whose *generated* occurrences become ``'mask'`` slots in free generation.
    mask_tokens: tuple[str, ...] = ()
    #: how the head predicts (:data:`PREDICTION_MODES`).
    prediction_mode: str = "auto"
    #: a token whose occurrences in the input the head fills with its own embeddings
    #: (:meth:`input_embeddings`; RAS's mask tokens), or None.
    input_token: str | None = None
    #: whether the LM head must run over the sequence (text loss, or logits the head reads); False lets
    #: the backbone skip the vocabulary projection.
    needs_logits: bool = True

    def setup(self, lmm: nn.Module, mask_source: nn.Module | None) -> None:
        kind = getattr(mask_source, "kind", None)
        if self.mask_source_kind is not None and kind != self.mask_source_kind:
            raise TypeError(
                f"{type(self).__name__} needs a mask source of kind {self.mask_source_kind!r}, but the config "
                f"builds {type(mask_source).__name__} (kind {kind!r}). Set model.mask_source to one of that kind."
            )
        for name, allowed in (("read_rule", READ_RULES), ("prediction_mode", PREDICTION_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{type(self).__name__}.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        self.token_ids = dict(zip(self.special_tokens, lmm.add_tokens(self.special_tokens)))

    @staticmethod
    def sample_rng(sample: Sample) -> Any:
        """The RNG of a sample's training-time choices (templates, answer phrasing).

        ``random.Random(sample.meta['seed'])`` when the dataset gave the sample a seed
        (:class:`~reseg.datasets.mixed.MixedDataset` does, from ``(seed, epoch, index)``): the choices
        then depend on the sample alone, not on which process or worker drew it or on what was drawn
        before, so a run is the same on 1 or N processes and after a resume. Otherwise Python's global
        :mod:`random` (seeded by mmengine's ``randomness.seed``).
        """
        seed = sample.meta.get("seed")
        return random.Random(int(seed)) if seed is not None else random

    # ------------------------------------------------------------------ the method
    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        """Conversations for ``sample``; ``mode`` is ``'train'``, ``'val'`` (teacher-forced) or ``'generate'``."""
        raise NotImplementedError

    def input_embeddings(self, batch: HeadBatch, conv: int) -> torch.Tensor:
        """``[K, D]`` embeddings written at the ``K`` occurrences of :attr:`input_token` in conversation ``conv``."""
        raise NotImplementedError(f"{type(self).__name__} sets input_token but does not implement input_embeddings")

    def forward(self, batch: HeadBatch) -> dict[str, Any]:
        """Slot states -> prompts for the mask source -> masks (or scores): named outputs."""
        raise NotImplementedError

    def get_targets(self, batch: HeadBatch) -> SlotTargets:
        """Targets of the batch's ``'mask'`` slots (:func:`mask_slot_targets`)."""
        return mask_slot_targets(batch)

    def loss_by_feat(self, outputs: dict[str, Any], targets: Any, batch: HeadBatch) -> dict[str, torch.Tensor]:
        """Named losses (every key starting with ``loss`` is summed by the runner)."""
        raise NotImplementedError

    def predict_by_feat(self, outputs: dict[str, Any], batch: HeadBatch) -> HeadPredictions:
        raise NotImplementedError

    def text_loss(self, batch: HeadBatch, weight: float = 1.0) -> torch.Tensor:
        """``weight`` times the LMM's next-token loss, or a zero in the graph when the LM head was skipped."""
        if "loss_text" not in batch.lmm_out:
            return batch.lmm_out["hidden"].new_zeros(())
        return weight * batch.lmm_out["loss_text"]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        import inspect

        def v1_signature(name: str) -> bool:
            fn = cls.__dict__.get(name)
            if not callable(fn):
                return False
            params = list(inspect.signature(fn).parameters)
            return name == "extra_embeddings" or ("lmm" in params and "mask_source" in params)

        v1 = [m for m in ("loss", "predict", "extra_embeddings") if v1_signature(m)]
        if v1:
            raise TypeError(
                f"{cls.__module__}.{cls.__name__} implements {', '.join(v1)}: the head contract v1 "
                "(loss(ctx, lmm, mask_source) / predict(...) / extra_embeddings on a BatchContext). Heads now "
                "implement forward(batch), loss_by_feat(outputs, targets, batch) and predict_by_feat(outputs, batch), "
                "and input_embeddings(batch, conv) with input_token; see docs/write_a_head_plugin.md")


def mask_slot_targets(batch: HeadBatch) -> SlotTargets:
    """Per image, the target (and ignore) masks of its ``'mask'`` slots at the original size.

    A slot's target is its query's instance ``slot.instance``, or the union of the query's targets when
    the slot answers the whole query; a query without a target (or a false premise) gives an all-zero
    mask and ``exists=False``.
    """
    slots = batch.slots.where(kind="mask")
    masks, ignore, exists = [], [], []
    for i, sel in slots.by_image():
        s = batch.samples[i]
        ts, ig = [], []
        for j in sel.tolist():
            slot = slots.slots[j]
            q = s.queries[slot.query]
            ts.append(torch.from_numpy(q.target if slot.instance is None else q.masks[slot.instance]))
            ig.append(None if q.ignore is None else torch.from_numpy(np.asarray(q.ignore, dtype=bool)))
            exists.append(bool(q.exists and q.num_targets > 0))
        masks.append(torch.stack(ts).to(batch.device, torch.float32) if ts
                     else torch.zeros((0, *s.size), device=batch.device))
        ignore.append(None if not ig or any(g is None for g in ig) else torch.stack(ig).to(batch.device))
    return SlotTargets(masks=masks, ignore=ignore, exists=torch.tensor(exists, dtype=torch.bool))
