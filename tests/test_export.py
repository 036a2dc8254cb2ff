"""``tools/export.py`` / :mod:`reseg.export`: a LoRA tiny LISA exported (LoRA merged) and reloaded."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from tiny import tiny_model_cfg

ROOT = Path(__file__).resolve().parents[1]


def _predict(model, img):
    from reseg.structures import Query, Sample

    h, w = img.shape[:2]
    qs = [Query(text="the red square", masks=np.zeros((0, h, w), bool)),
          Query(text="what is red here?", masks=np.zeros((0, h, w), bool), is_sentence=True)]
    with torch.no_grad():
        preds = model.predict([Sample(image=img, queries=qs)])[0]["predictions"]
    return [torch.as_tensor(p.masks).detach().float().cpu() for p in preds]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny LISA with a non-trivial LoRA, its config + checkpoint, and its export by the CLI."""
    from reseg.engine.checkpoint import save_model_weights
    from reseg.plugins import load_plugins
    from reseg.registry import MODELS

    load_plugins()
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    cfg = Config(dict(default_scope="reseg", model=tiny_model_cfg(str(tmp / "tok"), head="LISAHead")))
    assert cfg.model.lmm.lora  # the tiny LMM has LoRA on q/v
    cfg_path = str(tmp / "lisa_lora.py")
    cfg.dump(cfg_path)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():  # lora_B starts at zero: make the merge change the weights
        n = 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
                n += 1
    assert n > 0
    ckpt = save_model_weights(model, str(tmp / "lisa_lora.safetensors"))
    out = tmp / "out"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), cfg_path, ckpt, str(out)],
                         capture_output=True, text=True, cwd=str(tmp),
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    img = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img[12:24, 16:32] = (220, 30, 30)
    return dict(tmp=tmp, cfg=cfg_path, ckpt=ckpt, out=out, model=model, img=img, run=run)


def test_export_reloads_with_identical_predictions(exported):
    from reseg.export import load_exported

    out, model, img = exported["out"], exported["model"], exported["img"]
    assert sorted(p.name for p in out.iterdir()) == ["llava", "reseg_export.json", "reseg_extra.safetensors"]
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    info = json.loads((out / "reseg_export.json").read_text())
    assert info["lora"]["merged"] and len(info["lora"]["modules"]) == 4  # q/v x 2 layers
    assert info["lora"]["peft_config"]["default"]["r"] == 4
    assert info["checkpoint"] == os.path.abspath(exported["ckpt"]) and info["config"]["model"]["lmm"]["lora"]
    assert info["versions"]["torch"] and info["versions"]["transformers"]

    seg = load_exported(out, device="cpu")
    new = seg.model
    assert not new.training and new.lmm.model.config.text_config.vocab_size == info["vocab_size"]
    # [SEG] is in the saved tokenizer: same id, no second embedding row added on reload
    assert new.head.token_ids == model.head.token_ids == info["head_tokens"]
    assert len(new.lmm.tokenizer) == len(model.lmm.tokenizer)
    assert new.lmm.model.get_input_embeddings().weight.shape == model.lmm.model.get_input_embeddings().weight.shape
    assert not any("lora_" in k for k in new.state_dict())

    ref, got = _predict(model, img), _predict(new, img)
    assert len(ref) == len(got) == 2
    for a, b in zip(ref, got):
        assert a.numel() > 0 and a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5), (a - b).abs().max()
    # the merge mattered: without the LoRA update, the predictions differ
    with torch.no_grad():
        saved = {n: p.clone() for n, p in model.named_parameters() if "lora_B" in n}
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.zero_()
        plain = _predict(model, img)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(saved[n])
    assert any(not torch.allclose(a, c, atol=1e-4) for a, c in zip(ref, plain))

    r1, r2 = seg.segment(img, ["the red square", "what is red here?"])
    assert torch.allclose(torch.as_tensor(r1.prediction.masks).float(), ref[0], atol=1e-5, rtol=1e-5)
    assert r2.mask.shape == (48, 64)


def test_llava_dir_loads_in_transformers_without_lora(exported):
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaForConditionalGeneration

    llava = exported["out"] / "llava"
    assert list(llava.glob("*.safetensors")) and not list(llava.glob("*.bin"))
    hf, info = LlavaForConditionalGeneration.from_pretrained(str(llava), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not any("lora" in k for k in hf.state_dict())
    tok = AutoTokenizer.from_pretrained(str(llava))
    assert "[SEG]" in tok.get_vocab()
    assert tok.convert_tokens_to_ids("[SEG]") == exported["model"].head.token_ids["[SEG]"]
    assert hf.get_input_embeddings().weight.shape[0] == len(tok)
    CLIPImageProcessor.from_pretrained(str(llava))
    # the merged q_proj = W + scale * B @ A of the trained model
    lin = exported["model"].lmm.model.model.language_model.layers[0].self_attn.q_proj
    want = lin.base_layer.weight + lin.scaling["default"] * lin.lora_B["default"].weight @ lin.lora_A["default"].weight
    got = hf.model.language_model.layers[0].self_attn.q_proj.weight
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, lin.base_layer.weight, atol=1e-3)


def test_refuses_a_non_empty_out_dir_and_a_failure_keeps_the_old_export(exported, monkeypatch):
    import reseg.export as export

    out = exported["out"]
    before = (out / "reseg_export.json").read_text()
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), exported["cfg"], exported["ckpt"],
                          str(out)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode != 0 and "not empty" in run.stderr and "--overwrite" in run.stderr
    assert str(out) in run.stderr
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_model(exported["cfg"], exported["ckpt"], out)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "_write_extra", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_model(exported["cfg"], exported["ckpt"], out, overwrite=True)
    assert (out / "reseg_export.json").read_text() == before  # the previous export is untouched
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    with pytest.raises(FileNotFoundError, match="not a \\(complete\\) reseg export"):
        export.load_exported(out / "llava")
