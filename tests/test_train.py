"""End-to-end training through the mmengine Runner: loss goes down, kill + resume, third-party head."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tiny import tiny_train_cfg

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _losses(runner) -> list[float]:
    return [float(x) for x in runner.message_hub.get_scalar("train/loss").data[0]]


def test_tiny_training_loss_goes_down_and_validation_scores(synth_root, tmp_path):
    from reseg.engine.runner import build_runner

    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "work"), max_iters=30,
                         batch_size=4, ckpt_interval=30)
    runner = build_runner(cfg)
    runner.train()
    losses = _losses(runner)
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"loss did not go down: {first:.3f} -> {last:.3f}"
    val = runner.val_loop.run()
    assert 0.0 <= val["seg/gIoU"] <= 1.0 and val["seg/n_queries"] > 0
    assert {"seg/synthref/gIoU", "seg/ReasonSeg/gIoU"} <= set(val)


def _write_cfg(cfg, path: Path) -> str:
    cfg.dump(str(path))
    return str(path)


def _train_cmd(cfg_path: str, *extra: str) -> list[str]:
    return [PY, str(ROOT / "tools" / "train.py"), cfg_path, *extra]


def _env(**extra: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def test_killed_run_resumes_from_its_last_checkpoint(synth_root, tmp_path):
    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=12, batch_size=2, ckpt_interval=4)
    cfg.train_cfg.val_interval = 1000  # no validation in this test
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    proc = subprocess.Popen(_train_cmd(path), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not (work / "iter_8.pth").exists():
        assert proc.poll() is None, f"training exited early:\n{proc.stdout.read()}"
        assert time.time() < deadline, "no checkpoint at iteration 8 in time"
        time.sleep(0.2)
    time.sleep(0.5)  # let the write of iter_8 complete
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (work / "iter_12.pth").exists()

    # Without --resume the work dir is protected.
    again = subprocess.run(_train_cmd(path), cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert again.returncode != 0 and "--resume" in again.stderr

    done = subprocess.run(_train_cmd(path, "--resume"), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "resumed epoch: 0, iter: 8" in log
    ckpt = torch.load(work / "iter_12.pth", map_location="cpu", weights_only=True)  # plain, safe
    assert ckpt["meta"]["iter"] == 12


def test_thirdparty_head_plugin_trains_with_the_same_tools(synth_root, tmp_path):
    from test_plugins import _install_fixtures

    site = _install_fixtures(tmp_path / "plugins")
    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=3, batch_size=2,
                         head="ThirdPartyHead", ckpt_interval=3)
    cfg.train_cfg.val_interval = 1000
    path = _write_cfg(cfg, tmp_path / "cfg.py")
    env = _env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
               RESEG_DISABLED_PLUGINS="broken,halfway")
    done = subprocess.run(_train_cmd(path), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (work / "iter_3.pth").exists()
    sd = torch.load(work / "iter_3.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("head.projection") for k in sd)
