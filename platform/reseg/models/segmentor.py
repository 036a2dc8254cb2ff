"""``ReasoningSegmentor``: LMM backbone + mask source + head, as one mmengine ``BaseModel``.

The segmentor is method-agnostic. Per batch it preprocesses each image once for the vision tower and
once for the mask source, runs the vision tower and the mask-source encoder **once per image** however
many queries the image has, asks the head for its conversations, tokenises them, runs the LLM once
over all conversations and hands everything to the head (DESIGN.md, "One picture").
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from mmengine.model import BaseModel

from reseg.registry import HEADS, LMMS, MASK_SOURCES, MODELS
from reseg.structures import Sample

from .head import BatchContext, Conversation


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

    def __init__(self, lmm: dict, head: dict, mask_source: Optional[dict] = None,
                 val_mode: str = "teacher_forcing", max_new_tokens: int = 32,
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None) -> None:
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

    # ------------------------------------------------------------------ shared work
    def prepare(self, samples: list[Sample], mode: str, with_tokens: bool = True) -> BatchContext:
        """Run the shared parts once per image and tokenise the head's conversations."""
        if not samples:
            raise ValueError("empty batch")
        images = [s.image for s in samples]
        image_feats = self.lmm.image_features(self.lmm.preprocess_images(images))
        mask_emb, mask_sizes, pool = None, [], None
        if getattr(self.mask_source, "kind", None) == "candidate_pool":
            # proposals (unless the samples carry a pool) and encoder features, once per image
            samples, pool = self.mask_source.prepare(samples)
        elif self.mask_source is not None and hasattr(self.mask_source, "embed"):
            pixels, mask_sizes = self.mask_source.preprocess(images)
            mask_emb = self.mask_source.embed(pixels)
        convs: list[Conversation] = []
        conv_sample: list[int] = []
        for i, s in enumerate(samples):
            for c in self.head.build_conversations(s, mode):
                convs.append(c)
                conv_sample.append(i)
        tokens: dict[str, torch.Tensor] = {}
        if with_tokens and convs:
            tokens = self.lmm.collate([
                self.lmm.encode(c.prompt, c.answer) if c.with_image
                else self.lmm.encode(c.prompt, c.answer, with_image=False) for c in convs])
        return BatchContext(
            samples=samples, conversations=convs,
            conv_sample=torch.tensor(conv_sample, dtype=torch.long, device=image_feats.device),
            tokens=tokens, image_feats=image_feats, mask_embeddings=mask_emb, mask_sizes=mask_sizes,
            max_new_tokens=self.max_new_tokens, pool=pool)

    def run_lmm(self, ctx: BatchContext) -> None:
        kwargs = {}
        extra = self.head.extra_embeddings(ctx, self.lmm, self.mask_source)
        if extra is not None:
            kwargs["extra_embeds"] = extra
        labels = ctx.tokens.get("labels")
        if not getattr(self.head, "needs_logits", True):
            # the head reads hidden states only and supervises no text: no LM head, no text loss
            kwargs["with_logits"] = False
            labels = None
        ctx.lmm_out = self.lmm(input_ids=ctx.tokens["input_ids"], attention_mask=ctx.tokens["attention_mask"],
                               image_feats=ctx.image_feats, image_index=ctx.conv_sample,
                               labels=labels, **kwargs)

    # ------------------------------------------------------------------ mmengine API
    def forward(self, samples: list[Sample], mode: str = "tensor") -> Any:
        if mode == "loss":
            self._loss_sample_ids = [s.sample_id for s in samples]  # named if the loss is not finite
            ctx = self.prepare(samples, "train")
            self.run_lmm(ctx)
            return self.head.loss(ctx, self.lmm, self.mask_source)
        if mode == "predict":
            return self.predict(samples, generate=self.val_mode == "generate")
        if mode == "tensor":
            ctx = self.prepare(samples, "val")
            self.run_lmm(ctx)
            return ctx
        raise ValueError(f"unknown mode {mode!r}; expected 'loss', 'predict' or 'tensor'")

    def predict(self, samples: list[Sample], generate: bool = False) -> list[dict]:
        """One dict per sample: ``sample_id`` and ``predictions`` (one QueryPrediction per query)."""
        ctx = self.prepare(samples, "generate" if generate else "val", with_tokens=not generate)
        if not generate and ctx.conversations:
            self.run_lmm(ctx)
        preds = self.head.predict(ctx, self.lmm, self.mask_source, generate=generate)
        return [dict(sample_id=s.sample_id, predictions=p) for s, p in zip(samples, preds)]

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
