"""Train any reseg model: ``python tools/train.py CONFIG [--work-dir D] [--cfg-options k=v ...] [--resume]``.

Follows the OpenMMLab conventions (mmengine ``Runner``). ``--resume`` continues from the last
checkpoint in the work dir (``last_checkpoint``) or from the given file. A work dir that already holds
checkpoints is never overwritten silently: pass ``--resume`` to continue it, or choose another
``--work-dir``. Every run writes ``run_report.json`` (config, git commit, package versions, seeds)
into its work dir.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

from mmengine.config import Config

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train a reseg model")
    p.add_argument("config", help="config file path")
    p.add_argument("--work-dir", help="where logs and checkpoints go (default work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", const=True, default=False,
                   help="resume from the work dir's last checkpoint, or from the given checkpoint file")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None,
                   help="override config keys, e.g. train_cfg.max_iters=100 model.lmm.lora.r=16; a top-level "
                        "path variable (data_root=/data/x) also moves the paths the config derived from it")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    p.add_argument("--strategy", help="merge a distributed strategy into the config: deepspeed_zero2, "
                   "deepspeed_zero3, fsdp (configs/_base_/strategies) or a strategy config file")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0)
    return p.parse_args(argv)


#: The strategy presets of the source tree (this file is <repository>/platform/reseg/tools/train.py).
STRATEGY_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), *[os.pardir] * 3, "configs",
                                            "_base_", "strategies"))


def apply_strategy(cfg: Config, name: str) -> list[str]:
    """Merge a strategy preset (``configs/_base_/strategies/<name>.py``) or file into ``cfg``.

    DeepSpeed clips, accumulates and casts itself: for a DeepSpeed preset the config's plain optim
    wrapper is written out as ``DeepSpeedOptimWrapper`` with its optimizer, its clipping,
    accumulation and per-GPU batch go into the strategy, and ``precision`` follows the preset's
    ``bf16.enabled``. Returns one line per key changed (printed; the dumped config records them).
    """
    from reseg.engine.config_check import deepspeed_settings

    path = name if os.path.isfile(name) else os.path.join(STRATEGY_DIR, f"{name}.py")
    if not os.path.isfile(path):
        known = sorted(f[:-3] for f in os.listdir(STRATEGY_DIR) if f.endswith(".py"))
        sys.exit(f"error: --strategy {name!r}: no such preset or file; presets: {', '.join(known)}")
    cfg.merge_from_dict(Config.fromfile(path).to_dict())
    notes = [f"--strategy {name}: strategy.type={cfg.strategy.get('type')!r}, runner_type={cfg.get('runner_type')!r}"]
    optim = cfg.get("optim_wrapper") or {}
    if str(cfg.strategy.get("type", "")).split(".")[-1] == "DeepSpeedStrategy" and \
            str(optim.get("type", "OptimWrapper")).split(".")[-1] in ("OptimWrapper", "AmpOptimWrapper"):
        wrapper, keys = deepspeed_settings(cfg)
        notes.append(f"--strategy {name}: optim_wrapper.type {optim.get('type', 'OptimWrapper')!r} -> "
                     "'DeepSpeedOptimWrapper' (the optimizer kept; DeepSpeed clips, accumulates and casts)")
        cfg.optim_wrapper = wrapper
        for key, value in keys.items():
            if key not in cfg.strategy:
                cfg.strategy[key] = value
                notes.append(f"--strategy {name}: strategy.{key}={value!r}")
        precision = "bf16" if (cfg.strategy.get("bf16") or {}).get("enabled") else "fp32"
        if cfg.get("precision") != precision:
            notes.append(f"--strategy {name}: precision {cfg.get('precision')!r} -> {precision!r} "
                         "(the preset's strategy.bf16.enabled)")
            cfg.precision = precision
    return notes


def main(argv=None) -> int:
    args = parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(args.local_rank)
    if not os.path.isfile(args.config):
        sys.exit(f"error: config file {args.config!r} does not exist")
    cfg = Config.fromfile(args.config)
    if args.strategy:
        print("\n".join(apply_strategy(cfg, args.strategy)))
    if args.cfg_options:
        from reseg.cfg_options import describe_rewrites, merge_cfg_options

        note = describe_rewrites(merge_cfg_options(cfg, args.cfg_options))
        if note:
            print(note)

    from reseg.engine.config_check import ConfigRefused
    from reseg.engine.runner import build_runner

    work_dir = args.work_dir or cfg.get("work_dir") or os.path.join(
        "work_dirs", os.path.splitext(os.path.basename(args.config))[0])
    existing = sorted(glob.glob(os.path.join(work_dir, "*.pth")))
    if existing and not args.resume:
        sys.exit(f"error: {work_dir!r} already holds checkpoints ({os.path.basename(existing[-1])}, ...). "
                 "Pass --resume to continue that run, or --work-dir to start a new one; "
                 "reseg does not overwrite them.")
    try:
        runner = build_runner(cfg, work_dir=work_dir, resume=args.resume, launcher=args.launcher)
    except ConfigRefused as err:
        sys.exit("\n".join(f"error: {args.config}: {line}" for line in str(err).splitlines()))
    except FileNotFoundError as err:  # weights the config names (the message names the key and the file)
        sys.exit(f"error: {args.config}: {err}")
    if runner.rank == 0:  # config, git commit, package versions and seeds of this run
        from reseg.engine.determinism import write_run_report

        runner.logger.info(f"run report: {write_run_report(runner, argv=sys.argv)}")
    try:
        runner.train()
    except FileNotFoundError as err:  # a data file the datasets read (the message names it)
        sys.exit(f"error: {args.config}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
