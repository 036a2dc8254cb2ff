"""The core of checkpoint import: the converter registry and the building blocks the [SEG] family shares.

Nothing here uses a built-in method's converter: a converter made of the core's shared layout alone
(``SEG_FAMILY_RULES``) is registered by an inline plugin, as a third-party method would. Each
method's own rules are tested beside its plugin (``tests/plugins/<name>/``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from official_layout import assert_same_weights, build_model, merged_model, to_official, write_source
from reseg.convert import (
    BUFFERS_IGNORED,
    SEG_FAMILY_RULES,
    CheckpointConverter,
    UnknownConverterError,
    convert_state_dict,
    fit_to_target,
    get_converter,
    main,
)
from reseg.plugin_api import hookimpl
from tiny import tiny_model_cfg

ROOT = Path(__file__).resolve().parents[1]
NAME = "shared-layout"  # the inline plugin's converter name


class SharedLayoutConverter(CheckpointConverter):
    """The [SEG] family's shared layout and nothing else (what a LISA-like release holds)."""

    rules = SEG_FAMILY_RULES
    ignored = BUFFERS_IGNORED


class SharedLayoutPlugin:
    @hookimpl
    def register_checkpoint_converters(self, register):
        register(SharedLayoutConverter, name=NAME)


@pytest.fixture(scope="module", autouse=True)
def shared_layout_plugin():
    from reseg import plugins

    plugins.register_plugin(SharedLayoutPlugin(), name="shared_layout_for_tests")
    yield
    plugins.unregister_plugin("shared_layout_for_tests")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="module")
def lisa(tok_dir, tmp_path_factory):
    """(config path, model cfg, model, its official state dict) of a tiny merged [SEG] model."""
    cfg_path, cfg, model = merged_model("LISAHead", tok_dir, tmp_path_factory.mktemp("cfg"))
    return cfg_path, cfg, model, to_official(model.state_dict())


def test_a_plugin_registered_converter_is_found_by_name(lisa):
    from reseg.plugins import registered_by

    converter = get_converter(NAME)
    assert isinstance(converter, SharedLayoutConverter) and converter.name == NAME
    assert registered_by("checkpoint_converters", NAME) == "shared_layout_for_tests"


def test_an_unknown_name_lists_every_registered_converter_in_one_line(tmp_path, capsys):
    with pytest.raises(UnknownConverterError) as err:
        get_converter("shared_layout")
    msg = str(err.value)
    assert "\n" not in msg and "did you mean 'shared-layout'?" in msg
    for name in ("lisa", "read", "anchorseg", NAME):  # the built-in plugins' and a third party's
        assert f"{name} (plugin " in msg, msg
    assert main(["--from", "nosuch", str(tmp_path / "a.bin"), str(tmp_path / "b.pth")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.startswith("error: --from: no checkpoint converter named 'nosuch'; registered: ")
    assert f"{NAME} (plugin shared_layout_for_tests)" in err_text


def test_pure_mapping_without_config(lisa, tmp_path):
    _, _, model, official = lisa
    sd, report = convert_state_dict(official, NAME)
    assert report.ok and not report.checked and report.method == NAME and len(report.ignored) == 2
    # without --config the mapping alone is written, in the installed transformers' layout
    assert set(sd) == set(model.state_dict())
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())
    src = tmp_path / "lisa.pth"
    torch.save({"state_dict": official}, src)
    dst = tmp_path / "out.safetensors"
    assert main(["--from", NAME, str(src), str(dst)]) == 0
    from reseg.engine.checkpoint import load_model_weights

    load_model_weights(model, str(dst), strict=True)


@pytest.mark.parametrize("kind,ext", [("shards", ".safetensors"), ("bin", ".pth"), ("safetensors", ".pth")])
def test_every_release_format_round_trips_into_a_fresh_model(lisa, kind, ext, tmp_path, capsys):
    cfg_path, cfg, ref, official = lisa
    src = write_source(official, kind, tmp_path)
    dst = tmp_path / f"converted{ext}"
    assert main(["--from", NAME, str(src), str(dst), "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    assert "result: complete" in out and "rotary_emb.inv_freq" in out  # ignored buffers are reported
    if ext == ".pth":
        assert set(torch.load(dst, weights_only=True)) == {"state_dict"}
    from reseg.engine.checkpoint import load_model_weights

    fresh = build_model(cfg, seed=1)
    load_model_weights(fresh, str(dst), strict=True)
    assert_same_weights(fresh, ref)


def test_older_transformers_layout_is_matched_by_alias():
    src = {"model.vision_tower.vision_tower.vision_model.post_layernorm.weight": torch.ones(3),
           "model.layers.0.self_attn.q_proj.weight": torch.ones(2, 2)}
    sd, report = convert_state_dict(src, SharedLayoutConverter(NAME))
    target = {"lmm.model.model.vision_tower.vision_model.post_layernorm.weight": (3,),
              "lmm.model.model.language_model.layers.0.self_attn.q_proj.base_layer.weight": (2, 2)}
    out = fit_to_target(sd, target, report)
    assert set(out) == set(target) and report.ok and len(report.aliased) == 2


def test_unknown_key_fails_strict_naming_it(lisa, tmp_path, capsys):
    cfg_path, _, _, official = lisa
    bad = dict(official)
    bad["model.some_new_module.weight"] = torch.zeros(3)
    src = tmp_path / "src.bin"
    torch.save(bad, src)
    dst = tmp_path / "out.safetensors"
    assert main(["--from", NAME, str(src), str(dst), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "1 unmapped source key" in err and "model.some_new_module.weight" in err and "--non-strict" in err
    assert not dst.exists()


def test_missing_key_fails_strict_naming_it(lisa, tmp_path, capsys):
    cfg_path, _, _, official = lisa
    bad = {k: v for k, v in official.items() if k != "model.text_hidden_fcs.0.2.bias"}
    src = tmp_path / "src.bin"
    torch.save(bad, src)
    assert main(["--from", NAME, str(src), str(tmp_path / "o.pth"), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "1 target key missing" in err and "head.projection.2.bias" in err


def test_shape_mismatch_names_the_key_and_both_shapes(lisa, tmp_path, capsys):
    cfg_path, _, _, official = lisa
    bad = dict(official)
    bad["model.mm_projector.2.weight"] = torch.zeros(64, 48)
    src = tmp_path / "src.bin"
    torch.save(bad, src)
    assert main(["--from", NAME, str(src), str(tmp_path / "o.pth"), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "lmm.model.model.multi_modal_projector.linear_2.weight" in err
    assert "(64, 48)" in err and "(64, 64)" in err


def test_non_strict_writes_and_reports(lisa, tmp_path, capsys):
    from safetensors.torch import save_file

    from reseg.engine.checkpoint import read_state_dict

    cfg_path, _, _, official = lisa
    bad = {k: v for k, v in official.items() if not k.startswith("model.text_hidden_fcs.")}
    bad["model.extra_thing.bias"] = torch.zeros(2)
    src = tmp_path / "src.safetensors"
    save_file({k: v.contiguous() for k, v in bad.items()}, str(src))
    dst = tmp_path / "out.safetensors"
    assert main(["--from", NAME, str(src), str(dst), "--config", cfg_path, "--non-strict"]) == 0
    out = capsys.readouterr().out
    assert "unmapped source keys (1)" in out and "model.extra_thing.bias" in out
    assert "target keys missing (4)" in out and "head.projection.0.weight" in out and "INCOMPLETE" in out
    written = read_state_dict(str(dst))
    assert "mask_source.sam.mask_decoder.iou_token.weight" in written and "head.projection.0.weight" not in written
    # an existing DST is kept unless --overwrite
    assert main(["--from", NAME, str(src), str(dst), "--non-strict"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(["--from", NAME, str(src), str(dst), "--non-strict", "--overwrite"]) == 0


def test_lora_target_gets_base_layer_names_and_a_hint(lisa, tok_dir, tmp_path, capsys):
    """A config with LoRA injected: merged weights land on ``base_layer``; the adapters are missing."""
    from mmengine.config import Config

    _, _, _, official = lisa
    cfg_path = tmp_path / "lora.py"
    Config(dict(model=tiny_model_cfg(tok_dir))).dump(str(cfg_path))
    src = tmp_path / "src.bin"
    torch.save(official, src)
    assert main(["--from", NAME, str(src), str(tmp_path / "o.pth"), "--config", str(cfg_path)]) == 1
    err = capsys.readouterr().err
    assert "lora_A" in err and "model.lmm.lora=None" in err and "absent from the target" not in err
    # following the hint works
    assert main(["--from", NAME, str(src), str(tmp_path / "o.pth"), "--config", str(cfg_path),
                 "--cfg-options", "model.lmm.lora=None"]) == 0


def test_release_without_vision_tower_takes_it_from_a_clip_checkpoint(lisa, tmp_path, capsys):
    """The official merge scripts save everything but ``vision_tower``; --vision-tower fills it in."""
    from safetensors.torch import save_file

    from reseg.engine.checkpoint import load_model_weights

    cfg_path, cfg, ref, official = lisa
    release = {k: v for k, v in official.items() if "vision_tower" not in k}
    src = tmp_path / "release.bin"
    torch.save(release, src)
    assert main(["--from", NAME, str(src), str(tmp_path / "a.pth"), "--config", cfg_path]) == 1
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
    assert main(["--from", NAME, str(src), str(dst), "--config", cfg_path, "--vision-tower", str(clip_dir)]) == 0
    fresh = build_model(cfg, seed=2)
    load_model_weights(fresh, str(dst), strict=True)
    assert_same_weights(fresh, ref)
    # a source that already has the tower refuses a second one
    src2 = tmp_path / "full.bin"
    torch.save(official, src2)
    assert main(["--from", NAME, str(src2), str(tmp_path / "c.pth"), "--vision-tower", str(clip_dir)]) == 1
    assert "already holds the vision tower" in capsys.readouterr().err


def test_single_linear_projector_is_explained(lisa, tmp_path, capsys):
    _, _, _, official = lisa
    v1 = {k: v for k, v in official.items() if ".mm_projector." not in k}
    v1["model.mm_projector.weight"] = torch.zeros(64, 32)
    v1["model.mm_projector.bias"] = torch.zeros(64)
    src = tmp_path / "v1.bin"
    torch.save(v1, src)
    assert main(["--from", NAME, str(src), str(tmp_path / "o.pth")]) == 1
    err = capsys.readouterr().err
    assert "model.mm_projector.weight" in err and "LLaVA-1.5" in err and "--expand-linear-projector" in err


def test_single_linear_projector_expands_exactly(lisa, tok_dir, tmp_path, capsys):
    """dvlab-research/LISA's LLaVA fork: ``mm_projector = nn.Linear`` (keys ``model.mm_projector.weight/bias``)."""
    from mmengine.config import Config

    from reseg.engine.checkpoint import load_model_weights

    gelu_cfg_path, _, _, _ = lisa
    cfg = tiny_model_cfg(tok_dir)
    cfg["lmm"]["lora"] = None
    cfg["lmm"]["tiny"]["projector_hidden_act"] = "linear"
    cfg_path = tmp_path / "linear.py"
    Config(dict(model=cfg)).dump(str(cfg_path))
    ref = build_model(cfg, seed=0)
    proj = "lmm.model.model.multi_modal_projector."
    official = {k: v for k, v in to_official(ref.state_dict()).items() if ".mm_projector." not in k}
    official["model.mm_projector.weight"] = ref.state_dict()[proj + "linear_1.weight"].clone()
    official["model.mm_projector.bias"] = ref.state_dict()[proj + "linear_1.bias"].clone()
    src = tmp_path / "lisa_v1.bin"
    torch.save(official, src)
    dst = tmp_path / "o.safetensors"
    assert main(["--from", NAME, str(src), str(dst), "--config", str(cfg_path), "--expand-linear-projector"]) == 0
    assert "identity" in capsys.readouterr().out
    fresh = build_model(cfg, seed=3)
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
    assert main(["--from", NAME, str(src), str(tmp_path / "g.pth"), "--config", gelu_cfg_path,
                 "--expand-linear-projector"]) == 1
    assert "projector_hidden_act" in capsys.readouterr().err


def test_v1_module_tables_are_derived_from_the_registered_converters():
    """``reseg.convert.METHODS`` / ``RULES`` / ``IGNORED`` / ``KEY_SOURCES`` and ``map_key`` keep working."""
    import reseg.convert as convert

    assert {"lisa", "read", "anchorseg", NAME} <= set(convert.METHODS)
    assert convert.RULES[NAME] == list(SEG_FAMILY_RULES) and convert.IGNORED[NAME] == list(BUFFERS_IGNORED)
    assert convert.map_key("model.text_hidden_fcs.0.2.bias", NAME) == "head.projection.2.bias"
    assert convert.map_key("model.unknown", NAME) is None


def test_no_plugin_imports_another():
    """Each built-in plugin's entry point and checkpoint converter name no other plugin's package."""
    names = [p.name for p in (ROOT / "plugins").iterdir() if p.name.startswith("reseg_")]
    for name in names:
        for path in [ROOT / "plugins" / name / f for f in ("convert.py", "plugin.py")
                     if (ROOT / "plugins" / name / f).exists()]:
            text = path.read_text()
            assert not [other for other in names if other != name and other in text], path
