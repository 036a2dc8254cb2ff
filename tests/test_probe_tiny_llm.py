"""tools/research/probe_tiny_llm.py: the copy probe runs on a tiny config in each image-token mode and its
saved state dict loads as ``model.lmm.tiny.checkpoint``."""
from __future__ import annotations

import re

import pytest
import torch

from tiny import tiny_lmm_cfg


@pytest.mark.parametrize("mode", ["none", "noise", "real"])
def test_probe_reports_first_word_accuracy_and_saves_a_loadable_llava(synth_root, tmp_path, mode, capsys):
    from reseg.research import probe_tiny_llm

    lmm = tiny_lmm_cfg(str(tmp_path / "tokenizer"), lora=None)
    cfg = tmp_path / "probe_cfg.py"
    cfg.write_text(f"model = dict(lmm={lmm!r}, head=dict(type='LISAHead', system_prompt=''))\n")
    out = tmp_path / "llm.pth"
    assert probe_tiny_llm.main(["--config", str(cfg), "--data", str(synth_root), "--image-tokens", mode,
                                "--steps", "2", "--batch", "2", "--val-images", "2", "--save", str(out)]) == 0
    m = re.search(rf"image tokens {mode}: first-word accuracy ([0-9.]+) on (\d+) validation", capsys.readouterr().out)
    assert m and 0.0 <= float(m.group(1)) <= 1.0 and int(m.group(2)) > 0

    from reseg.registry import LMMS

    reload = dict(lmm, tiny=dict(lmm["tiny"], checkpoint=str(out)))
    saved = torch.load(out, weights_only=True)
    built = LMMS.build(reload).model.state_dict()
    assert all(torch.equal(built[k], v) for k, v in saved.items())


def test_expression_drops_only_a_leading_article():
    from reseg.research.tiny import expression  # shared by pretrain_tiny's copy answers and the probe

    assert expression("the blue star") == "blue star"
    assert expression("star to the left of the red one.") == "star to the left of the red one"
    assert expression("the") == "the"
