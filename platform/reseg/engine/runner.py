"""Turning a reseg config into an mmengine ``Runner`` (the glue behind ``tools/train.py``/``test.py``).

What this adds to a plain ``Runner.from_cfg``:

* ``default_scope='reseg'`` and the plugins loaded before anything is built;
* ``precision='auto'|'fp32'|'bf16'`` (config key): bf16 autocast (``AmpOptimWrapper``) on CUDA, fp32
  on CPU; ``dist_cfg.backend`` nccl on CUDA, gloo on CPU; the model device is mmengine's choice;
* a config with a ``strategy`` (``configs/_base_/strategies``: DeepSpeed ZeRO-2/3, FSDP) runs on
  mmengine's ``FlexibleRunner``; for DeepSpeed the config's optimiser is translated
  (:func:`_translate_for_deepspeed`);
* ``--launcher pytorch`` without CUDA: DDP over gloo (:func:`init_cpu_distributed`);
  ``find_unused_parameters=True`` unless the config says otherwise;
* :class:`~reseg.engine.checkpoint.PlainCheckpointHook` on every run, so checkpoints load under
  torch's ``weights_only=True``;
* :class:`~reseg.engine.checkpoint.SafeCheckpointHook` in place of mmengine's ``CheckpointHook``
  (atomic writes, old checkpoints pruned only after the new one is complete);
* :class:`~reseg.engine.determinism.StepSeedHook` on every run (torch reseeded per iteration, so a
  resumed run draws the same dropout masks as an uninterrupted one);
* ``--resume``: continue from the newest complete checkpoint of the work dir
  (:func:`~reseg.engine.checkpoint.latest_checkpoint`), or a given checkpoint path.
"""
from __future__ import annotations

import copy
import os
from typing import Optional

import torch
from mmengine.config import Config


def _has_hook(hooks: list, name: str) -> bool:
    for h in hooks:
        t = h.get("type") if isinstance(h, dict) else type(h)
        if t == name or getattr(t, "__name__", None) == name:
            return True
    return False


def import_strategies() -> None:
    """Register mmengine's strategies (DeepSpeed, FSDP, ...) for ``FlexibleRunner`` configs.

    mmengine 0.10.7's ``DeepSpeedStrategy.__init__`` registers DeepSpeed's optimizers without
    ``force``, so a second strategy in one process (a second run in a notebook or a test session)
    raised ``KeyError: 'DeepSpeedCPUAdam is already registered'``; the registration is made to
    happen once.
    """
    import mmengine._strategy  # noqa: F401
    import mmengine._strategy.deepspeed as ds

    register = ds.register_deepspeed_optimizers
    if getattr(register, "reseg_once", False):
        return

    def register_once() -> None:
        from mmengine.registry import OPTIMIZERS

        if "DeepSpeedCPUAdam" not in OPTIMIZERS.module_dict:
            register()

    register_once.reseg_once = True  # type: ignore[attr-defined]
    ds.register_deepspeed_optimizers = register_once


def _translate_for_deepspeed(cfg: Config) -> None:
    """A config with ``strategy=dict(type='DeepSpeedStrategy')`` keeps its own optimiser: DeepSpeed
    clips, accumulates and casts itself, so ``clip_grad`` becomes ``strategy.gradient_clipping``,
    ``accumulative_counts`` ``strategy.gradient_accumulation_steps``, the train batch size
    ``train_micro_batch_size_per_gpu``, and the wrapper ``DeepSpeedOptimWrapper``."""
    strategy = cfg.get("strategy")
    if not isinstance(strategy, dict) or str(strategy.get("type", "")).split(".")[-1] != "DeepSpeedStrategy":
        return
    optim = cfg.get("optim_wrapper") or {}
    if optim.get("type", "OptimWrapper") not in ("OptimWrapper", "AmpOptimWrapper"):
        return
    clip = (optim.get("clip_grad") or {}).get("max_norm")
    if clip is not None:
        strategy.setdefault("gradient_clipping", float(clip))
    strategy.setdefault("gradient_accumulation_steps", int(optim.get("accumulative_counts", 1)))
    batch = (cfg.get("train_dataloader") or {}).get("batch_size")
    if batch:
        strategy.setdefault("train_micro_batch_size_per_gpu", int(batch))
    cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", optimizer=optim["optimizer"])


def apply_runtime_defaults(cfg: Config) -> Config:
    """Fill the runtime settings every reseg run needs (see module docstring)."""
    cfg.setdefault("default_scope", "reseg")
    cuda = torch.cuda.is_available()
    precision = cfg.get("precision", "auto")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"config key `precision` must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "auto":
        precision = "bf16" if cuda else "fp32"
    if precision == "bf16" and not cuda:
        raise ValueError("precision='bf16' needs a CUDA device; use 'auto' or 'fp32' on CPU")
    _translate_for_deepspeed(cfg)
    optim = cfg.get("optim_wrapper")
    if optim is not None and precision == "bf16" and optim.get("type", "OptimWrapper") == "OptimWrapper":
        optim["type"] = "AmpOptimWrapper"
        optim["dtype"] = "bfloat16"
    # Under DDP every trainable parameter must get a gradient unless this is set. [SEG] heads decode
    # with multimask_output=False, so SAM's IoU head and mask slots 1-3 never do (spec §1.2).
    cfg.setdefault("find_unused_parameters", True)
    env = cfg.setdefault("env_cfg", {})
    dist = env.setdefault("dist_cfg", {})
    dist.setdefault("backend", "nccl" if cuda else "gloo")
    ckpt_hook = (cfg.get("default_hooks") or {}).get("checkpoint")
    if isinstance(ckpt_hook, dict) and ckpt_hook.get("type") in ("CheckpointHook", "mmengine.CheckpointHook"):
        ckpt_hook["type"] = "SafeCheckpointHook"  # same arguments; atomic writes, prune after saving
    hooks = list(cfg.get("custom_hooks", None) or [])
    for name in ("PlainCheckpointHook", "StepSeedHook"):
        if not _has_hook(hooks, name):
            hooks.append(dict(type=name))
    cfg.custom_hooks = hooks
    return cfg


def init_cpu_distributed(cfg: Config) -> None:
    """Join the ``torchrun`` process group on a machine without CUDA, before mmengine would.

    mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device(LOCAL_RANK)`` and its DDP
    wrapper passes ``device_ids=[LOCAL_RANK]``; both fail for a CPU module. This initialises the
    process group itself (``env_cfg.dist_cfg.backend``, gloo by default) from torchrun's variables,
    so ``Runner.setup_env`` finds it initialised and skips its own ``init_dist``, and sets
    ``model_wrapper_cfg.device_ids=None`` (what DDP expects for CPU modules). Everything else (the
    sampler's rank split, gradient all-reduce, metric collection) is mmengine's.
    """
    import torch.distributed as dist

    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"--launcher pytorch needs torchrun's environment ({', '.join(missing)} not set); start it as "
            "`torchrun --nproc-per-node N tools/train.py CONFIG --launcher pytorch`")
    if not dist.is_initialized():
        backend = cfg.get("env_cfg", {}).get("dist_cfg", {}).get("backend", "gloo")
        dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    wrapper = dict(cfg.get("model_wrapper_cfg") or {})
    wrapper.setdefault("type", "MMDistributedDataParallel")
    wrapper.setdefault("device_ids", None)
    wrapper.setdefault("broadcast_buffers", False)
    wrapper.setdefault("find_unused_parameters", cfg.get("find_unused_parameters", True))
    cfg.model_wrapper_cfg = wrapper


def build_runner(cfg: Config, work_dir: Optional[str] = None, resume: bool | str = False,
                 launcher: str = "none"):
    """An mmengine ``Runner`` for ``cfg`` with reseg's runtime defaults applied."""
    from mmengine.runner import Runner

    from reseg.plugins import load_plugins

    load_plugins()
    import reseg.datasets  # noqa: F401  (register loaders and collate functions)
    import reseg.engine  # noqa: F401
    import reseg.evaluation  # noqa: F401
    import reseg.models  # noqa: F401

    cfg = copy.deepcopy(cfg)
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get("work_dir") is None:
        name = os.path.splitext(os.path.basename(cfg.filename or "reseg_run"))[0]
        cfg.work_dir = os.path.join("work_dirs", name)
    if resume:
        if isinstance(resume, str):
            if not os.path.isfile(resume):
                raise FileNotFoundError(f"--resume {resume!r}: no such checkpoint file")
            cfg.load_from = resume
        else:  # the newest complete checkpoint, whatever state last_checkpoint was left in
            from reseg.engine.checkpoint import latest_checkpoint

            latest = latest_checkpoint(cfg.work_dir)
            if latest is None:  # nothing to continue: a fresh run (`make demo` passes --resume every time)
                resume = False
            else:
                cfg.load_from = latest
        cfg.resume = bool(resume)
    apply_runtime_defaults(cfg)
    if cfg.get("strategy") is not None or cfg.get("runner_type") == "FlexibleRunner":
        from mmengine.runner import FlexibleRunner

        import_strategies()
        return FlexibleRunner.from_cfg(cfg)
    if launcher == "pytorch" and not torch.cuda.is_available():
        init_cpu_distributed(cfg)
    return Runner.from_cfg(cfg)
