"""The head contract (DESIGN.md, "Head") and the batch context the segmentor hands to heads.

A head owns what makes a method a method: its special tokens, its prompt/answer templates, how hidden
states become queries for the mask source, its losses and its prediction rule. The segmentor owns
batching, devices and running the shared parts once (vision tower and SAM encoder once per image).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn as nn

from reseg.structures import QueryPrediction, Sample


@dataclass
class Conversation:
    """One LMM sequence built by a head for one sample.

    Attributes:
        prompt: text up to and including the assistant tag, with one ``<image>`` placeholder.
        answer: the answer text (supervised in training, teacher-forced in validation), or None
            to let the model generate.
        query_ids: indices into ``sample.queries`` covered by this conversation, in answer order.
        slots: head-specific bookkeeping, e.g. which query (and instance) each mask token answers.
        with_image: False for a text-only conversation (no ``<image>`` placeholder, no image tokens).
    """

    prompt: str
    answer: Optional[str]
    query_ids: list[int]
    slots: list[Any] = field(default_factory=list)
    with_image: bool = True


@dataclass
class BatchContext:
    """Everything the shared parts computed for a batch, for the head to use.

    Attributes:
        samples: the batch's samples (``B`` images).
        conversations: ``[C]`` conversations, flattened over samples.
        conv_sample: ``[C]`` long tensor, the sample (image) index of each conversation.
        tokens: ``input_ids``/``labels``/``attention_mask`` ``[C, L]``.
        image_feats: ``[B, Np, D]`` projected visual tokens.
        mask_embeddings: ``[B, C', h, w]`` mask-source image embeddings (SAM), or None.
        mask_sizes: per image, the resized ``(h', w')`` in the mask source's frame.
        lmm_out: the LMM forward's outputs (``hidden``, ``logits``, ``image_positions``, ``loss_text``).
        max_new_tokens: the generation budget of free generation (``model.max_new_tokens``).
        pool: what a candidate-pool mask source prepared for the batch (per-image pools and encoder
            features, :class:`reseg.models.mask_sources.pool.PoolBatch`), or None.
    """

    samples: list[Sample]
    conversations: list[Conversation]
    conv_sample: torch.Tensor
    tokens: dict[str, torch.Tensor]
    image_feats: torch.Tensor
    mask_embeddings: Optional[torch.Tensor] = None
    mask_sizes: list[tuple[int, int]] = field(default_factory=list)
    lmm_out: dict[str, Any] = field(default_factory=dict)
    max_new_tokens: int = 32
    pool: Any = None


class BaseHead(nn.Module):
    """Base class of head plugins.

    Subclasses set :attr:`special_tokens` and :attr:`mask_source_kind` and implement
    :meth:`build_conversations`, :meth:`loss` and :meth:`predict`. :meth:`setup` is called once by the
    segmentor after the LMM and the mask source are built (add tokens, size projections).
    """

    #: tokens the head adds to the tokenizer (e.g. ``("[SEG]",)``).
    special_tokens: tuple[str, ...] = ()
    #: the mask-source kind the head needs (``"sam_decoder"`` or ``"candidate_pool"``), or None.
    mask_source_kind: Optional[str] = "sam_decoder"
    #: whether the head reads the LM head's logits (``lmm_out['logits']``) or supervises text; False
    #: lets the backbone skip the LM head over the whole sequence.
    needs_logits: bool = True

    def setup(self, lmm: nn.Module, mask_source: Optional[nn.Module]) -> None:
        kind = getattr(mask_source, "kind", None)
        if self.mask_source_kind is not None and kind != self.mask_source_kind:
            raise TypeError(
                f"{type(self).__name__} needs a mask source of kind {self.mask_source_kind!r}, but the config "
                f"builds {type(mask_source).__name__} (kind {kind!r}). Set model.mask_source to one of that kind."
            )
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

    def build_conversations(self, sample: Sample, mode: str) -> list[Conversation]:
        """Conversations for ``sample``; ``mode`` is ``'train'``, ``'val'`` (teacher-forced) or ``'generate'``."""
        raise NotImplementedError

    def extra_embeddings(self, ctx: BatchContext, lmm: nn.Module,
                         mask_source: Optional[nn.Module]) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
        """Embeddings the head writes into the LMM input: ``(positions [C, L] bool, values [K, D])``.

        None (the default) for heads that only read hidden states; RAS writes one projected mask
        embedding per mask token (anchorseg_ras.md §2.4 E).
        """
        return None

    def loss(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict(self, ctx: BatchContext, lmm: nn.Module, mask_source: Optional[nn.Module],
                generate: bool) -> list[list[QueryPrediction]]:
        """Per sample, one :class:`QueryPrediction` per query (in ``sample.queries`` order)."""
        raise NotImplementedError
