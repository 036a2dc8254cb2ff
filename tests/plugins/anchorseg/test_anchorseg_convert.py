"""``--from anchorseg``: the shared layout plus AnchorSeg's own modules (reseg_anchorseg/convert.py)."""
from __future__ import annotations

import pytest
import torch

from official_layout import assert_same_weights, build_model, merged_model, to_official, write_source
from reseg.convert import main

#: AnchorSeg's reseg names -> official names (model/AnchorSeg.py, model/segment_anything/modeling/mask_decoder.py)
ANCHORSEG_TO_OFFICIAL = [
    ("head.latent_projection.", "model.latent_hidden_fcs.0."),
    ("head.slot_pos", "model.visual_model.mask_decoder.latent_token_positional_embedding"),
    ("head.mask_token_pos", "model.visual_model.mask_decoder.positional_embedding"),
]
#: What a release trained with --separate_mm_projector adds (model/llava/model/llava_arch.py:
#: out_mm_projector = Sequential(Linear(mm_hidden, hidden), GELU, Linear(hidden, hidden))), tiny sizes.
OUT_MM_PROJECTOR = {
    "model.out_mm_projector.0.weight": (64, 32), "model.out_mm_projector.0.bias": (64,),
    "model.out_mm_projector.2.weight": (64, 64), "model.out_mm_projector.2.bias": (64,),
}


@pytest.fixture(scope="module")
def anchorseg(tmp_path_factory):
    folder = tmp_path_factory.mktemp("anchorseg")
    cfg_path, cfg, ref = merged_model("AnchorSegHead", str(folder / "tok"), folder, num_latents=3)
    official = to_official(ref.state_dict(), extra=ANCHORSEG_TO_OFFICIAL)
    official["model.decoder_modules_initialized"] = torch.tensor(True)
    official["ppm.policy.0.weight"] = torch.zeros(2, 2)
    return cfg_path, cfg, ref, official


def test_official_anchorseg_release_round_trips_into_a_fresh_model(anchorseg, tmp_path, capsys):
    from reseg.engine.checkpoint import load_model_weights

    cfg_path, cfg, ref, official = anchorseg
    src = write_source(official, "safetensors", tmp_path)
    dst = tmp_path / "converted.safetensors"
    assert main(["--from", "anchorseg", str(src), str(dst), "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    assert "result: complete" in out and "decoder_modules_initialized" in out and "ppm.policy.0.weight" in out
    fresh = build_model(cfg, seed=1)
    load_model_weights(fresh, str(dst), strict=True)
    assert_same_weights(fresh, ref)


def test_separate_mm_projector_release_imports_and_reports_the_four_ignored_keys(anchorseg, tmp_path, capsys):
    """AnchorSeg's released recipe trains with --separate_mm_projector; its out_mm_projector is never
    read at inference, so strict conversion drops its 4 tensors and lists them (they were refused)."""
    from reseg.engine.checkpoint import load_model_weights

    cfg_path, cfg, ref, official = anchorseg
    release = dict(official, **{k: torch.randn(shape) for k, shape in OUT_MM_PROJECTOR.items()})
    src = write_source(release, "bin", tmp_path)
    dst = tmp_path / "converted.pth"
    assert main(["--from", "anchorseg", str(src), str(dst), "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    assert "result: complete" in out
    ignored = [line for line in out.splitlines() if "out_mm_projector" in line]
    assert sorted(line.split()[0] for line in ignored) == sorted(OUT_MM_PROJECTOR)
    assert all("--separate_mm_projector" in line and "llava_arch.py" in line for line in ignored)
    fresh = build_model(cfg, seed=1)
    load_model_weights(fresh, str(dst), strict=True)
    assert_same_weights(fresh, ref)


def test_other_keys_under_out_mm_projector_are_still_refused(anchorseg, tmp_path, capsys):
    """Only the two Linear layers of the separate projector are known; anything else there is unmapped."""
    cfg_path, _, _, official = anchorseg
    release = dict(official, **{"model.out_mm_projector.4.weight": torch.zeros(3)})
    src = write_source(release, "bin", tmp_path)
    assert main(["--from", "anchorseg", str(src), str(tmp_path / "o.pth"), "--config", cfg_path]) == 1
    err = capsys.readouterr().err
    assert "1 unmapped source key" in err and "model.out_mm_projector.4.weight" in err
