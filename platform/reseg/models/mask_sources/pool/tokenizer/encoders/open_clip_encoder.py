"""A frozen open_clip vision tower as a mask encoder (OpenAI CLIP ViTs, ConvNeXt-CLIP's timm trunk;
``anchorseg_ras.md`` §2.4 B)."""
from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence

import torch
import torch.nn as nn

from reseg.registry import MASK_ENCODERS

from .base import MaskEncoder, check_feature, load_weights_into, read_weights, require_checkpoint_file
from .timm_encoder import timm_feature_map, timm_feature_shape


def _open_clip_config(model_name: str) -> dict:
    import open_clip

    if model_name.startswith("hf-hub:"):
        raise ValueError(f"open_clip model {model_name!r}: hf-hub names download; use a built-in name, "
                         "'local-dir:/path' or `model_cfg=` with a local `checkpoint=`")
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
        raise ValueError(f"unknown open_clip model {model_name!r}" + (f"; did you mean {close}?" if close else ""))
    return copy.deepcopy(cfg)


def _open_clip_default_norm(model_name: str | None, cfg: dict) -> tuple[tuple, tuple]:
    """mean/std from the config's ``preprocess_cfg``, else the model's pretrained tags when they all
    agree (metadata only, nothing is fetched), else OpenAI CLIP's."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pre = cfg.get("preprocess_cfg") or {}
    if "mean" in pre and "std" in pre:
        return tuple(pre["mean"]), tuple(pre["std"])
    if model_name:
        import open_clip

        norms = {(tuple(c.get("mean", OPENAI_DATASET_MEAN)), tuple(c.get("std", OPENAI_DATASET_STD)))
                 for c in (open_clip.get_pretrained_cfg(model_name, t)
                           for t in open_clip.list_pretrained_tags_by_model(model_name))}
        if len(norms) == 1:
            return norms.pop()
    return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)


def _build_open_clip_visual(embed_dim: int, vision_cfg: dict, quick_gelu: bool) -> nn.Module:
    """The vision tower only (the text tower of e.g. ConvNeXt-XXL CLIP would be ~350M unused params)."""
    try:
        from open_clip.model import _build_vision_tower
    except ImportError:  # an open_clip without the helper: build a CLIP with a 1-layer text tower, keep .visual
        from open_clip.model import CLIP

        text_cfg = dict(context_length=2, vocab_size=2, width=8, heads=1, layers=1)
        return CLIP(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu).visual
    return _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu)


@MASK_ENCODERS.register_module()
class OpenClipEncoder(MaskEncoder):
    """A frozen open_clip vision tower as a mask encoder (OpenAI CLIP ViT-L/14-336, ConvNeXt-XXL
    CLIP; spec §2.4 B).

    Only the vision tower is built (from ``open_clip.get_model_config(model_name)`` or
    ``model_cfg``, always without pretrained weights). Feature maps: an open_clip ViT's spatial
    tokens (block output, class token dropped, reshaped to the grid; ``'last'`` applies ``ln_post``
    as open_clip does to its output tokens, the projection is not applied); a timm-trunk tower
    (ConvNeXt-CLIP) uses the trunk's ``forward_features``, as the groundLMM wrappers do (§2.4 B).

    Args:
        model_name: an open_clip model name (``ViT-L-14-336-quickgelu``, ``convnext_xxlarge``) or
            ``local-dir:/path`` (a folder with ``open_clip_config.json``).
        model_cfg: instead of a name, an open_clip model config dict (``embed_dim``, ``vision_cfg``,
            optional ``quick_gelu``, ``preprocess_cfg``): tiny CPU versions.
        checkpoint: local open_clip weights (``open_clip_pytorch_model.bin`` /
            ``open_clip_model.safetensors``: ``visual.*`` keys are used, the text tower is ignored)
            or a vision-tower-only state dict. OpenAI's TorchScript ``.pt`` files are not read
            (use the open_clip-format export of the same weights).
        img_size: input size S, overriding ``vision_cfg['image_size']`` (ViT position embeddings of a
            checkpoint are resized; ConvNeXt-CLIP at 1024 for a 32 x 32 grid, §2.4 B).
        mean, std: normalisation; default: ``preprocess_cfg``, else the model's pretrained tags, else
            OpenAI CLIP's.
        feature: ``'last'`` or a block/stage index (e.g. ``-2``, LLaVA's penultimate layer).
        config_key: this encoder's dotted config path, used in error messages.
    """

    def __init__(
        self,
        model_name: str | None = None,
        model_cfg: dict | None = None,
        checkpoint: str | None = None,
        img_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        feature: str | int = "last",
        config_key: str = "mask_encoder",
    ) -> None:
        super().__init__()
        if (model_name is None) == (model_cfg is None):
            raise ValueError(f"{config_key}: give exactly one of `model_name` (an open_clip name) or "
                             f"`model_cfg` (an open_clip config dict); got model_name={model_name!r}, "
                             f"model_cfg={'set' if model_cfg is not None else None}")
        require_checkpoint_file(checkpoint, f"{config_key}.checkpoint",
                                f"checkpoints/{model_name or 'clip'}/open_clip_pytorch_model.bin")
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        self.model_name = model_name
        self.feature = check_feature(feature)
        cfg = _open_clip_config(model_name) if model_name is not None else copy.deepcopy(dict(model_cfg))
        if "vision_cfg" not in cfg or "embed_dim" not in cfg:
            raise ValueError(f"{config_key}.model_cfg needs 'embed_dim' and 'vision_cfg' (open_clip's config "
                             f"layout); got keys {sorted(cfg)}")
        vision_cfg = dict(cfg["vision_cfg"])
        if img_size is not None:
            vision_cfg["image_size"] = img_size
        vision_cfg["timm_model_pretrained"] = False  # never download
        what = f"open_clip vision tower {model_name or 'model_cfg'!r}"
        self.visual = _build_open_clip_visual(int(cfg["embed_dim"]), vision_cfg, bool(cfg.get("quick_gelu", False)))
        if checkpoint is not None:
            self._load(checkpoint, f"{config_key}.checkpoint", what)

        size = vision_cfg.get("image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        if size[0] != size[1]:
            raise ValueError(f"{what}: image_size {list(size)} is not square; the mask geometry needs S x S")
        self.input_size = int(size[0])
        if isinstance(self.visual, VisionTransformer):
            self._kind = "vit"
            patch = tuple(self.visual.patch_size)
            n_blocks = len(self.visual.transformer.resblocks)
            if isinstance(self.feature, int) and not -n_blocks <= self.feature < n_blocks:
                raise ValueError(f"{what}: feature={self.feature} is out of range for {n_blocks} blocks")
            self.out_channels = int(self.visual.transformer.width)
            self.grid = (self.input_size // patch[0], self.input_size // patch[1])
            stride = patch
        elif isinstance(self.visual, TimmModel):
            self._kind = "timm"
            self.out_channels, self.grid, stride = timm_feature_shape(
                self.visual.trunk, self.input_size, self.feature, what)
        else:
            raise TypeError(f"{what}: vision tower {type(self.visual).__name__} is not supported "
                            "(expected an open_clip VisionTransformer or a timm trunk)")
        self.coverage = (self.grid[0] * stride[0] / self.input_size, self.grid[1] * stride[1] / self.input_size)
        default_mean, default_std = _open_clip_default_norm(model_name, cfg)
        self.mean = tuple(float(v) for v in (mean if mean is not None else default_mean))
        self.std = tuple(float(v) for v in (std if std is not None else default_std))
        self._freeze()

    def _load(self, path: str, key: str, what: str) -> None:
        sd = read_weights(path, key)
        if any(k.startswith("visual.") for k in sd):
            sd = {k: v for k, v in sd.items() if k.startswith("visual.")}
            from types import SimpleNamespace

            from open_clip.model import resize_pos_embed

            resize_pos_embed(sd, SimpleNamespace(visual=self.visual))  # in place, ViTs only
            sd = {k[len("visual."):]: v for k, v in sd.items()}
        load_weights_into(self.visual, sd, path, what)

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self._kind == "timm":
            return timm_feature_map(self.visual.trunk, pixels, self.feature, self.grid)
        visual = self.visual
        if self.feature == "last":
            norm = visual.attn_pool is None and not visual.final_ln_after_pool
            out = visual.forward_intermediates(pixels, indices=1, normalize_intermediates=norm,
                                               intermediates_only=True)
        else:
            out = visual.forward_intermediates(pixels, indices=[self.feature], intermediates_only=True)
        return out["image_intermediates"][0]
