"""LLaVA-family LMM backbone (Hugging Face ``LlavaForConditionalGeneration``).

Two scales, one class (docs/architecture.md, "Two scales"):

* ``pretrained='/path/to/llava-1.5-7b-hf'``: a local Hugging Face LLaVA directory (config, weights,
  tokenizer, image processor). Nothing is fetched from a hub.
* ``tiny=dict(vision=..., text=..., tokenizer_dir=...)``: the same classes at toy sizes with random
  weights and the offline tokenizer of :mod:`reseg.models.lmm.tiny_tokenizer`.

The backbone owns tokenisation of a conversation (the ``<image>`` placeholder is expanded to one
image token per visual feature, so positions in ``input_ids`` *are* positions in the multimodal
sequence), image preprocessing for the vision tower, LoRA and which of its modules train, and a
forward that returns the last-layer (post-norm) hidden states, the logits, the text loss and where
the image tokens are.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reseg.models.image_tokens import ImageTokenFrame
from reseg.registry import LMMS

from . import shared_prefix

IGNORE_INDEX = -100


def _require_dir(path: str, key: str, what: str) -> Path:
    from reseg.paths import resolve_path

    p = resolve_path(path)  # a relative path is under the reseg root
    if not p.is_dir():
        raise FileNotFoundError(
            f"{what} not found: {str(p)!r} (config key {key}). Expected a local directory; "
            "reseg never downloads weights. Point the config at your copy, e.g. "
            f"--cfg-options {key}=/data/checkpoints/..."
        )
    return p


class ContextLengthError(ValueError):
    """A conversation longer than ``model.lmm.max_length`` (a query too long): the message names both."""


@LMMS.register_module()
class LlavaLMM(nn.Module):
    """A LLaVA backbone with the interface every reseg head relies on.

    Args:
        pretrained: local Hugging Face LLaVA directory (real scale).
        tiny: dict with ``vision`` (``CLIPVisionConfig`` kwargs), ``text`` (``LlamaConfig`` kwargs),
            ``tokenizer_dir``, an optional ``vision_checkpoint`` (tower weights), an optional
            ``checkpoint`` (a whole tiny LLaVA state dict: tower, projector and LLM, written by
            ``tools/research/pretrain_tiny.py --parts llava``; loaded after ``vision_checkpoint``) and any
            other ``LlavaConfig`` kwargs such as ``vision_feature_layer`` (tiny scale).
        lora: ``None`` (no LoRA) or ``dict(r=8, lora_alpha=16, lora_dropout=0.05,
            target_modules=r'.*language_model.*\\.(q_proj|v_proj)')``; spec seg_token_family.md §1.4.
        trainable_modules: substrings of parameter names trained fully (LISA: ``lm_head``,
            ``embed_tokens``; spec §1.4), or ``"all"`` to train the whole LLM (the tiny scale, whose
            random LLM has nothing to preserve). Everything else in the LMM is frozen unless LoRA.
        train_vision_tower / train_projector: train the CLIP tower / projector (frozen at real scale).
        image_aspect: ``'crop'`` (CLIP resize-shortest + centre crop, LISA §1.5) or ``'pad'``
            (LLaVA-1.5 pad-to-square with the image mean).
        gradient_checkpointing: enable HF gradient checkpointing in the LLM.
        max_length: sequences longer than this raise a clear error.
        text_grad: where the text (next-token) loss sends its gradient. ``'full'`` (default, LISA):
            the LM head and the whole LLM. ``'lm_head'``: the LM head only (the last hidden states are
            detached for the logits), so the text loss cannot shape the states a head reads. An option for
            experiments at the tiny scale, not LISA's recipe (docs/benchmarks.md has what it was measured to do).
        share_image_prefix: run the tokens up to the last image token once per *image* rather than once
            per conversation, when several conversations of a batch share an image (LISA asks up to
            three questions per image, each its own conversation, spec seg_token_family.md §1.3). With
            causal attention those tokens' states cannot depend on what follows, so the prefix is
            computed once, its key/value cache is indexed out to every conversation of the image, and
            the rest of each conversation runs on top of it. Hidden states, logits, losses and
            gradients equal the plain forward's up to float rounding (tests/test_lmm_prefix.py); only
            the cost changes. While training under gradient checkpointing (transformers' checkpointed
            layers drop the cache), each decoder layer runs as one checkpointed function of the prefix
            states and the rest's (:mod:`reseg.models.lmm.shared_prefix`), which keeps fewer states
            for the backward pass than checkpointing the plain forward; that path covers a LLaMA LLM
            with ``sdpa`` or ``eager`` attention, and another LLM runs the plain forward there (with a
            warning). Used when every conversation of the batch has its image tokens at the same
            positions, behind the same token ids, with no head embedding (``extra_embeds``) among them;
            otherwise the plain forward runs. :attr:`last_shared_prefix` tells which path the last call
            took.
    """

    def __init__(
        self,
        pretrained: str | None = None,
        tiny: dict | None = None,
        lora: dict | None = None,
        trainable_modules: Sequence[str] = ("lm_head", "embed_tokens"),
        train_vision_tower: bool = False,
        train_projector: bool = False,
        image_aspect: str = "crop",
        gradient_checkpointing: bool = False,
        max_length: int = 2048,
        text_grad: str = "full",
        share_image_prefix: bool = True,
    ) -> None:
        super().__init__()
        from transformers import CLIPImageProcessor, LlavaForConditionalGeneration

        if text_grad not in ("full", "lm_head"):
            raise ValueError(f"model.lmm.text_grad must be 'full' or 'lm_head', got {text_grad!r}")
        self.text_grad = text_grad
        self.share_image_prefix = bool(share_image_prefix)
        #: prefix length and number of distinct images of the last shared forward, or ``None`` if the
        #: last forward ran every conversation in full
        self.last_shared_prefix: tuple[int, int] | None = None

        if (pretrained is None) == (tiny is None):
            raise ValueError("LlavaLMM needs exactly one of `pretrained` (a local path) or `tiny` (a dict).")
        if image_aspect not in ("crop", "pad"):
            raise ValueError(f"LlavaLMM: image_aspect must be 'crop' or 'pad', got {image_aspect!r}")
        self.image_aspect = image_aspect
        self.max_length = max_length
        if pretrained is not None:
            from transformers import AutoTokenizer

            path = _require_dir(pretrained, "model.lmm.pretrained", "LLaVA checkpoint directory")
            self.model = LlavaForConditionalGeneration.from_pretrained(str(path), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.image_processor = CLIPImageProcessor.from_pretrained(str(path), local_files_only=True)
        else:
            self.model, self.tokenizer, self.image_processor = self._build_tiny(**tiny)
        if self.tokenizer.pad_token_id is None:  # LLaMA tokenizers: pad = unk (LISA §1.1)
            self.tokenizer.pad_token = self.tokenizer.unk_token
        self.model.config.use_cache = False
        self.image_token_id = int(self.model.config.image_token_id)

        if lora:
            from peft import LoraConfig, inject_adapter_in_model

            lcfg = dict(r=8, lora_alpha=16, lora_dropout=0.05, bias="none",
                        target_modules=r".*language_model.*\.(q_proj|v_proj)")
            lcfg.update(lora)
            inject_adapter_in_model(LoraConfig(**lcfg), self.model)
        self.trainable_modules = ("",) if trainable_modules == "all" else tuple(trainable_modules)
        self.train_vision_tower = train_vision_tower
        self.train_projector = train_projector
        self._set_trainable()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            # transformers also hooks every input embedding (the LLM's and the CLIP tower's patch embedding)
            # to output a tensor that requires grad, which reentrant checkpointing needs and this
            # non-reentrant one does not; kept, it would run the backward through a frozen vision tower.
            self.model.disable_input_require_grads()

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _build_tiny(vision: dict, text: dict, tokenizer_dir: str, vision_checkpoint: str | None = None,
                    checkpoint: str | None = None, **llava_kwargs: Any):
        from transformers import (
            CLIPImageProcessor,
            CLIPVisionConfig,
            LlamaConfig,
            LlavaConfig,
            LlavaForConditionalGeneration,
        )

        from reseg.paths import require_weights_file

        from .tiny_tokenizer import IMAGE_TOKEN, build_tiny_tokenizer

        # missing weights fail before the tokenizer cache is written; relative paths are under the reseg root
        for path, key in ((vision_checkpoint, "model.lmm.tiny.vision_checkpoint"),
                          (checkpoint, "model.lmm.tiny.checkpoint")):
            if path is not None:
                require_weights_file(path, key)
        tokenizer = build_tiny_tokenizer(tokenizer_dir)
        vcfg = CLIPVisionConfig(**vision)
        tcfg = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           **text)
        n_tokens = (vcfg.image_size // vcfg.patch_size) ** 2
        cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg,
                          image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                          image_seq_length=n_tokens, **llava_kwargs)
        model = LlavaForConditionalGeneration(cfg)
        if vision_checkpoint is not None:  # a tower pre-trained by tools/research/pretrain_tiny.py
            from reseg.models.mask_sources.sam import load_state_dict_file

            sd = load_state_dict_file(vision_checkpoint, "model.lmm.tiny.vision_checkpoint")
            model.model.vision_tower.load_state_dict(sd, strict=True)
        if checkpoint is not None:  # the whole tiny LLaVA, "instruction-tuned" by tools/research/pretrain_tiny.py
            from reseg.models.mask_sources.sam import load_state_dict_file

            sd = load_state_dict_file(checkpoint, "model.lmm.tiny.checkpoint")
            own = model.state_dict()
            missing = [k for k in own if k not in sd]
            unexpected = [k for k in sd if k not in own]
            resized = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
            if missing or unexpected or resized:
                raise ValueError(
                    f"model.lmm.tiny.checkpoint={checkpoint!r} does not match the tiny config: "
                    f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, "
                    f"{len(resized)} of another shape {resized[:3]}; re-run tools/research/pretrain_tiny.py "
                    "--parts llava --force with this config")
            model.load_state_dict(sd, strict=True)
        size = vcfg.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return model, tokenizer, processor

    def _set_trainable(self) -> None:
        for name, p in self.model.named_parameters():
            train = "lora_" in name or any(k in name for k in self.trainable_modules)
            if ".vision_tower." in f".{name}" and not self.train_vision_tower:
                train = train and "lora_" in name
            if "multi_modal_projector" in name:
                train = self.train_projector
            if ".vision_tower." in f".{name}" and self.train_vision_tower:
                train = True
            p.requires_grad_(train)

    # ------------------------------------------------------------------ properties
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        """Visual tokens per image, from the vision config (never hard-coded)."""
        v = self.model.config.vision_config
        n = (v.image_size // v.patch_size) ** 2
        return n if self.model.config.vision_feature_select_strategy == "default" else n + 1

    @property
    def image_grid(self) -> tuple[int, int]:
        v = self.model.config.vision_config
        return v.image_size // v.patch_size, v.image_size // v.patch_size

    @property
    def image_token_frame(self) -> ImageTokenFrame:
        """The frame of every image's tokens: LLaVA's fixed square grid over its vision input.

        Raises when the image tokens are not one per grid cell (a CLS token kept by
        ``vision_feature_select_strategy='full'``): per-token maps cannot be placed on the image then.
        """
        v = self.model.config.vision_config
        grid = self.image_grid
        if grid[0] * grid[1] != self.num_image_tokens:
            raise ValueError(f"the backbone gives {self.num_image_tokens} image tokens, not one per cell of its "
                             f"{grid[0]}x{grid[1]} patch grid (a CLS token? use vision_feature_select_strategy="
                             "'default')")
        return ImageTokenFrame(grid=grid, input_size=int(v.image_size), aspect=self.image_aspect)

    def image_token_frames(self, sizes: Sequence[tuple[int, int]]) -> list[ImageTokenFrame | None]:
        """Per image (original ``(H, W)``), its :class:`ImageTokenFrame`; None where there is no per-token grid."""
        try:
            frame = self.image_token_frame
        except ValueError:
            frame = None
        return [frame] * len(sizes)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ tokens and text
    def add_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Add a head's tokens (as LISA does: ``add_tokens``, not special) and resize embeddings.

        Returns the id of each token; raises if a token does not encode to exactly one id (LISA
        issue #55: a ``[SEG]`` that splits into two ids silently breaks the mask count).
        """
        new = [t for t in tokens if t not in self.tokenizer.get_vocab()]
        if new:
            self.tokenizer.add_tokens(list(new))
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            self._set_trainable()
        ids = []
        for t in tokens:
            enc = self.tokenizer(t, add_special_tokens=False).input_ids
            enc = [i for i in enc if self.tokenizer.convert_ids_to_tokens(i) not in ("\u2581", "▁")]
            if len(enc) != 1:
                raise ValueError(f"token {t!r} encodes to {enc}, expected exactly one id")
            ids.append(enc[0])
        return ids

    def encode(self, prompt: str, answer: str | None = None, with_image: bool = True) -> tuple[list[int], list[int]]:
        """Token ids and labels of one conversation.

        ``prompt`` is the full text up to and including the assistant tag, with one ``<image>``
        placeholder; it is expanded to :attr:`num_image_tokens` image-token ids. The labels are
        ``-100`` for BOS, the prompt and the image tokens; the answer and EOS are supervised
        (spec seg_token_family.md §1.3). ``with_image=False``: a text-only prompt (no placeholder and
        no image tokens; RAS's stage-1 captioning from mask tokens alone, anchorseg_ras.md §2.2).
        """
        tok = self.tokenizer
        image_str = tok.convert_ids_to_tokens(self.image_token_id)
        parts = prompt.split(image_str)
        if with_image and len(parts) != 2:
            raise ValueError(f"prompt must contain exactly one {image_str!r} placeholder: {prompt!r}")
        if not with_image and len(parts) != 1:
            raise ValueError(f"a text-only prompt (with_image=False) must not contain {image_str!r}: {prompt!r}")
        ids: list[int] = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids += tok(parts[0], add_special_tokens=False).input_ids if parts[0] else []
        if with_image:
            ids += [self.image_token_id] * self.num_image_tokens
            ids += tok(parts[1], add_special_tokens=False).input_ids
        labels = [IGNORE_INDEX] * len(ids)
        if answer is not None:
            ans = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
            ids += ans
            labels += ans
        if len(ids) > self.max_length:
            raise ContextLengthError(
                f"conversation is {len(ids)} tokens, longer than max_length={self.max_length} "
                f"(model.lmm.max_length); shorten the query: {prompt[-200:]!r}"
            )
        return ids, labels

    def collate(self, encoded: Sequence[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        """Right-pad a list of ``(ids, labels)`` into ``input_ids``, ``labels``, ``attention_mask``."""
        L = max(len(i) for i, _ in encoded)
        n = len(encoded)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((n, L), pad, dtype=torch.long)
        labels = torch.full((n, L), IGNORE_INDEX, dtype=torch.long)
        attn = torch.zeros((n, L), dtype=torch.long)
        for k, (i, lab) in enumerate(encoded):
            input_ids[k, : len(i)] = torch.tensor(i)
            labels[k, : len(lab)] = torch.tensor(lab)
            attn[k, : len(i)] = 1
        dev = self.device
        return dict(input_ids=input_ids.to(dev), labels=labels.to(dev), attention_mask=attn.to(dev))

    # ------------------------------------------------------------------ images
    def preprocess_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``[B, 3, S, S]`` vision-tower input from RGB uint8 images of any size (spec §1.5)."""
        if self.image_aspect == "pad":
            images = [self._pad_to_square(im) for im in images]
        out = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return out.to(self.device)

    def _pad_to_square(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = max(h, w)
        mean = np.array(self.image_processor.image_mean) * 255
        canvas = np.empty((s, s, 3), dtype=np.uint8)
        canvas[:] = mean.round().astype(np.uint8)
        top, left = (s - h) // 2, (s - w) // 2
        canvas[top: top + h, left: left + w] = image
        return canvas

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[B, Np, D]`` projected visual tokens, computed once per image."""
        out = self.model.model.get_image_features(pixel_values=pixel_values, return_dict=True)
        return torch.stack(list(out.pooler_output), 0)

    # ------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, image_feats: torch.Tensor, image_index: torch.Tensor,
              extra_embeds: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings with each conversation's image tokens replaced by its image's features.

        Args:
            input_ids: ``[C, L]``; image_feats: ``[B, Np, D]``; image_index: ``[C]`` image of each row.
                A row holds either ``Np`` image tokens or none (a text-only conversation).
            extra_embeds: ``(positions [C, L] bool, values [K, D])``: embeddings a head writes into the
                sequence, in row-major order of ``positions`` (RAS's mask tokens, as LLaVA writes
                ``<image>``; anchorseg_ras.md §2.4 E). Gradients flow into ``values``.
        """
        emb = self.model.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        counts = mask.sum(1)
        if bool(((counts != image_feats.shape[1]) & (counts != 0)).any()):
            raise ValueError(
                f"each conversation needs {image_feats.shape[1]} image tokens (or none), got {counts.tolist()}"
            )
        rows = counts > 0
        if bool(rows.any()):
            feats = image_feats[image_index[rows]].to(emb.dtype).reshape(-1, emb.shape[-1])
            emb = emb.masked_scatter(mask.unsqueeze(-1), feats)
        if extra_embeds is not None:
            pos, vals = extra_embeds
            if tuple(pos.shape) != tuple(input_ids.shape) or int(pos.sum()) != vals.shape[0]:
                raise ValueError(
                    f"extra_embeds: positions must be {tuple(input_ids.shape)} with one True per value row; got "
                    f"{tuple(pos.shape)} with {int(pos.sum())} True and {vals.shape[0]} values")
            emb = emb.masked_scatter(pos.unsqueeze(-1), vals.to(emb.dtype))
        return emb

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_feats: torch.Tensor,
        image_index: torch.Tensor,
        labels: torch.Tensor | None = None,
        extra_embeds: tuple[torch.Tensor, torch.Tensor] | None = None,
        with_logits: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Run the LLM on a batch of conversations.

        ``with_logits=False`` skips the LM head (a head that reads hidden states only and has no text
        to supervise, e.g. RAS's selection stage): no ``logits``, and ``loss_text`` is a zero with a graph.

        Returns a dict with ``hidden`` ``[C, L, D]`` (last layer after the final norm: the tensor the
        LM head reads, spec §1.2 step 4), ``logits`` ``[C, L, V]``, ``image_positions`` ``[C, L] bool``
        and, with ``labels``, ``loss_text`` (shifted next-token CE averaged over supervised tokens).
        """
        embeds = self.embed(input_ids, image_feats, image_index, extra_embeds)
        prefix = self._shared_prefix(input_ids, attention_mask, image_index, extra_embeds)
        self.last_shared_prefix = None if prefix is None else (prefix[0], int(prefix[1].numel()))
        if prefix is None:
            out = self.model.model.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                                  use_cache=False)
            hidden = out.last_hidden_state
        elif self._training_checkpointed():
            hidden = shared_prefix.forward_checkpointed(self.model.model.language_model, embeds, attention_mask,
                                                        *prefix)
        else:
            hidden = self._forward_shared(embeds, attention_mask, *prefix)
        res = dict(hidden=hidden, image_positions=input_ids == self.image_token_id)
        if not with_logits:
            if labels is not None:
                if bool((labels != IGNORE_INDEX).any()):
                    raise ValueError("with_logits=False but the labels supervise text; the text loss needs logits")
                res["loss_text"] = hidden.sum() * 0.0
            return res
        logits = self.model.lm_head(hidden.detach() if self.text_grad == "lm_head" else hidden)
        res["logits"] = logits
        if labels is not None:
            shift_logits = logits[:, :-1].float()
            shift_labels = labels[:, 1:]
            if bool((shift_labels != IGNORE_INDEX).any()):
                res["loss_text"] = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                   shift_labels.reshape(-1), ignore_index=IGNORE_INDEX)
            else:
                res["loss_text"] = logits.sum() * 0.0
        return res

    def _shared_prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_index: torch.Tensor,
                       extra_embeds: tuple[torch.Tensor, torch.Tensor] | None):
        """``(P, representatives, group)`` when the first ``P`` tokens (through the last image token) can
        run once per image, else ``None`` (see ``share_image_prefix`` in the class docstring).

        ``representatives`` ``[G]``: one conversation row per distinct image; ``group`` ``[C]``: the
        index into ``representatives`` of each row.
        """
        if not self.share_image_prefix or input_ids.shape[0] < 2:
            return None
        if self._training_checkpointed():
            why = shared_prefix.unsupported(self.model.model.language_model)
            if why is not None:
                warnings.warn(f"model.lmm.share_image_prefix: {why}, so under gradient checkpointing every "
                              "conversation runs in full", stacklevel=3)
                return None
        is_img = input_ids == self.image_token_id
        if not bool(is_img.any(1).all()):
            return None  # a text-only conversation: nothing to share
        L = input_ids.shape[1]
        last = L - 1 - torch.flip(is_img, dims=[1]).to(torch.int8).argmax(1)  # last image token per row
        if bool((last != last[0]).any()):
            return None
        P = int(last[0]) + 1
        if P >= L or not bool(attention_mask[:, :P].bool().all()):
            return None
        if extra_embeds is not None and bool(extra_embeds[0][:, :P].any()):
            return None
        uniq, group = torch.unique(image_index, return_inverse=True)
        if uniq.numel() == input_ids.shape[0]:
            return None  # one conversation per image: nothing to gain
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        reps = torch.full((uniq.numel(),), input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        reps = reps.scatter_reduce(0, group, rows, reduce="amin")
        if not bool((input_ids[:, :P] == input_ids[reps[group], :P]).all()):
            return None  # same image, different text before it
        return P, reps, group

    def _training_checkpointed(self) -> bool:
        """Training with the LLM's decoder layers checkpointed (their forward then drops the cache)."""
        on = getattr(self.model, "is_activation_checkpointing", None)  # transformers >= 5.2x
        if on is None:
            on = getattr(self.model, "is_gradient_checkpointing", False)
        return bool(self.training and on)

    def _forward_shared(self, embeds: torch.Tensor, attention_mask: torch.Tensor, P: int,
                        reps: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The LLM's last hidden states ``[C, L, D]``: the prefix once per image, the rest per row."""
        lm = self.model.model.language_model
        head = lm(inputs_embeds=embeds[reps, :P], attention_mask=attention_mask[reps, :P], use_cache=True)
        cache = head.past_key_values
        if cache is None or not hasattr(cache, "batch_select_indices"):
            raise RuntimeError(f"share_image_prefix: {type(lm).__name__} returned no indexable key/value cache; "
                               "set model.lmm.share_image_prefix=False for this LLM")
        cache.batch_select_indices(group)  # every conversation gets its image's prefix keys and values
        tail = lm(inputs_embeds=embeds[:, P:], attention_mask=attention_mask, past_key_values=cache,
                  use_cache=True)
        return torch.cat([head.last_hidden_state[group], tail.last_hidden_state], dim=1)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        image_feats: torch.Tensor,
        image_index: torch.Tensor,
        max_new_tokens: int = 32,
        extra_embeds: Sequence[tuple[torch.Tensor, torch.Tensor] | None] | None = None,
    ) -> list[list[int]]:
        """Greedy decoding of a batch of conversations at once.

        The prompts are left-padded to a common length, with position ids counted from each prompt's
        first token, so every conversation is decoded as it would be alone (up to float rounding); a
        conversation stops at EOS (kept in its output) or at ``max_length`` tokens, the batch when all
        have stopped or after ``max_new_tokens`` steps.

        Args:
            prompts: ``C`` token-id lists with the image placeholder expanded (:meth:`encode`, no answer).
            image_feats: ``[B, Np, D]``; image_index: ``[C]`` image of each conversation.
            extra_embeds: per conversation ``(positions [L_c] bool, values [K_c, D])`` written into its
                prompt (see :meth:`embed`), or None.
        Returns:
            Per conversation, the generated ids.
        """
        n = len(prompts)
        if n == 0:
            return []
        dev = self.device
        L = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((n, L), pad, dtype=torch.long, device=dev)
        attn = torch.zeros((n, L), dtype=torch.long, device=dev)
        pos = torch.zeros((n, L), dtype=torch.bool, device=dev)
        values = []
        for c, p in enumerate(prompts):
            ids[c, L - len(p):] = torch.as_tensor(list(p), dtype=torch.long, device=dev)
            attn[c, L - len(p):] = 1
            if extra_embeds is not None and extra_embeds[c] is not None:
                where, vals = extra_embeds[c]
                pos[c, L - len(p):] = where.to(dev)
                values.append(vals)
        extra = (pos, torch.cat(values, 0)) if values else None
        embeds = self.embed(ids, image_feats, image_index.to(dev), extra)
        lm = self.model.model.language_model
        positions = (attn.cumsum(-1) - 1).clamp(min=0)
        out = lm(inputs_embeds=embeds, attention_mask=attn, position_ids=positions, use_cache=True)
        past, h = out.past_key_values, out.last_hidden_state[:, -1]
        lengths = [len(p) for p in prompts]
        generated: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        eos = self.tokenizer.eos_token_id
        for _ in range(max_new_tokens):
            nxt = self.model.lm_head(h).argmax(-1)
            for c, t in enumerate(nxt.tolist()):
                if not done[c]:
                    generated[c].append(t)
                    done[c] = t == eos or lengths[c] + len(generated[c]) >= self.max_length
            if all(done):
                break
            attn = torch.cat([attn, attn.new_ones((n, 1))], 1)
            positions = positions[:, -1:] + 1
            emb = self.model.get_input_embeddings()(nxt[:, None])
            out = lm(inputs_embeds=emb, attention_mask=attn, position_ids=positions, past_key_values=past,
                     use_cache=True)
            past, h = out.past_key_values, out.last_hidden_state[:, -1]
        return generated

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i != self.tokenizer.eos_token_id], skip_special_tokens=False)

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if p.requires_grad]


def lora_regex(targets: Sequence[str], scope: str = "language_model") -> str:
    """A peft ``target_modules`` regex restricted to ``scope`` (e.g. the LLM, not the CLIP tower)."""
    return rf".*{re.escape(scope)}.*\.({'|'.join(map(re.escape, targets))})"
