"""The config is what runs: the runner refuses what it used to rewrite, and the work dir's dump is the config.

Each refusal below is one thing ``reseg.engine.runner`` used to fill in or rewrite silently
(``CheckpointHook`` -> ``SafeCheckpointHook``, ``OptimWrapper`` -> ``AmpOptimWrapper`` under bf16 or
``precision='auto'`` on CUDA, the DeepSpeed optimiser translation, the appended ``PlainCheckpointHook``
and ``StepSeedHook``, ``default_scope``, DDP's ``find_unused_parameters`` and ``device_ids``, the
dist backend). Now the config says it (``configs/_base_/``), and a config that does not is refused
with one line naming the key, what was found and what to write.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from reseg.engine.config_check import ConfigRefused, check_run_config, config_problems
from tiny import tiny_train_cfg

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "lisa" / "lisa_tiny_synthref.py"
CONFIGS = sorted(p for p in glob.glob(str(ROOT / "configs" / "*" / "*.py")) if "_base_" not in p)


def _tiny() -> Config:
    return Config.fromfile(str(TINY))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_config_runs_as_written(path):
    """Every config passes on a GPU machine; fp32 configs train on CPU too, bf16 ones are tested on CPU."""
    cfg = Config.fromfile(path)
    assert config_problems(cfg, launcher="pytorch", cuda=True) == []
    assert config_problems(cfg, training=False, cuda=False) == []
    cpu_training = config_problems(cfg, launcher="pytorch", cuda=False)
    if cfg.precision == "fp32":
        assert cpu_training == []
    else:
        assert len(cpu_training) == 1 and "precision='bf16' trains on a CUDA device only" in cpu_training[0]


def test_real_configs_say_bf16_and_the_tiny_ones_fp32():
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        real = "llava15" in os.path.basename(path)
        assert cfg.precision == ("bf16" if real else "fp32"), path
        if cfg.get("strategy") is None:
            want = dict(type="AmpOptimWrapper", dtype="bfloat16") if real else dict(type="OptimWrapper")
            assert {k: cfg.optim_wrapper.get(k) for k in want} == want, path
            assert "dtype" in cfg.optim_wrapper or not real


def _drop(key):
    def edit(cfg):
        cfg.pop(key)
    return edit


def _set(**kv):
    def edit(cfg):
        cfg.merge_from_dict(kv)
    return edit


def _deepspeed_untranslated(cfg):
    """What the runner used to translate: a DeepSpeed strategy over the config's plain optim wrapper."""
    cfg.merge_from_dict(dict(runner_type="FlexibleRunner", precision="bf16",
                             strategy=dict(type="DeepSpeedStrategy", bf16=dict(enabled=True))))


def _deepspeed_fp32(cfg):
    """DeepSpeed written out, but with precision='fp32' while the strategy casts to bf16."""
    cfg.merge_from_dict(dict(runner_type="FlexibleRunner", strategy=dict(type="DeepSpeedStrategy",
                                                                         bf16=dict(enabled=True))))
    cfg.optim_wrapper = dict(type="DeepSpeedOptimWrapper", optimizer=cfg.optim_wrapper.optimizer)


# (id, edit of the tiny LISA config, run kwargs, fragments the one-line message must hold)
REFUSALS = [
    ("checkpoint-hook", _set(**{"default_hooks.checkpoint.type": "CheckpointHook"}), {},
     ["default_hooks.checkpoint.type='CheckpointHook' is not atomic", "use 'SafeCheckpointHook'"]),
    ("checkpoint-hook-dotted", _set(**{"default_hooks.checkpoint.type": "mmengine.CheckpointHook"}), {},
     ["default_hooks.checkpoint.type='CheckpointHook'", "use 'SafeCheckpointHook'"]),
    ("checkpoint-hook-missing", lambda c: c.default_hooks.pop("checkpoint"), {},
     ["default_hooks.checkpoint is missing", "type='SafeCheckpointHook'", "or None"]),
    ("plain-checkpoint-hook", _set(custom_hooks=[dict(type="StepSeedHook")]), {},
     ["custom_hooks lacks PlainCheckpointHook", "add dict(type='PlainCheckpointHook')"]),
    ("step-seed-hook", _set(custom_hooks=[dict(type="PlainCheckpointHook")]), {},
     ["custom_hooks lacks StepSeedHook", "add dict(type='StepSeedHook')"]),
    ("precision-auto", _set(precision="auto"), {},
     ["precision='auto' is gone", "write precision='fp32' or 'bf16'", "configs/_base_/precision/"]),
    ("precision-missing", _drop("precision"), {},
     ["precision is missing", "write precision='fp32' or 'bf16'"]),
    ("precision-unknown", _set(precision="fp16"), {}, ["precision='fp16': expected 'fp32' or 'bf16'"]),
    ("bf16-with-plain-wrapper", _set(precision="bf16"), dict(cuda=True),
     ["precision='bf16' but optim_wrapper.type='OptimWrapper'", "optim_wrapper.type='AmpOptimWrapper'",
      "optim_wrapper.dtype='bfloat16'"]),
    ("bf16-on-cpu", _set(precision="bf16", optim_wrapper=dict(type="AmpOptimWrapper", dtype="bfloat16")),
     dict(cuda=False), ["precision='bf16' trains on a CUDA device only", "precision='fp32'"]),
    ("bf16-with-fp16-dtype", _set(precision="bf16", optim_wrapper=dict(type="AmpOptimWrapper", dtype="float16")),
     dict(cuda=True), ["optim_wrapper.dtype='float16'", "dtype='bfloat16'"]),
    ("fp32-with-amp-wrapper", _set(optim_wrapper=dict(type="AmpOptimWrapper", dtype="bfloat16")), {},
     ["precision='fp32' but optim_wrapper.type='AmpOptimWrapper' autocasts", "optim_wrapper.type='OptimWrapper'"]),
    ("deepspeed-untranslated", _deepspeed_untranslated, dict(cuda=True),
     ["optim_wrapper.type='OptimWrapper'", "type='DeepSpeedOptimWrapper'", "strategy.gradient_clipping=1.0",
      "strategy.gradient_accumulation_steps=1", "strategy.train_micro_batch_size_per_gpu=8"]),
    ("deepspeed-precision", _deepspeed_fp32, dict(cuda=True),
     ["precision='fp32' but strategy.bf16.enabled=True"]),
    ("default-scope", _drop("default_scope"), {}, ["default_scope=None", "set default_scope='reseg'"]),
    ("find-unused-top-level", _set(find_unused_parameters=False), {},
     ["find_unused_parameters=False is ignored", "model_wrapper_cfg.find_unused_parameters"]),
    ("ddp-without-wrapper", _drop("model_wrapper_cfg"), dict(launcher="pytorch", cuda=True),
     ["launcher='pytorch' but model_wrapper_cfg is missing", "find_unused_parameters=True"]),
    ("cpu-ddp-device-ids", _set(**{"model_wrapper_cfg.device_ids": [0]}), dict(launcher="pytorch", cuda=False),
     ["model_wrapper_cfg.device_ids is [0]", "needs device_ids=None"]),
    ("cpu-nccl", _set(**{"env_cfg.dist_cfg.backend": "nccl"}), dict(launcher="pytorch", cuda=False),
     ["env_cfg.dist_cfg.backend='nccl' needs CUDA", "'gloo'"]),
]


@pytest.mark.parametrize("edit,kwargs,fragments", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_a_config_asking_for_an_old_rewrite_is_refused_in_one_line(edit, kwargs, fragments):
    cfg = _tiny()
    assert config_problems(cfg, **kwargs) == []
    edit(cfg)
    with pytest.raises(ConfigRefused) as err:
        check_run_config(cfg, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_hooks_are_checked_by_class_so_subclasses_count():
    """A SafeCheckpointHook subclass is atomic and accepted; a CheckpointHook subclass is not; subclasses of
    the two required custom hooks stand in for them."""
    from mmengine.hooks import CheckpointHook

    from reseg.engine.checkpoint import PlainCheckpointHook, SafeCheckpointHook
    from reseg.engine.determinism import StepSeedHook

    class MyAtomicCheckpoints(SafeCheckpointHook):
        pass

    class MyCheckpoints(CheckpointHook):
        pass

    class MyPlain(PlainCheckpointHook):
        pass

    class MySeeds(StepSeedHook):
        pass

    cfg = _tiny()
    cfg.default_hooks.checkpoint.type = MyAtomicCheckpoints
    cfg.custom_hooks = [dict(type=MyPlain), dict(type=MySeeds)]
    assert config_problems(cfg) == []
    cfg.default_hooks.checkpoint.type = MyCheckpoints
    (problem,) = config_problems(cfg)
    assert problem.startswith("default_hooks.checkpoint.type='MyCheckpoints' is not atomic")


def test_a_test_only_config_needs_no_training_settings():
    cfg = Config(dict(default_scope="reseg", model=dict(type="ReasoningSegmentor")))
    assert config_problems(cfg, training=False) == []


def test_several_problems_are_reported_together():
    cfg = _tiny()
    cfg.default_hooks.checkpoint.type = "CheckpointHook"
    cfg.custom_hooks = []
    problems = config_problems(cfg)
    assert len(problems) == 3
    assert [p.split(" ")[0] for p in problems] == [
        "default_hooks.checkpoint.type='CheckpointHook'", "custom_hooks", "custom_hooks"]


def test_refusal_comes_before_any_model_is_built(tmp_path):
    from reseg.engine.runner import build_runner

    cfg = _tiny()
    cfg.model = dict(type="NoSuchSegmentor")  # building it would fail with another error
    cfg.default_hooks.checkpoint.type = "CheckpointHook"
    with pytest.raises(ConfigRefused, match="SafeCheckpointHook"):
        build_runner(cfg, work_dir=str(tmp_path / "work"))
    assert not (tmp_path / "work").exists()


def test_train_tool_prints_the_refusal_as_one_line_naming_the_file(tmp_path):
    path = tmp_path / "old_spelling.py"
    path.write_text(f"_base_ = [{str(TINY)!r}]\nprecision = 'auto'\n")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), str(path), "--work-dir",
                          str(tmp_path / "work")], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith(f"error: {path}: precision='auto' is gone")


def test_removed_apply_runtime_defaults_names_its_replacement():
    from reseg.engine.runner import apply_runtime_defaults

    with pytest.raises(RuntimeError, match="check_run_config"):
        apply_runtime_defaults(_tiny())


def _hook_types(hooks) -> list[str]:
    return [type(h).__name__ for h in hooks]


def test_the_dumped_config_is_the_config_that_ran(synth_root, tmp_path):
    """Train 2 iterations from a config file; the work dir's dump equals that file's config plus what the
    command line set (work_dir, launcher), and the runner's hooks and optim wrapper are the dump's."""
    from reseg.engine.runner import build_runner

    work = tmp_path / "work"
    path = tmp_path / "run.py"
    written = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(tmp_path / "elsewhere"), max_iters=2,
                             batch_size=2, ckpt_interval=2)
    written.val_cfg = written.val_dataloader = written.val_evaluator = None
    written.dump(str(path))
    cfg = Config.fromfile(str(path))
    ran = Config.fromfile(str(path))
    runner = build_runner(cfg, work_dir=str(work))
    runner.train()
    dumped = Config.fromfile(str(work / "run.py")).to_dict()
    expected = ran.to_dict()
    expected.update(work_dir=str(work), launcher="none")
    assert dumped == expected
    assert cfg.to_dict() == ran.to_dict()  # build_runner leaves the caller's config alone
    names = _hook_types(runner.hooks)
    assert "SafeCheckpointHook" in names and "CheckpointHook" not in names
    assert sorted(n for n in names if n in ("PlainCheckpointHook", "StepSeedHook")) == sorted(
        h["type"] for h in dumped["custom_hooks"])
    assert type(runner.optim_wrapper).__name__ == dumped["optim_wrapper"]["type"] == "OptimWrapper"
    assert runner.cfg.to_dict() == dumped
