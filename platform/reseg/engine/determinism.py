"""Runs that can be repeated: per-step seeding (exact resume) and the run report.

* :class:`StepSeedHook` reseeds torch's RNGs at every training iteration from ``(seed, iteration)``,
  so dropout (LoRA's at real scale) draws the same masks at iteration ``i`` whether the run was
  resumed or not, and whatever consumed torch's RNG in between (validation, a new dataloader
  iterator). Python's and numpy's RNGs are left alone: they drive data sampling, which mmengine's
  resume replays by fast-forwarding the dataloader, and heads draw from per-sample seeds
  (``reseg_collate``, ``BaseHead.sample_rng``).
* :func:`write_run_report` writes ``run_report.json`` into the work dir: the merged config file, the
  command line, the git commit (and whether the tree had uncommitted changes), package versions,
  seeds, world size and devices.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform as std_platform
import subprocess
import sys
from importlib import metadata
from typing import Any

import torch
from mmengine.hooks import Hook

from reseg.registry import HOOKS

#: Packages whose versions go into the run report (those that change numbers).
REPORT_PACKAGES = ("reseg", "torch", "torchvision", "numpy", "transformers", "tokenizers", "peft", "accelerate",
                   "segment-anything", "mmengine", "pillow", "opencv-python", "pycocotools", "timm",
                   "open-clip-torch", "mmdet", "mmcv", "deepspeed")


def step_seed(seed: int, iteration: int) -> int:
    """The torch seed of training iteration ``iteration`` of a run seeded ``seed`` (stable across runs)."""
    digest = hashlib.sha256(f"reseg-step:{int(seed)}:{int(iteration)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@HOOKS.register_module()
class StepSeedHook(Hook):
    """Reseed torch (CPU and every CUDA device) before each training iteration (module docstring).

    ``reseg.engine.runner`` adds it to every run; the seed is the runner's (``randomness.seed``).
    """

    priority = "VERY_HIGH"

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        torch.manual_seed(step_seed(runner.seed, runner.iter))


def _git(args: list[str], cwd: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_versions(names=REPORT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_report(cfg, seed: int | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """What is needed to repeat a run (see :func:`write_run_report`)."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    commit = _git(["rev-parse", "HEAD"], repo)
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    randomness = dict(cfg.get("randomness") or {})
    return dict(
        argv=list(sys.argv if argv is None else argv),
        config_file=cfg.get("filename"),
        config=cfg.pretty_text,
        git=dict(commit=commit, dirty=bool(status) if status is not None else None),
        packages=package_versions(),
        python=sys.version.split()[0],
        platform=std_platform.platform(),
        seed=seed if seed is not None else randomness.get("seed"),
        deterministic=bool(randomness.get("deterministic", False)),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        cuda=torch.cuda.is_available(),
        devices=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        threads=torch.get_num_threads(),
    )


def write_run_report(runner, argv: list[str] | None = None) -> str:
    """Write ``<work_dir>/run_report.json`` (a resumed run writes ``run_report.resume-<iter>.json``
    beside it instead of overwriting the first one). Returns the path."""
    report = run_report(runner.cfg, seed=runner.seed, argv=argv)
    report["resumed_from"] = runner.cfg.get("load_from") if runner.cfg.get("resume") else None
    name = "run_report.json"
    if report["resumed_from"]:
        name = f"run_report.resume-{os.path.splitext(os.path.basename(str(report['resumed_from'])))[0]}.json"
    path = os.path.join(runner.work_dir, name)
    from reseg.fileio import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(report, indent=2, default=str).encode())
    return path
