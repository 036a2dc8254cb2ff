"""What the tiny-model research scripts share: the probes (``tools/research/probe_tiny_*.py``) and the
tiny pre-training (``tools/research/pretrain_tiny.py``) train small parts on the synthetic benchmark's
REFER split with the same optimiser step, setup and expression text.
"""
from __future__ import annotations

import os
import sys

import torch


def clipped_step(loss, opt, sched, params, max_norm: float = 1.0) -> None:
    """One optimiser step of the tiny pre-training and probe loops: backward, clip the gradient norm
    to ``max_norm`` (1.0, LISA's clipping), step the optimiser and the scheduler."""
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    sched.step()


def probe_setup(config: str, seed: int, scope: str, cfg_options: dict | None = None):
    """What both probes (``probe_tiny_llm``, ``probe_tiny_sam``) start from: the reseg scope,
    seeded torch and a seeded ``random.Random``, the config with ``cfg_options`` merged (exits unless
    its LMM is tiny)."""
    import random

    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    DefaultScope.get_instance(scope, scope_name="reseg")
    torch.manual_seed(seed)
    full = Config.fromfile(config)
    if cfg_options:
        full.merge_from_dict(cfg_options)
    if "tiny" not in full.model.lmm:
        sys.exit(f"error: {config}: model.lmm has no `tiny` section; this probe is for tiny configs")
    return full, random.Random(seed)


def refer_splits(data: str, seed: int):
    """The synthetic benchmark's REFER-format train split (3 expressions per image) and val split."""
    from reseg.registry import DATASETS

    root = os.path.join(data, "refer_seg")
    common = dict(data_root=root, dataset="synthref", split_by="unc",
                  image_dir=os.path.join(root, "images", "synthref"))
    train = DATASETS.build(dict(type="RefCOCODataset", split="train", num_queries_per_sample=3, seed=seed, **common))
    val = DATASETS.build(dict(type="RefCOCODataset", split="val", test_mode=True, **common))
    return train, val


def expression(text: str) -> str:
    """The referring expression without a leading article ("the blue star" -> "blue star")."""
    words = text.strip().rstrip(".").split()
    return " ".join(words[1:] if len(words) > 1 and words[0].lower() in ("the", "a", "an") else words)
