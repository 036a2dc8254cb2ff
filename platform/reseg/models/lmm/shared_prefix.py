"""The LLM's image prefix run once per image while training under gradient checkpointing.

Without checkpointing, :class:`~reseg.models.lmm.llava.LlavaLMM` shares the prefix through transformers'
key/value cache: one pass over the prefix with ``use_cache``, the cache indexed out to every
conversation, one pass over the rest. transformers' checkpointed decoder layers drop the cache
(``GradientCheckpointingLayer``), so under checkpointing the model-level loop runs here instead.
Each decoder layer is one checkpointed function of two tensors: the prefix states of one
conversation per image (``[G, P, D]``) and the states of the rest of every conversation
(``[C, L - P, D]``). Inside it the layer runs on the prefix, its prefix keys and values are indexed
out to the ``C`` conversations, and the layer runs on the rest, which attends to prefix and rest.
The backward pass keeps only those two inputs of each layer (``G * P + C * (L - P)`` token states,
against ``C * L`` for the plain checkpointed forward) and recomputes the layer, prefix keys and
values included.

The model-level pieces (rotary embeddings at positions ``0 .. L - 1``, the causal and padding mask,
the decoder layers in order, the final norm) are those of transformers' ``LlamaModel`` (LLaVA-1.5's
LLM), with ``sdpa`` or ``eager`` attention. :func:`unsupported` says why another LLM is not covered;
the caller then runs the plain forward.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

#: attention implementations whose 4D masks :func:`_masks` builds
ATTENTION = ("sdpa", "eager")


def unsupported(lm: nn.Module) -> str | None:
    """Why :func:`forward_checkpointed` cannot stand in for ``lm``'s own forward, or ``None`` if it can."""
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel

    if type(lm) is not LlamaModel:
        return (f"the LLM is a {type(lm).__name__}; the checkpointed shared prefix re-implements the forward "
                "of transformers' LlamaModel only")
    impl = getattr(lm.config, "_attn_implementation", None)
    if impl not in ATTENTION:
        return (f"the LLM's attention implementation is {impl!r}; the checkpointed shared prefix builds masks "
                f"for {ATTENTION}")
    if any(type(layer) is not LlamaDecoderLayer for layer in lm.layers):
        return "the LLM has decoder layers other than LlamaDecoderLayer"
    return None


class _PrefixKeyValues:
    """The cache one decoder layer's attention ``update``s within one :func:`_layer_over_shared_prefix` call.

    The first update (the prefix pass, ``[G, H, P, hd]``) is kept and returned as it is; the second
    (the rest of every conversation, ``[C, H, S, hd]``) returns each conversation's image prefix
    (``group`` ``[C]`` indexes the ``G`` prefixes) followed by its own keys and values.
    """

    def __init__(self, group: torch.Tensor) -> None:
        self.group = group
        self.prefix: tuple[torch.Tensor, torch.Tensor] | None = None
        self.updates = 0

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.updates += 1
        if self.updates == 1:
            self.prefix = (keys, values)
            return keys, values
        if self.updates > 2:
            raise RuntimeError(f"layer {layer_idx} updated the shared-prefix cache {self.updates} times; "
                               "expected once for the prefix and once for the rest")
        pk, pv = self.prefix
        return torch.cat([pk[self.group], keys], dim=-2), torch.cat([pv[self.group], values], dim=-2)


@contextmanager
def _own_checkpointing_off(layer: nn.Module) -> Iterator[None]:
    """Call ``layer`` without the checkpoint transformers wraps around it (that one drops the cache):
    :func:`forward_checkpointed` checkpoints the two passes over the layer as one function instead.
    Entered in the forward and again in the backward's recomputation."""
    was = layer.gradient_checkpointing
    layer.gradient_checkpointing = False
    try:
        yield
    finally:
        layer.gradient_checkpointing = was


def _layer_over_shared_prefix(layer: nn.Module, head: torch.Tensor, tail: torch.Tensor, group: torch.Tensor,
                              rope_head: tuple[torch.Tensor, torch.Tensor],
                              rope_tail: tuple[torch.Tensor, torch.Tensor],
                              mask_head: torch.Tensor, mask_tail: torch.Tensor, pos_head: torch.Tensor,
                              pos_tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder layer over the prefixes ``head`` ``[G, P, D]`` and the rests ``tail`` ``[C, S, D]``."""
    kv = _PrefixKeyValues(group)
    with _own_checkpointing_off(layer):
        head = layer(head, attention_mask=mask_head, position_ids=pos_head, past_key_values=kv,
                     position_embeddings=rope_head)
        tail = layer(tail, attention_mask=mask_tail, position_ids=pos_tail, past_key_values=kv,
                     position_embeddings=rope_tail)
    return head, tail


def _masks(attention_mask: torch.Tensor, P: int, impl: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The prefix pass's causal mask ``[1, 1, P, P]`` and the rest's ``[C, 1, L - P, L]`` over prefix and rest.

    A query at position ``q`` sees the keys at positions ``k <= q`` that are not padding, as in
    transformers' causal mask (padded queries included, so their states match the plain forward's
    too). Boolean (True = attend) for ``sdpa``, additive (0 or the dtype's minimum) for ``eager``.
    """
    L = attention_mask.shape[1]
    idx = torch.arange(L, device=attention_mask.device)
    causal = idx[:, None] >= idx[None, :]
    head = causal[:P, :P][None, None]
    tail = causal[P:][None, None] & attention_mask.bool()[:, None, None, :]
    if impl == "eager":
        low = torch.finfo(dtype).min
        head = torch.zeros(head.shape, dtype=dtype, device=head.device).masked_fill(~head, low)
        tail = torch.zeros(tail.shape, dtype=dtype, device=tail.device).masked_fill(~tail, low)
    return head, tail


def forward_checkpointed(lm: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor, P: int,
                         reps: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """The LLM's last hidden states ``[C, L, D]`` (after the final norm), each decoder layer checkpointed.

    Args:
        lm: a LlamaModel (:func:`unsupported` returns ``None`` for it).
        embeds: ``[C, L, D]`` input embeddings; attention_mask: ``[C, L]`` (1 = token, 0 = right padding),
            all ones over the first ``P`` positions.
        P: the shared prefix length; reps: ``[G]`` one conversation row per image; group: ``[C]`` the
            index into ``reps`` of each row. Every row's first ``P`` embeddings equal its representative's.
    """
    why = unsupported(lm)
    if why is not None:
        raise ValueError(f"forward_checkpointed: {why}")
    _, L, _ = embeds.shape
    positions = torch.arange(L, device=embeds.device).unsqueeze(0)
    cos, sin = lm.rotary_emb(embeds, positions)
    rope_head, rope_tail = (cos[:, :P], sin[:, :P]), (cos[:, P:], sin[:, P:])
    mask_head, mask_tail = _masks(attention_mask, P, lm.config._attn_implementation, embeds.dtype)
    head, tail = embeds[reps, :P], embeds[:, P:]
    for layer in lm.layers[: lm.config.num_hidden_layers]:
        head, tail = checkpoint(_layer_over_shared_prefix, layer, head, tail, group, rope_head, rope_tail,
                                mask_head, mask_tail, positions[:, :P], positions[:, P:], use_reentrant=False)
    return lm.norm(torch.cat([head[group], tail], dim=1))
