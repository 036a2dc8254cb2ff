"""A frozen timm model as a mask encoder (SigLIP, DINOv2, ConvNeXt, ...; ``anchorseg_ras.md`` §2.4 B)."""
from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from reseg.registry import MASK_ENCODERS

from .base import MaskEncoder, check_feature, load_weights_into, read_weights, require_checkpoint_file


def _is_timm_vit(model: nn.Module) -> bool:
    return hasattr(model, "patch_embed") and getattr(model, "num_prefix_tokens", None) is not None


def timm_feature_shape(model: nn.Module, size: int, feature: str | int,
                       what: str) -> tuple[int, tuple[int, int], tuple[int, int]]:
    """``(channels, grid, stride)`` of a timm model's feature map at input ``size`` (no forward)."""
    if _is_timm_vit(model):
        patch = tuple(int(p) for p in np.broadcast_to(np.asarray(model.patch_embed.patch_size), (2,)))
        if isinstance(feature, int):
            n_blocks = len(model.blocks)
            if not -n_blocks <= feature < n_blocks:
                raise ValueError(f"{what}: feature={feature} is out of range for {n_blocks} blocks")
        grid = (size // patch[0], size // patch[1])
        return int(model.embed_dim), grid, patch
    info = getattr(model, "feature_info", None)
    if not info:
        raise TypeError(f"{what}: {type(model).__name__} is neither a timm ViT (patch_embed + prefix tokens) "
                        "nor a CNN with feature_info; cannot tell its feature grid")
    index = -1 if feature == "last" else feature
    if not -len(info) <= index < len(info):
        raise ValueError(f"{what}: feature={feature} is out of range for {len(info)} stages")
    stage = info[index]
    reduction = int(stage["reduction"])
    return int(stage["num_chs"]), (size // reduction, size // reduction), (reduction, reduction)


def timm_feature_map(model: nn.Module, pixels: torch.Tensor, feature: str | int,
                     grid: tuple[int, int]) -> torch.Tensor:
    """``[B, C, h, w]`` from a timm model: ViT tokens without prefix (cls/register) tokens reshaped
    to the grid, or a CNN's feature map."""
    if feature != "last":
        return model.forward_intermediates(pixels, indices=[feature], intermediates_only=True,
                                           output_fmt="NCHW")[0]
    out = model.forward_features(pixels)
    if out.dim() == 3:  # [B, N, C] tokens
        tokens = out[:, getattr(model, "num_prefix_tokens", 0):]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        out = out.permute(0, 3, 1, 2)
    return out


def _create_timm_model(model_name: str, img_size: int | None, model_kwargs: dict | None) -> nn.Module:
    """``timm.create_model(model_name, pretrained=False, num_classes=0, ...)``; ``img_size`` is
    passed to models that take it (ViTs) and left to the input size for the others (CNNs)."""
    import timm
    from timm.models import split_model_name_tag

    arch = split_model_name_tag(model_name)[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        raise ValueError(f"unknown timm model {model_name!r}" + (f"; did you mean {close}?" if close else ""))
    kwargs = dict(model_kwargs or {})
    if kwargs.pop("pretrained", False):
        raise ValueError(f"timm model {model_name!r}: pretrained=True would download weights; "
                         "give a local `checkpoint=` file instead")
    kwargs.setdefault("num_classes", 0)
    if img_size is None:
        return timm.create_model(model_name, pretrained=False, **kwargs)
    try:
        return timm.create_model(model_name, pretrained=False, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return timm.create_model(model_name, pretrained=False, **kwargs)  # a CNN: any input size


def _load_timm_checkpoint(model: nn.Module, path: str, key: str, what: str) -> None:
    """A timm-format state dict, an open_clip one whose tower is a timm trunk (``visual.trunk.*``),
    or an original release the model's ``checkpoint_filter_fn`` converts (e.g. Meta's DINOv2)."""
    sd = read_weights(path, key)
    trunk = "visual.trunk."
    if any(k.startswith(trunk) for k in sd):
        sd = {k[len(trunk):]: v for k, v in sd.items() if k.startswith(trunk)}
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    load_weights_into(model, sd, path, what)


@MASK_ENCODERS.register_module()
class TimmEncoder(MaskEncoder):
    """A frozen timm model as a mask encoder (SigLIP, DINOv2, ConvNeXt, ...; spec §2.4 B).

    Args:
        model_name: any timm name (``vit_so400m_patch14_siglip_384``, ``vit_large_patch14_dinov2``,
            ``convnext_xxlarge``, optionally with a pretrained tag such as
            ``convnext_base.clip_laion2b``, which only selects the default mean/std). Always built
            with ``pretrained=False`` and ``num_classes=0``.
        checkpoint: local weights (``.safetensors`` / ``.pth`` / ``.bin``): a timm state dict, an
            open_clip state dict with a timm trunk, or a release the model's timm
            ``checkpoint_filter_fn`` converts. ``None`` keeps random weights (tiny scale).
        img_size: input size S. Passed to ViTs (``img_size``; position embeddings of a checkpoint are
            resampled by timm's filter); CNNs take any size. Default: the model's pretrained_cfg.
        model_kwargs: extra ``timm.create_model`` kwargs (tiny CPU versions: ``embed_dim``,
            ``depth``, ``num_heads``; ConvNeXt ``dims``, ``depths``).
        mean, std: normalisation (0-1 scale); default: the model's ``pretrained_cfg``.
        feature: ``'last'`` (``forward_features``: ViT tokens after the final norm without the
            cls/register tokens, reshaped to the grid; a CNN's last stage) or a block/stage index
            (``forward_intermediates``, un-normed).
        config_key: this encoder's dotted config path, used in error messages.
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: str | None = None,
        img_size: int | None = None,
        model_kwargs: dict | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        feature: str | int = "last",
        config_key: str = "mask_encoder",
    ) -> None:
        super().__init__()
        require_checkpoint_file(checkpoint, f"{config_key}.checkpoint",
                                f"checkpoints/{model_name.split('.')[0]}/model.safetensors")
        self.model_name = model_name
        self.feature = check_feature(feature)
        self.model = _create_timm_model(model_name, img_size, model_kwargs)
        what = f"timm model {model_name!r}"
        if checkpoint is not None:
            _load_timm_checkpoint(self.model, checkpoint, f"{config_key}.checkpoint", what)
        cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        self.input_size = int(img_size if img_size is not None else cfg.get("input_size", (3, 224, 224))[-1])
        self.mean = tuple(float(v) for v in (mean if mean is not None else cfg.get("mean", (0.485, 0.456, 0.406))))
        self.std = tuple(float(v) for v in (std if std is not None else cfg.get("std", (0.229, 0.224, 0.225))))
        self.out_channels, self.grid, stride = timm_feature_shape(self.model, self.input_size, self.feature, what)
        self.coverage = (self.grid[0] * stride[0] / self.input_size, self.grid[1] * stride[1] / self.input_size)
        self._freeze()

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        return timm_feature_map(self.model, pixels, self.feature, self.grid)
