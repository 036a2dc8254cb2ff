"""The READ head: LISA's ``[SEG]`` prompt plus similarity-as-points prompts (spec seg_token_family.md §2).

READ keeps LISA's pipeline unchanged (§2, §2.2 steps 1-3 and 7): the same ``[SEG]`` token, the same
state read for it, the same projection, templates and losses, all inherited from
:class:`reseg_lisa.head.LISAHead`. It changes how a ``[SEG]`` state drives SAM (§2.2 steps 4 and 6):
the raw state is compared with the image-token states of its conversation (:func:`similarity_map`),
the similarity picks ``num_points`` labelled points (SasP, :func:`similarity_as_points`), DtoC makes
them differentiable, and SAM is prompted with ``[points, padding point, [SEG] embedding]``. There is
no extra loss: the mask loss reaches the LLM through the points too.
"""
from __future__ import annotations

from typing import Optional

import torch

from reseg.models.head import BatchContext
from reseg.structures import QueryPrediction
from reseg_lisa.head import LISAHead

from .functional import (ASPECTS, DTOC_KERNELS, DTOC_WINDOW, PAPER_STAT_K, READ7B_DOWN_SAMPLE,
                         READ7B_NUM_POINTS, READ_T_NEG, READ_T_POS, THRESHOLD_MODES, full_resolution_map,
                         similarity_as_points, similarity_map, to_sam_frame)

#: ``ctx.lmm_out`` key of the per-image similarity heat-maps of the last :meth:`READHead.decode_masks`.
MAPS_KEY = "read_similarity_maps"


def _bad(key: str, expected: str, got) -> ValueError:
    return ValueError(f"READHead: model.head.{key} must be {expected}, got {got!r}")


def vision_input_size(lmm) -> int:
    """Side of the (square) vision-tower input of ``lmm``, e.g. 336 for CLIP-336."""
    try:
        return int(lmm.model.config.vision_config.image_size)
    except AttributeError:
        raise TypeError(f"READHead needs the vision-tower input size of {type(lmm).__name__} "
                        "(model.config.vision_config.image_size of a LLaVA backbone)") from None


def image_token_frame(lmm, head: str, wanted_aspect: Optional[str], aspects, consequence: str):
    """``(aspect, grid, input_size)`` of ``lmm``'s image tokens, checked for heads that map a per-token
    map back onto the image (READ's similarity points, AnchorSeg's prior).

    ``aspect`` is the backbone's CLIP preprocessing (one of ``aspects``); ``wanted_aspect`` (the head's
    ``image_aspect``, None = follow the backbone) must agree with it, since the map would otherwise
    land in the wrong place (``consequence`` says what goes wrong). ``grid`` is the token grid, which
    must hold exactly one token per patch; ``input_size`` the vision-tower input side.
    """
    aspect = getattr(lmm, "image_aspect", None)
    if aspect not in aspects:
        raise TypeError(f"{head} needs a backbone whose image_aspect is one of {list(aspects)}; "
                        f"{type(lmm).__name__} has {aspect!r}")
    if wanted_aspect is not None and wanted_aspect != aspect:
        raise ValueError(
            f"{head}: model.head.image_aspect={wanted_aspect!r} but the backbone preprocesses images with "
            f"model.lmm.image_aspect={aspect!r}; {consequence}. Set both to the same value (or leave "
            "model.head.image_aspect=None).")
    grid = tuple(int(g) for g in lmm.image_grid)
    if grid[0] * grid[1] != lmm.num_image_tokens:
        raise ValueError(f"{head} needs one image token per patch of the {grid[0]}x{grid[1]} grid, but the "
                         f"backbone gives {lmm.num_image_tokens} image tokens (a CLS token? use "
                         "vision_feature_select_strategy='default')")
    return aspect, grid, vision_input_size(lmm)


class READHead(LISAHead):
    """READ (CVPR 2025): ``[SEG]`` embedding + similarity-as-points prompts for SAM.

    Args:
        num_points: points per ``[SEG]`` (§2.3 step 6; READ-7B 30).
        down_sample: grid down-sampling ``d`` of the image-token grid (§2.3 step 4a; READ-7B 2:
            24x24 tokens -> 12x12 cells). Must divide the grid.
        thresholds: ``'fixed'`` (``t_pos``/``t_neg``, the released code) or ``'statistical'``
            (``mu +- stat_k * sigma``, the paper's Algorithm 1; §2.7).
        t_pos, t_neg: the fixed thresholds, ``0 <= t_neg < t_pos <= 1`` (0.8 / 0.2, §2.3).
        stat_k: ``k`` of the statistical thresholds (0.5 in the paper, 1.28 in a code comment).
        dtoc: refine the points by DtoC (§2.3 step 8); False gives the integer cell pixels, whose
            positions carry no gradient (the paper's "discrete points" ablation).
        dtoc_kernel: ``'gaussian'`` (``exp(-d^2)``, the code) or ``'laplace'`` (``exp(-d)``, the paper).
        dtoc_window: DtoC window half-width in px; None = the kernel's default (exact to < 1e-6 px).
        seg_prompt: also give SAM the projected ``[SEG]`` embedding (False: the "points only" ablation).
        image_aspect: the CLIP preprocessing the similarity grid assumes, ``'crop'`` or ``'pad'``.
            None follows the backbone (``model.lmm.image_aspect``); a value that disagrees with the
            backbone is an error, since the points would land in the wrong place (§2.7).
        **lisa_kwargs: :class:`LISAHead`'s (loss weights, ``seg_convention``, ``system_prompt``,
            ``rej_token``, ...).
        return_similarity: put each query's similarity map S~ (min-max over the image tokens, at the
            original size: :func:`full_resolution_map`) in ``QueryPrediction.extras['heatmaps']``
            under ``'similarity'``, for the visualisation and the web demo.
    """

    def __init__(self, num_points: int = READ7B_NUM_POINTS, down_sample: int = READ7B_DOWN_SAMPLE,
                 thresholds: str = "fixed", t_pos: float = READ_T_POS, t_neg: float = READ_T_NEG,
                 stat_k: float = PAPER_STAT_K, dtoc: bool = True, dtoc_kernel: str = "gaussian",
                 dtoc_window: Optional[int] = None, seg_prompt: bool = True,
                 image_aspect: Optional[str] = None, return_similarity: bool = True, **lisa_kwargs) -> None:
        super().__init__(**lisa_kwargs)
        self.return_similarity = bool(return_similarity)
        if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
            raise _bad("num_points", "a positive int", num_points)
        if isinstance(down_sample, bool) or not isinstance(down_sample, int) or down_sample < 1:
            raise _bad("down_sample", "a positive int dividing the image-token grid", down_sample)
        if thresholds not in THRESHOLD_MODES:
            raise _bad("thresholds", f"one of {list(THRESHOLD_MODES)}", thresholds)
        if not (0.0 <= t_neg < t_pos <= 1.0):
            raise ValueError(f"READHead: model.head.t_neg and model.head.t_pos must satisfy "
                             f"0 <= t_neg < t_pos <= 1, got t_neg={t_neg!r}, t_pos={t_pos!r}")
        if not stat_k > 0:
            raise _bad("stat_k", "> 0", stat_k)
        if dtoc_kernel not in DTOC_KERNELS:
            raise _bad("dtoc_kernel", f"one of {list(DTOC_KERNELS)}", dtoc_kernel)
        if dtoc_window is not None and (not isinstance(dtoc_window, int) or dtoc_window < 0):
            raise _bad("dtoc_window", f"None (default {DTOC_WINDOW}) or an int >= 0", dtoc_window)
        if image_aspect is not None and image_aspect not in ASPECTS:
            raise _bad("image_aspect", f"None or one of {list(ASPECTS)}", image_aspect)
        self.num_points, self.down_sample = num_points, down_sample
        self.thresholds, self.t_pos, self.t_neg, self.stat_k = thresholds, t_pos, t_neg, stat_k
        self.dtoc, self.dtoc_kernel, self.dtoc_window = dtoc, dtoc_kernel, dtoc_window
        self.seg_prompt = seg_prompt
        self.image_aspect = image_aspect

    def setup(self, lmm, mask_source) -> None:
        super().setup(lmm, mask_source)
        self.aspect, self.grid, self.input_size = image_token_frame(
            lmm, "READHead", self.image_aspect, ASPECTS, "the similarity points would land in the wrong place")
        if self.grid[0] % self.down_sample or self.grid[1] % self.down_sample:
            ok = [d for d in range(1, self.grid[0] + 1) if self.grid[0] % d == 0 and self.grid[1] % d == 0]
            raise _bad("down_sample", f"a divisor of the {self.grid[0]}x{self.grid[1]} image-token grid, "
                       f"one of {ok}", self.down_sample)

    # ------------------------------------------------------------------ SasP
    def points(self, sim: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``points [n, P, 2]`` (original pixels) and ``labels [n, P]`` of one image's similarities
        ``sim [n, Np]``, with this head's settings (:func:`similarity_as_points`)."""
        return similarity_as_points(
            sim, self.grid, size, aspect=self.aspect, input_size=self.input_size, num_points=self.num_points,
            down_sample=self.down_sample, thresholds=self.thresholds, t_pos=self.t_pos, t_neg=self.t_neg,
            stat_k=self.stat_k, use_dtoc=self.dtoc, kernel=self.dtoc_kernel, window=self.dtoc_window)

    def _gather(self, ctx: BatchContext):
        """LISA's gather, plus the similarity of each ``[SEG]`` state with the image tokens of its own
        row (§2.3 steps 1-2, §2.7), kept in ``ctx.lmm_out`` for :meth:`decode_masks`."""
        states, image_of, slots, read = super()._gather(ctx)
        sim = similarity_map(ctx.lmm_out["hidden"], ctx.lmm_out["image_positions"], read[:, 0], states)
        ctx.lmm_out["read_similarity"] = (states, sim)
        return states, image_of, slots, read

    def _similarity(self, ctx: BatchContext, states: torch.Tensor, image_of: torch.Tensor) -> torch.Tensor:
        kept = ctx.lmm_out.get("read_similarity")
        if kept is not None and kept[0] is states:
            return kept[1]
        per_image = ctx.lmm_out.get("read_image_states")
        if per_image is None:
            raise RuntimeError("READHead.decode_masks needs the similarity of these [SEG] states: gather them "
                               "with _gather (teacher forcing) or predict with generate=True")
        if len(states) == 0:
            return states.new_zeros((0, 0))
        hidden = torch.stack([per_image[i] for i in image_of.tolist()])
        every = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return similarity_map(hidden, every, torch.arange(len(states), device=states.device), states)

    def decode_masks(self, ctx: BatchContext, mask_source, states: torch.Tensor,
                     image_of: torch.Tensor) -> list[torch.Tensor]:
        """Per image, ``[n_i, H, W]`` logits: SAM prompted with ``[points, pad, [SEG]]`` (§2.2 step 6).

        The points (:meth:`points`) are mapped to SAM's resized frame (step 6a); SAM's prompt encoder
        appends its padding point (label -1) because no box is given (step 6c), and the projected
        ``[SEG]`` embedding follows (step 6d), unless ``seg_prompt=False``.
        """
        sim = self._similarity(ctx, states, image_of)
        if self.return_similarity and not self.training:
            maps = ctx.lmm_out.setdefault(MAPS_KEY, {})
            for i in image_of.unique().tolist():
                sel = (image_of == i).nonzero(as_tuple=True)[0]
                maps[i] = full_resolution_map(sim[sel].detach(), self.grid, ctx.samples[i].size, self.aspect,
                                              self.input_size).cpu()
        emb = self.projection(states)
        # images without a [SEG] get an empty stack that still belongs to the graph
        out = [emb.new_zeros((0, *s.size)) + emb.sum() * 0 for s in ctx.samples]
        for i in image_of.unique().tolist():
            sel = (image_of == i).nonzero(as_tuple=True)[0]
            size, resized = ctx.samples[i].size, ctx.mask_sizes[i]
            pts, labels = self.points(sim[sel], size)
            sparse = emb[sel][:, None, :] if self.seg_prompt else emb.new_zeros((len(sel), 0, emb.shape[-1]))
            low, _ = mask_source.decode(ctx.mask_embeddings[i: i + 1], sparse,
                                        points=(to_sam_frame(pts, size, resized), labels))
            out[i] = mask_source.postprocess(low, resized, size)
        return out

    def prediction_extras(self, ctx: BatchContext, image: int, rows: Optional[list[int]]) -> dict:
        """The similarity heat-maps of the query's ``[SEG]`` tokens (``return_similarity``)."""
        if not self.return_similarity:
            return {}
        maps = (ctx.lmm_out.get(MAPS_KEY) or {}).get(image)
        if maps is None or not rows:
            return {"heatmaps": {"similarity": torch.zeros((0, *ctx.samples[image].size))}}
        return {"heatmaps": {"similarity": maps[rows]}}

    # ------------------------------------------------------------------ generation
    def image_token_states(self, ctx: BatchContext, lmm) -> list[Optional[torch.Tensor]]:
        """Per image, the ``[Np, D]`` last-layer states of its image tokens when generating.

        Under causal attention an image token's state depends only on the tokens before it, which
        every conversation of an image shares (same system prompt and ``USER:`` prefix), so one
        forward over that prefix serves all of the image's generated ``[SEG]`` tokens.
        """
        out: list[Optional[torch.Tensor]] = []
        for i in range(len(ctx.samples)):
            prefixes = []
            for conv, si in zip(ctx.conversations, ctx.conv_sample.tolist()):
                if si == i:
                    ids, _ = lmm.encode(conv.prompt, None)
                    last = max(k for k, t in enumerate(ids) if t == lmm.image_token_id)
                    prefixes.append(ids[: last + 1])
            if not prefixes:
                out.append(None)
                continue
            if any(p != prefixes[0] for p in prefixes):
                raise ValueError("READHead generation expects every conversation of an image to share the text "
                                 "before its image tokens")
            ids = torch.tensor([prefixes[0]], device=lmm.device)
            res = lmm(input_ids=ids, attention_mask=torch.ones_like(ids), image_feats=ctx.image_feats[i: i + 1],
                      image_index=torch.zeros(1, dtype=torch.long, device=ids.device))
            out.append(res["hidden"][0][res["image_positions"][0]])
        return out

    def predict(self, ctx: BatchContext, lmm, mask_source, generate: bool) -> list[list[QueryPrediction]]:
        if generate:
            with torch.no_grad():
                ctx.lmm_out["read_image_states"] = self.image_token_states(ctx, lmm)
        return super().predict(ctx, lmm, mask_source, generate)
