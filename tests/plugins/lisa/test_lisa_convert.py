"""``--from lisa``: LISA's releases are the [SEG] family's shared layout (reseg_lisa/convert.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from official_layout import assert_same_weights, build_model, merged_model, to_official, write_source
from reseg.convert import BUFFERS_IGNORED, SEG_FAMILY_RULES, get_converter

ROOT = Path(__file__).resolve().parents[3]


def test_lisa_rules_are_the_shared_layout():
    lisa = get_converter("lisa")
    assert lisa.rules == SEG_FAMILY_RULES and lisa.ignored == BUFFERS_IGNORED
    assert ("dvlab-research/LISA", "model/LISA.py") in lisa.key_sources


def test_official_lisa_release_round_trips_through_the_script(tmp_path):
    """A Hugging Face directory of shards, converted by the tool run as a script, loads into a fresh model."""
    from reseg.engine.checkpoint import load_model_weights

    cfg_path, cfg, ref = merged_model("LISAHead", str(tmp_path / "tok"), tmp_path)
    src = write_source(to_official(ref.state_dict()), "shards", tmp_path)
    dst = tmp_path / "lisa.safetensors"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"), "--from", "lisa", str(src),
                          str(dst), "--config", cfg_path], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "method: lisa" in run.stdout and "result: complete" in run.stdout
    fresh = build_model(cfg, seed=1)
    load_model_weights(fresh, str(dst), strict=True)
    assert_same_weights(fresh, ref)
    assert not torch.equal(build_model(cfg, seed=1).state_dict()["head.projection.0.weight"],
                           ref.state_dict()["head.projection.0.weight"])  # the weights came from the file
