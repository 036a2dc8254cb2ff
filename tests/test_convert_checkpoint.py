"""tools/convert_checkpoint.py: official LISA / READ / AnchorSeg key layouts -> reseg (issue 7).

The "official" checkpoints here are tiny reseg models renamed with the table below, written by hand
from the official module trees (dvlab-research/LISA model/LISA.py, model/llava/...; rui-qian/READ
model/READ.py; rui-qian/AnchorSeg model/AnchorSeg.py, model/segment_anything/modeling/mask_decoder.py),
not with the converter itself.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch

from tiny import tiny_model_cfg

ROOT = Path(__file__).resolve().parents[1]

# reseg prefix -> official prefix (first match wins; full names for the two AnchorSeg parameters).
TO_OFFICIAL = [
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
    ("head.latent_projection.", "model.latent_hidden_fcs.0."),
    ("head.slot_pos", "model.visual_model.mask_decoder.latent_token_positional_embedding"),
    ("head.mask_token_pos", "model.visual_model.mask_decoder.positional_embedding"),
]
HEADS = {"lisa": "LISAHead", "read": "READHead", "anchorseg": "AnchorSegHead"}


def to_official(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        prefix, repl = next((p, r) for p, r in TO_OFFICIAL if k.startswith(p))
        out[repl + k[len(prefix):]] = v.clone()
    # buffers the official files carry and reseg recomputes
    out["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    out["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    return out


def _tool():
    """The code of ``tools/convert_checkpoint.py``."""
    return importlib.import_module("reseg.tools.convert_checkpoint")


def _build(cfg: dict, seed: int):
    from mmengine.registry import DefaultScope

    from reseg.plugins import load_plugins
    from reseg.registry import MODELS, SCOPE

    load_plugins()
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope(SCOPE):
        return MODELS.build(cfg)


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok") / "tokenizer")


def _setup(method: str, tok_dir: str, folder: Path):
    """(config path, model cfg, reference model) for a tiny merged-LoRA model of ``method``."""
    from mmengine.config import Config

    cfg = tiny_model_cfg(tok_dir, head=HEADS[method])
    cfg["lmm"]["lora"] = None  # official releases have the LoRA merged
    path = folder / f"tiny_{method}.py"
    Config(dict(model=cfg)).dump(str(path))
    return str(path), cfg, _build(cfg, seed=0)


@pytest.fixture(scope="module")
def lisa(tok_dir, tmp_path_factory):
    cfg_path, cfg, model = _setup("lisa", tok_dir, tmp_path_factory.mktemp("cfg"))
    return cfg_path, cfg, model, to_official(model.state_dict())


def _write_hf_shards(sd: dict, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    keys = sorted(sd)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: sd[k].contiguous() for k in part}, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("method,src_kind,dst_ext", [("lisa", "shards", ".safetensors"),
                                                     ("read", "bin", ".pth"),
                                                     ("anchorseg", "safetensors", ".safetensors")])
def test_official_layout_round_trips_into_a_fresh_model(method, src_kind, dst_ext, tok_dir, tool, tmp_path, capsys):
    from reseg.engine.checkpoint import load_model_weights

    cfg_path, cfg, ref = _setup(method, tok_dir, tmp_path)
    official = to_official(ref.state_dict())
    if src_kind == "shards":
        src = tmp_path / "hf"
        _write_hf_shards(official, src)
    elif src_kind == "bin":
        src = tmp_path / "pytorch_model.bin"
        torch.save(official, src)
    else:
        from safetensors.torch import save_file

        src = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in official.items()}, str(src))
    dst = tmp_path / f"converted{dst_ext}"
    assert tool.main(["--from", method, str(src), str(dst), "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    assert "result: complete" in out and "rotary_emb.inv_freq" in out  # ignored buffers are reported
    if dst_ext == ".pth":
        assert set(torch.load(dst, weights_only=True)) == {"state_dict"}

    fresh = _build(cfg, seed=1)
    load_model_weights(fresh, str(dst), strict=True)
    got, want = fresh.state_dict(), ref.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_pure_mapping_without_config(lisa, tmp_path, tool):
    from reseg.convert import convert_state_dict

    _, _, model, official = lisa
    sd, report = convert_state_dict(official, "lisa")
    assert report.ok and not report.checked and len(report.ignored) == 2
    # without --config the mapping alone is written, in the installed transformers' layout
    assert set(sd) == set(model.state_dict())
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    src = tmp_path / "lisa.pth"
    torch.save({"state_dict": official}, src)
    dst = tmp_path / "out.safetensors"
    assert tool.main(["--from", "lisa", str(src), str(dst)]) == 0
    from reseg.engine.checkpoint import load_model_weights

    load_model_weights(model, str(dst), strict=True)


def test_older_transformers_layout_is_matched_by_alias():
    from reseg.convert import convert_state_dict, fit_to_target

    src = {"model.vision_tower.vision_tower.vision_model.post_layernorm.weight": torch.ones(3),
           "model.layers.0.self_attn.q_proj.weight": torch.ones(2, 2)}
    sd, report = convert_state_dict(src, "lisa")
    target = {"lmm.model.model.vision_tower.vision_model.post_layernorm.weight": (3,),
              "lmm.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight": (2, 2)}
    out = fit_to_target(sd, target, report)
    assert set(out) == set(target) and report.ok and len(report.aliased) == 2


def test_unknown_key_fails_strict_naming_it(lisa, tmp_path, tool, capsys):
    cfg_path, _, _, official = lisa
    bad = dict(official)
    bad["model.some_new_module.weight"] = torch.zeros(3)
    src = tmp_path / "src.bin"
    torch.save(bad, src)
    dst = tmp_path / "out.safetensors"
    assert tool.main(["--from", "lisa", str(src), str(dst), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "1 unmapped source key" in err and "model.some_new_module.weight" in err and "--non-strict" in err
    assert not dst.exists()


def test_missing_key_fails_strict_naming_it(lisa, tmp_path, tool, capsys):
    cfg_path, _, _, official = lisa
    bad = {k: v for k, v in official.items() if k != "model.text_hidden_fcs.0.2.bias"}
    src = tmp_path / "src.bin"
    torch.save(bad, src)
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "o.pth"), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "1 target key missing" in err and "head.projection.2.bias" in err


def test_shape_mismatch_names_the_key_and_both_shapes(lisa, tmp_path, tool, capsys):
    cfg_path, _, _, official = lisa
    bad = dict(official)
    bad["model.mm_projector.2.weight"] = torch.zeros(64, 48)
    src = tmp_path / "src.bin"
    torch.save(bad, src)
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "o.pth"), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "lmm.model.model.multi_modal_projector.linear_2.weight" in err
    assert "(64, 48)" in err and "(64, 64)" in err


def test_non_strict_writes_and_reports(lisa, tmp_path, tool, capsys):
    from reseg.engine.checkpoint import read_state_dict

    cfg_path, _, _, official = lisa
    bad = {k: v for k, v in official.items() if not k.startswith("model.text_hidden_fcs.")}
    bad["model.extra_thing.bias"] = torch.zeros(2)
    src = tmp_path / "src.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in bad.items()}, str(src))
    dst = tmp_path / "out.safetensors"
    assert tool.main(["--from", "lisa", str(src), str(dst), "--config", cfg_path, "--non-strict"]) == 0
    out = capsys.readouterr().out
    assert "unmapped source keys (1)" in out and "model.extra_thing.bias" in out
    assert "target keys missing (4)" in out and "head.projection.0.weight" in out and "INCOMPLETE" in out
    written = read_state_dict(str(dst))
    assert "mask_source.sam.mask_decoder.iou_token.weight" in written and "head.projection.0.weight" not in written
    # an existing DST is kept unless --overwrite
    assert tool.main(["--from", "lisa", str(src), str(dst), "--non-strict"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert tool.main(["--from", "lisa", str(src), str(dst), "--non-strict", "--overwrite"]) == 0


def test_lora_target_gets_base_layer_names_and_a_hint(lisa, tok_dir, tmp_path, tool, capsys):
    """A config with LoRA injected: merged weights land on ``base_layer``; the adapters are missing."""
    from mmengine.config import Config

    _, _, _, official = lisa
    cfg_path = tmp_path / "lora.py"
    Config(dict(model=tiny_model_cfg(tok_dir))).dump(str(cfg_path))
    src = tmp_path / "src.bin"
    torch.save(official, src)
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "o.pth"), "--config", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert "lora_A" in err and "model.lmm.lora=None" in err and "absent from the target" not in err
    # following the hint works
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "o.pth"), "--config", str(cfg_path),
                      "--cfg-options", "model.lmm.lora=None"]) == 0


def test_release_without_vision_tower_takes_it_from_a_clip_checkpoint(lisa, tmp_path, tool, capsys):
    """The official merge script saves everything but ``vision_tower``; --vision-tower fills it in."""
    from safetensors.torch import save_file

    from reseg.engine.checkpoint import load_model_weights

    cfg_path, cfg, ref, official = lisa
    release = {k: v for k, v in official.items() if "vision_tower" not in k}
    src = tmp_path / "release.bin"
    torch.save(release, src)
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "a.pth"), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "lmm.model.model.vision_tower.embeddings.class_embedding" in err and "--vision-tower" in err

    tower = "lmm.model.model.vision_tower."
    clip = {"vision_model." + k[len(tower):]: v.clone() for k, v in ref.state_dict().items() if k.startswith(tower)}
    clip["text_model.embeddings.token_embedding.weight"] = torch.zeros(5, 4)  # a full CLIPModel: text half skipped
    clip["logit_scale"] = torch.tensor(1.0)
    clip_dir = tmp_path / "clip"
    clip_dir.mkdir()
    save_file(clip, str(clip_dir / "model.safetensors"))
    dst = tmp_path / "b.safetensors"
    assert tool.main(["--from", "lisa", str(src), str(dst), "--config", cfg_path,
                      "--vision-tower", str(clip_dir)]) == 0
    fresh = _build(cfg, seed=2)
    load_model_weights(fresh, str(dst), strict=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    # a source that already has the tower refuses a second one
    src2 = tmp_path / "full.bin"
    torch.save(official, src2)
    assert tool.main(["--from", "lisa", str(src2), str(tmp_path / "c.pth"), "--vision-tower", str(clip_dir)]) == 1
    assert "already holds the vision tower" in capsys.readouterr().err


def test_single_linear_projector_is_explained(lisa, tmp_path, tool, capsys):
    _, _, _, official = lisa
    v1 = {k: v for k, v in official.items() if ".mm_projector." not in k}
    v1["model.mm_projector.weight"] = torch.zeros(64, 32)
    v1["model.mm_projector.bias"] = torch.zeros(64)
    src = tmp_path / "v1.bin"
    torch.save(v1, src)
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "o.pth")]) == 1
    err = capsys.readouterr().err
    assert "model.mm_projector.weight" in err and "LLaVA-1.5" in err


def test_cli_runs_as_a_script(tmp_path, lisa):
    import subprocess
    import sys

    _, _, _, official = lisa
    src = tmp_path / "src.bin"
    torch.save(official, src)
    dst = tmp_path / "out.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"), "--from", "lisa", str(src),
                        str(dst)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "result: complete" in r.stdout and dst.exists()


def test_lisa_single_linear_projector_expands_exactly(lisa, tok_dir, tmp_path, tool, capsys):
    """dvlab-research/LISA's LLaVA fork: ``mm_projector = nn.Linear`` (keys ``model.mm_projector.weight/bias``)."""
    from mmengine.config import Config

    from reseg.engine.checkpoint import load_model_weights

    gelu_cfg_path, _, _, _ = lisa
    cfg = tiny_model_cfg(tok_dir)
    cfg["lmm"]["lora"] = None
    cfg["lmm"]["tiny"]["projector_hidden_act"] = "linear"
    cfg_path = tmp_path / "linear.py"
    Config(dict(model=cfg)).dump(str(cfg_path))
    ref = _build(cfg, seed=0)
    proj = "lmm.model.model.multi_modal_projector."
    official = {k: v for k, v in to_official(ref.state_dict()).items() if ".mm_projector." not in k}
    official["model.mm_projector.weight"] = ref.state_dict()[proj + "linear_1.weight"].clone()
    official["model.mm_projector.bias"] = ref.state_dict()[proj + "linear_1.bias"].clone()
    src = tmp_path / "lisa_v1.bin"
    torch.save(official, src)
    dst = tmp_path / "o.safetensors"
    assert tool.main(["--from", "lisa", str(src), str(dst), "--config", str(cfg_path),
                      "--expand-linear-projector"]) == 0
    assert "identity" in capsys.readouterr().out
    fresh = _build(cfg, seed=3)
    load_model_weights(fresh, str(dst), strict=True)
    got = fresh.state_dict()
    assert torch.equal(got[proj + "linear_2.weight"], torch.eye(64)) and not got[proj + "linear_2.bias"].any()
    x = torch.randn(5, 32)
    single = torch.nn.functional.linear(x, official["model.mm_projector.weight"], official["model.mm_projector.bias"])
    assert torch.equal(fresh.lmm.model.model.multi_modal_projector(x), single)
    for k, v in ref.state_dict().items():
        if not k.startswith(proj + "linear_2."):
            assert torch.equal(got[k], v), k
    # a GELU target would compute another function: refused
    assert tool.main(["--from", "lisa", str(src), str(tmp_path / "g.pth"), "--config", gelu_cfg_path,
                      "--expand-linear-projector"]) == 1
    assert "projector_hidden_act" in capsys.readouterr().err
