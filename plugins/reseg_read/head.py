"""The READ head: the ``[SEG]`` prompt plus similarity-as-points prompts (spec seg_token_family.md §2).

READ keeps LISA's pipeline (§2, §2.2 steps 1-3 and 7): the ``[SEG]`` family's conversations, state
read, projection and losses (:class:`reseg.models.heads.SegTokenHead`). It changes how a ``[SEG]``
state drives SAM (§2.2 steps 4 and 6): the raw state is compared with the image-token states of its
conversation, the similarity picks ``num_points`` labelled points (SasP), DtoC makes them
differentiable, and SAM is prompted with ``[points, padding point, [SEG] embedding]``. There is no
extra loss: the mask loss reaches the LLM through the points too.
"""
from __future__ import annotations

import torch

from reseg.models.heads import HeadBatch, SegTokenHead
from reseg.models.image_tokens import ImageTokenFrame, check_frame, full_resolution_map

from .functional import (
    ASPECTS,
    DTOC_KERNELS,
    DTOC_WINDOW,
    PAPER_STAT_K,
    READ7B_DOWN_SAMPLE,
    READ7B_NUM_POINTS,
    READ_T_NEG,
    READ_T_POS,
    THRESHOLD_MODES,
    similarity_as_points,
    to_sam_frame,
)


def _bad(key: str, expected: str, got) -> ValueError:
    return ValueError(f"READHead: model.head.{key} must be {expected}, got {got!r}")


class READHead(SegTokenHead):
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
        image_aspect: the preprocessing the similarity grid assumes, ``'crop'`` or ``'pad'``.
            None follows the backbone's image-token frame; a value that disagrees with it is an error,
            since the points would land in the wrong place (§2.7).
        return_similarity: put each query's similarity map S~ (min-max over the image tokens, at the
            original size) in ``QueryPrediction.extras['heatmaps']`` under ``'similarity'``.
        **seg_kwargs: :class:`~reseg.models.heads.SegTokenHead`'s (loss weights, ``seg_convention``,
            ``system_prompt``, ``rej_token``, ...).
    """

    def __init__(self, num_points: int = READ7B_NUM_POINTS, down_sample: int = READ7B_DOWN_SAMPLE,
                 thresholds: str = "fixed", t_pos: float = READ_T_POS, t_neg: float = READ_T_NEG,
                 stat_k: float = PAPER_STAT_K, dtoc: bool = True, dtoc_kernel: str = "gaussian",
                 dtoc_window: int | None = None, seg_prompt: bool = True,
                 image_aspect: str | None = None, return_similarity: bool = True, **seg_kwargs) -> None:
        super().__init__(**seg_kwargs)
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
        self.check_frame(check_frame(lmm.image_token_frame, "READHead", self.image_aspect, ASPECTS,
                                     "the similarity points would land in the wrong place"))

    def check_frame(self, frame: ImageTokenFrame) -> ImageTokenFrame:
        gh, gw = frame.grid
        if gh % self.down_sample or gw % self.down_sample:
            ok = [d for d in range(1, gh + 1) if gh % d == 0 and gw % d == 0]
            raise _bad("down_sample", f"a divisor of the {gh}x{gw} image-token grid, one of {ok}", self.down_sample)
        return frame

    def points(self, sim: torch.Tensor, size: tuple[int, int], frame: ImageTokenFrame):
        """``points [n, P, 2]`` (original pixels) and ``labels [n, P]`` of one image's similarities
        ``sim [n, Np]``, with this head's settings (:func:`~.functional.similarity_as_points`)."""
        return similarity_as_points(
            sim, frame.grid, size, aspect=frame.aspect, input_size=frame.input_size, num_points=self.num_points,
            down_sample=self.down_sample, thresholds=self.thresholds, t_pos=self.t_pos, t_neg=self.t_neg,
            stat_k=self.stat_k, use_dtoc=self.dtoc, kernel=self.dtoc_kernel, window=self.dtoc_window)

    def forward(self, batch: HeadBatch) -> dict:
        """Per image, SAM prompted with ``[points, pad, [SEG]]`` (§2.2 step 6): the points (:meth:`points`)
        are mapped to SAM's resized frame (step 6a); SAM's prompt encoder appends its padding point
        (label -1) because no box is given (step 6c), and the projected ``[SEG]`` embedding follows
        (step 6d), unless ``seg_prompt=False``."""
        slots = batch.slots.where(kind="mask")
        sim = batch.similarity(slots)  # §2.3 steps 1-2, each [SEG] against its own row's image tokens
        emb = self.projection(slots.states)

        def prompts(i: int, sel: torch.Tensor) -> dict:
            size, resized = batch.samples[i].size, batch.mask_sizes[i]
            pts, labels = self.points(sim[sel], size, batch.frames[i])
            sparse = emb[sel][:, None, :] if self.seg_prompt else emb.new_zeros((len(sel), 0, emb.shape[-1]))
            return {"sparse": sparse, "points": (to_sam_frame(pts, size, resized), labels)}

        return {"masks": batch.decode_masks(slots, emb, prompts), "sim": sim}

    def heatmaps(self, outputs: dict, batch: HeadBatch) -> dict[str, list[torch.Tensor]]:
        """The similarity map S~ of every ``[SEG]`` (``return_similarity``), per image."""
        if not self.return_similarity:
            return {}
        maps = []
        for i, sel in batch.slots.where(kind="mask").by_image():
            size, frame = batch.samples[i].size, batch.frames[i]
            sim = outputs["sim"][sel].detach()
            maps.append(full_resolution_map(sim, frame.grid, size, frame.aspect, frame.input_size).cpu()
                        if len(sel) else torch.zeros((0, *size)))
        return {"similarity": maps}
