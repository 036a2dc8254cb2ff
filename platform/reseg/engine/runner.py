"""Turning a reseg config into an mmengine ``Runner`` (the glue behind ``tools/train.py``/``test.py``).

The config is what runs: the runner adds nothing to it and rewrites nothing in it, so the config
mmengine dumps into the work dir is exactly the one that ran. Everything a reseg run needs is written
in the config itself (``configs/_base_/default_runtime.py``: ``default_scope``, ``SafeCheckpointHook``,
``PlainCheckpointHook``, ``StepSeedHook``, DDP's ``model_wrapper_cfg``; ``configs/_base_/precision/``:
``precision`` and its optim wrapper). :func:`build_runner` checks the config first
(:func:`~reseg.engine.config_check.check_run_config`) and refuses, before any model is built, a
config that asks for what reseg does not run or lacks what it needs, naming the key and what to
write instead. What it does besides:

* loads the plugins and reseg's registries before anything is built;
* sets what the command line says: ``work_dir`` (default ``work_dirs/<config name>``), ``launcher``,
  and for ``--resume`` ``load_from`` (the newest complete checkpoint of the work dir,
  :func:`~reseg.engine.checkpoint.latest_checkpoint`, or a given path) and ``resume``;
* a config with a ``strategy`` (``configs/_base_/strategies``: DeepSpeed ZeRO-2/3, FSDP) runs on
  mmengine's ``FlexibleRunner``;
* ``--launcher pytorch`` without CUDA: joins torchrun's process group over gloo itself
  (:func:`init_cpu_distributed`), because mmengine's launcher assumes CUDA;
* the environment, the config and the hook order (~300 lines) go to the run's log file only, not
  the console, so a run that fails prints its cause and little else (the console names the log file);
* a run that only tests (``training=False``, ``tools/test.py``) logs into ``<work_dir>/test_<timestamp>/``
  and leaves the work dir's config dump (``<work_dir>/<config name>.py``, the training run's) alone:
  the config it ran is in its log folder (``vis_data/config.py``).
"""
from __future__ import annotations

import copy
import logging
import os

import torch
from mmengine.config import Config


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


def init_cpu_distributed(cfg: Config) -> None:
    """Join the ``torchrun`` process group on a machine without CUDA, before mmengine would.

    mmengine 0.10.7's ``pytorch`` launcher calls ``torch.cuda.set_device(LOCAL_RANK)``, which fails
    without CUDA. This initialises the process group itself (``env_cfg.dist_cfg.backend``, gloo when
    unset) from torchrun's variables, so ``Runner.setup_env`` finds it initialised and skips its own
    ``init_dist``. The DDP wrapper is the config's ``model_wrapper_cfg`` (``device_ids=None`` for a
    CPU module, checked by :func:`~reseg.engine.config_check.check_run_config`); the config is not
    changed. Everything else (the sampler's rank split, gradient all-reduce, metric collection) is
    mmengine's.
    """
    import torch.distributed as dist

    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"--launcher pytorch needs torchrun's environment ({', '.join(missing)} not set); start it as "
            "`torchrun --nproc-per-node N tools/train.py CONFIG --launcher pytorch`")
    if not dist.is_initialized():
        backend = ((cfg.get("env_cfg") or {}).get("dist_cfg") or {}).get("backend") or "gloo"
        dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))


#: The console handlers quieted while a runner is constructed, with their levels (restore_console).
_QUIETED: list = []
#: The test log folder names this process used: a second test in the same second gets its own folder
#: (and its own mmengine logger and visualizer, which are named after it).
_TEST_STAMPS: set = set()


def _test_stamp(timestamp: str, work_dir: str, check_disk: bool) -> str:
    """``test_<timestamp>``, with ``_2``, ``_3`` ... when this process (or, in a single-process run, a
    folder of the work dir) already has that name."""
    stamp, n = f"test_{timestamp}", 1
    while stamp in _TEST_STAMPS or (check_disk and os.path.exists(os.path.join(work_dir, stamp))):
        n += 1
        stamp = f"test_{timestamp}_{n}"
    _TEST_STAMPS.add(stamp)
    return stamp


class _RunnerMixin:
    """What reseg's runners change in mmengine's: see the module docstring."""

    reseg_test_only = False

    def _log_env(self, *args, **kwargs) -> None:
        # From here to the end of construction (environment, config, hook order) the console is quiet;
        # build_runner restores it (also when construction fails) and names the log file.
        for handler in self.logger.handlers:
            if type(handler) is logging.StreamHandler:
                _QUIETED.append((handler, handler.level))
                handler.setLevel(max(handler.level, logging.WARNING))
        super()._log_env(*args, **kwargs)

    def setup_env(self, *args, **kwargs) -> None:
        super().setup_env(*args, **kwargs)
        if self.reseg_test_only:  # the log folder of a test is told apart from a training run's
            self._timestamp = _test_stamp(self._timestamp, self._work_dir, self._world_size == 1)

    def dump_config(self) -> None:
        if not self.reseg_test_only:  # <work_dir>/<config name>.py is the training run's config
            super().dump_config()


def _reseg_runner(base: type, test_only: bool) -> type:
    return type(f"Reseg{base.__name__}", (_RunnerMixin, base), {"reseg_test_only": test_only})


def restore_console(runner=None) -> None:
    """Undo the quiet console of construction and, given the runner, say where the environment and
    config went."""
    while _QUIETED:
        handler, level = _QUIETED.pop()
        handler.setLevel(level)
    if runner is None:
        return
    log_file = next((h.baseFilename for h in runner.logger.handlers if isinstance(h, logging.FileHandler)), None)
    if log_file:
        runner.logger.info(f"environment, config and hooks of this run: {log_file}")


def remove_test_log(runner) -> None:
    """Remove the log folder of a test that failed before testing (it holds nothing of a result)."""
    import shutil

    log_dir = getattr(runner, "log_dir", None)
    if getattr(runner, "reseg_test_only", False) and log_dir and os.path.basename(log_dir).startswith("test_"):
        for handler in list(runner.logger.handlers):
            if isinstance(handler, logging.FileHandler):
                handler.close()
                runner.logger.removeHandler(handler)
        shutil.rmtree(log_dir, ignore_errors=True)


def build_runner(cfg: Config, work_dir: str | None = None, resume: bool | str = False,
                 launcher: str = "none", training: bool = True):
    """An mmengine ``Runner`` (or ``FlexibleRunner``) for ``cfg``, which must run as written.

    Args:
        cfg: The config; not modified (the runner gets a copy with the command line's keys set).
        work_dir: ``--work-dir``; default the config's ``work_dir``, else ``work_dirs/<config name>``.
        resume: ``--resume``: True for the work dir's newest complete checkpoint, or a checkpoint path.
        launcher: ``--launcher``.
        training: False for a run that only tests (``tools/test.py``): bf16 configs evaluate on CPU too.

    Raises:
        ConfigRefused: The config asks for what reseg does not run or lacks what it needs
            (:func:`~reseg.engine.config_check.config_problems`), found before anything is built.
    """
    from mmengine.runner import Runner

    from reseg.engine.config_check import check_run_config
    from reseg.plugins import load_plugins

    check_run_config(cfg, launcher=launcher, training=training)
    load_plugins()
    import reseg.datasets
    import reseg.engine
    import reseg.evaluation
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
    if cfg.get("strategy") is not None or cfg.get("runner_type") == "FlexibleRunner":
        from mmengine.runner import FlexibleRunner

        import_strategies()
        base = FlexibleRunner
    else:
        if launcher == "pytorch" and not torch.cuda.is_available():
            init_cpu_distributed(cfg)
        base = Runner
    try:
        runner = _reseg_runner(base, not training).from_cfg(cfg)
    except BaseException:
        restore_console()  # the error that follows is not hidden
        raise
    restore_console(runner)
    return runner


def apply_runtime_defaults(cfg: Config) -> Config:
    """Removed: the runner no longer fills in or rewrites a config (the config is what runs).

    Raises:
        RuntimeError: Always, naming what replaced it.
    """
    raise RuntimeError(
        "reseg.engine.runner.apply_runtime_defaults was removed: the runner no longer fills in or rewrites a "
        "config. The defaults are in configs/_base_/default_runtime.py and configs/_base_/precision/; "
        "reseg.engine.config_check.check_run_config(cfg) says what a config lacks (docs/changelog.md)")
