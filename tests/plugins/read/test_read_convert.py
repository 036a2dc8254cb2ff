"""``--from read``: READ composes the core's shared layout itself (reseg_read/convert.py), so it needs
no other plugin."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from official_layout import assert_same_weights, build_model, merged_model, to_official, write_source
from reseg.convert import BUFFERS_IGNORED, SEG_FAMILY_RULES, get_converter

ROOT = Path(__file__).resolve().parents[3]


def test_read_rules_are_the_shared_layout_read_from_reads_model_file():
    read = get_converter("read")
    assert read.rules == SEG_FAMILY_RULES and read.ignored == BUFFERS_IGNORED
    assert ("rui-qian/READ", "model/READ.py") in read.key_sources


def test_official_read_release_converts_with_only_the_read_plugin_loaded(tmp_path):
    """``RESEG_PLUGINS=read``: the LISA plugin is not loaded, and --from read still converts a
    ``pytorch_model.bin`` release into a ``.pth`` that loads into a fresh READ model."""
    from reseg.engine.checkpoint import load_model_weights

    _, cfg, ref = merged_model("READHead", str(tmp_path / "tok"), tmp_path)
    src = write_source(to_official(ref.state_dict()), "bin", tmp_path)
    dst = tmp_path / "read.pth"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", RESEG_PLUGINS="read")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"), "--from", "read", str(src),
                          str(dst)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "method: read" in run.stdout and "result: complete" in run.stdout
    assert set(torch.load(dst, weights_only=True)) == {"state_dict"}
    fresh = build_model(cfg, seed=1)
    load_model_weights(fresh, str(dst), strict=True)
    assert_same_weights(fresh, ref)
    other = subprocess.run([sys.executable, str(ROOT / "tools" / "convert_checkpoint.py"), "--from", "lisa", str(src),
                            str(tmp_path / "x.pth")], capture_output=True, text=True, env=env, timeout=300)
    assert other.returncode == 2 and "registered: read (plugin read)" in other.stderr
    assert "lisa (not in RESEG_PLUGINS)" in other.stderr
