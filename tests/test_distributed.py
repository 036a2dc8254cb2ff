"""Distributed training on CPU: ``torchrun --nproc-per-node 2 tools/train.py CFG --launcher pytorch`` (gloo).

Two processes at 4 images each must train exactly like one process at 8 images: the same logged loss
curve, the same weights after the run, and a validation that scores every sample once. That holds
when (a) the global batch is the same set of samples (mmengine's ``InfiniteSampler`` interleaves
ranks over one shuffled order), (b) every random choice depends on the sample, not on the process
that draws it (``MixedDataset`` keys its draws and the head's template choice by ``(seed, epoch,
index)``), and (c) the ranks' loss denominators are equal (one query per image and a single answer
template here; LISA normalises per rank, as its DeepSpeed training does).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny import tiny_train_cfg

ROOT = Path(__file__).resolve().parents[1]
ITERS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(synth_root, tmp_path: Path, name: str, batch_size: int) -> Path:
    work = tmp_path / name
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=ITERS, batch_size=batch_size,
                         ckpt_interval=ITERS)
    root = str(synth_root)
    refer = dict(type="RefCOCODataset", data_root=root + "/refer_seg", dataset="synthref", split_by="unc",
                 image_dir=root + "/refer_seg/images/synthref", split="train", num_queries_per_sample=1)
    cfg.train_dataloader.dataset = dict(type="MixedDataset", datasets=[refer], length=64, seed=0)
    cfg.model.head.update(answers=["It is {seg}."])
    cfg.visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend")])
    path = tmp_path / f"{name}.py"
    cfg.dump(str(path))
    return path


def _run(cmd: list[str]) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout + done.stderr


def _scalars(work: Path) -> tuple[list[dict], dict]:
    (path,) = work.glob("*/vis_data/scalars.json")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "seg/n_queries" in r]
    assert len(train) == ITERS and len(val) == 1, rows
    return train, val[0]


def test_two_gloo_processes_train_like_one_process_at_the_same_global_batch(synth_root, tmp_path):
    one = _config(synth_root, tmp_path, "one", batch_size=8)
    two = _config(synth_root, tmp_path, "two", batch_size=4)
    _run([sys.executable, str(ROOT / "tools" / "train.py"), str(one)])
    log = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                "127.0.0.1", "--master-port", str(_free_port()), str(ROOT / "tools" / "train.py"), str(two),
                "--launcher", "pytorch"])
    # mmengine's environment table, in the run's log file (the console names the file)
    logged = "".join(p.read_text() for p in (tmp_path / "two").glob("*/*.log"))
    assert "Distributed training: True" in logged and "GPU number: 2" in logged, log[-3000:]
    assert "environment, config and hooks of this run:" in log and "System environment" not in log

    train1, val1 = _scalars(tmp_path / "one")
    train2, val2 = _scalars(tmp_path / "two")
    for r1, r2 in zip(train1, train2):
        for key in ("loss", "loss_text", "loss_mask_bce", "loss_mask_dice"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-5), (key, r1, r2)
    assert train1[-1]["loss"] != pytest.approx(train1[0]["loss"], rel=1e-3)  # the weights did change

    sd1 = torch.load(tmp_path / "one" / f"iter_{ITERS}.pth", map_location="cpu", weights_only=True)["state_dict"]
    sd2 = torch.load(tmp_path / "two" / f"iter_{ITERS}.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert sd1.keys() == sd2.keys()
    worst = max(float((sd1[k].float() - sd2[k].float()).abs().max()) for k in sd1)
    assert worst < 1e-4, f"weights differ by {worst}"

    # distributed validation scores every query exactly once (no padding duplicates)
    assert val2["seg/n_queries"] == val1["seg/n_queries"]
    assert val2["seg/gIoU"] == pytest.approx(val1["seg/gIoU"], abs=1e-3)
