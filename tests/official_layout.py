"""Helpers for the checkpoint-import tests: tiny reseg models written out in the official key layout.

The "official" checkpoints are tiny reseg models renamed with the tables below, written by hand from
the official module trees (dvlab-research/LISA model/LISA.py, model/llava/...; the method plugins'
tests add their own entries), not with the converter itself.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tiny import tiny_model_cfg

#: reseg prefix -> official prefix of the [SEG] family's shared layout (first match wins).
SHARED_TO_OFFICIAL = [
    ("lmm.model.lm_head.", "lm_head."),
    ("lmm.model.model.language_model.embed_tokens.", "model.embed_tokens."),
    ("lmm.model.model.language_model.layers.", "model.layers."),
    ("lmm.model.model.language_model.norm.", "model.norm."),
    ("lmm.model.model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
    ("lmm.model.model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
    ("lmm.model.model.vision_tower.vision_model.", "model.vision_tower.vision_tower.vision_model."),
    ("lmm.model.model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
    ("mask_source.sam.", "model.visual_model."),
    ("head.projection.", "model.text_hidden_fcs.0."),
]


def to_official(sd: dict, extra: list[tuple[str, str]] = ()) -> dict:
    """``sd`` under the official names (``extra`` prefixes are tried first), plus the two buffers the
    official files carry and transformers recomputes."""
    table = list(extra) + SHARED_TO_OFFICIAL
    out = {}
    for k, v in sd.items():
        prefix, repl = next((p, r) for p, r in table if k.startswith(p))
        out[repl + k[len(prefix):]] = v.clone()
    out["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    out["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    return out


def build_model(cfg: dict, seed: int):
    """The tiny model of ``cfg`` with its weights drawn from ``seed``."""
    from mmengine.registry import DefaultScope

    from reseg.plugins import load_plugins
    from reseg.registry import MODELS, SCOPE

    load_plugins()
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(SCOPE):
        return MODELS.build(cfg)


def merged_model(head: str, tok_dir: str, folder: Path, **head_kw) -> tuple[str, dict, torch.nn.Module]:
    """(config path, model cfg, model) of a tiny ``head`` model with its LoRA merged, as releases are."""
    from mmengine.config import Config

    cfg = tiny_model_cfg(tok_dir, head=head)
    cfg["head"].update(head_kw)
    cfg["lmm"]["lora"] = None
    path = folder / f"tiny_{head}.py"
    Config(dict(model=cfg)).dump(str(path))
    return str(path), cfg, build_model(cfg, seed=0)


def write_source(sd: dict, kind: str, folder: Path) -> Path:
    """Write an official state dict as a release would: ``shards`` (a Hugging Face directory of two
    safetensors shards + index), ``bin`` (torch.save) or ``safetensors``."""
    from safetensors.torch import save_file

    if kind == "shards":
        out = folder / "hf"
        out.mkdir()
        keys = sorted(sd)
        half = len(keys) // 2
        weight_map = {}
        for i, part in enumerate((keys[:half], keys[half:])):
            name = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({k: sd[k].contiguous() for k in part}, str(out / name))
            weight_map.update(dict.fromkeys(part, name))
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        return out
    if kind == "bin":
        out = folder / "pytorch_model.bin"
        torch.save(sd, out)
        return out
    out = folder / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out))
    return out


def assert_same_weights(model: torch.nn.Module, ref: torch.nn.Module) -> None:
    got, want = model.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
