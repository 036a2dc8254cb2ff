"""A third-party proposer feeds the RAS head without touching reseg's code.

The ``reseg-thirdparty-proposer`` fixture distribution (``StripeProposer``) is installed into a temporary
target directory as in ``tests/test_third_party_proposer.py``; a fresh interpreter (with that directory
and ``tests/``, for the tiny model config, on ``PYTHONPATH``) builds a tiny RAS model whose config names
the plugin's proposer, and selects among its stripes for a query.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from test_third_party_proposer import FIXTURE, _env, install_fixture

PROBE = textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from tiny import tiny_lmm_cfg
    from reseg.plugins import load_plugins
    from reseg.registry import MODELS
    from reseg.structures import Query, Sample

    load_plugins()

    lmm = tiny_lmm_cfg({tok!r}, lora=None, trainable_modules="all")
    cfg = dict(type="ReasoningSegmentor", lmm=lmm, head=dict(type="RASHead"),
               mask_source=dict(type="CandidatePoolSource", pool="proposer",
                                proposer=dict(type="StripeProposer", stripes=4, min_area=0),
                                tokenizer=dict(type="MaskTokenizer",
                                               encoders=[dict(type="PositionEncoding", channels=8, grid=4)])))
    torch.manual_seed(0)
    model = MODELS.build(cfg).eval()
    image = np.zeros((16, 12, 3), np.uint8)
    target = np.zeros((1, 16, 12), bool)
    target[0, :4] = True  # the top stripe
    sample = Sample(image=image, queries=[Query(text="the top band", masks=target)], task="gres",
                    meta=dict(sample_id="s0", image_id="s0"))
    with torch.no_grad():
        pred = model.predict([sample])[0]["predictions"][0]
    model.train()
    samples, _ = model.mask_source.prepare([sample])
    labels = model.head.sample_labels(samples[0], 0).tolist()
    loss = model([sample], mode="loss")["loss_select"]
    loss.backward()
    print(json.dumps(dict(n=len(pred.extras["candidate_probs"]), selected=pred.selected,
                          union_rows=np.flatnonzero(pred.binary_mask().any(1)).tolist(),
                          expected_rows=sorted({{r for i in pred.selected for r in range(16)
                                                if samples[0].candidate_masks[i][r].any()}}),
                          pool_source=samples[0].meta["pool_source"], labels=labels,
                          loss=float(loss))))
    """
)


def test_a_plugin_proposer_feeds_the_ras_head(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("thirdparty_proposer_ras")
    site = install_fixture(root)
    code = PROBE.format(tok=str(root / "tok"))
    env = _env(site)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(FIXTURE.parents[1])])  # tests/: tiny.py
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["n"] == 4 and out["pool_source"] == "StripeProposer"
    # the top stripe (rows 0-3) is the target: coverage labels mark it alone
    assert out["labels"] == [1, 0, 0, 0]
    assert out["union_rows"] == out["expected_rows"]
    assert out["loss"] > 0
