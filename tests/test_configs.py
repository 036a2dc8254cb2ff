"""Every config parses; the real-scale configs fail early and clearly when their files are missing."""
from __future__ import annotations

import glob
import os

import pytest
from mmengine.config import Config

from reseg.registry import MODELS
from tiny import tiny_lmm_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*", "*.py")) if "_base_" not in p)
REAL_CONFIGS = [os.path.join(ROOT, "configs", "lisa", "lisa_llava15-7b_sam-vit-h_reasonseg.py"),
                os.path.join(ROOT, "configs", "anchorseg", "anchorseg_llava15-7b_sam-vit-h_reasonseg.py")]
real = pytest.mark.parametrize("real_config", REAL_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_parses_and_names_registered_types(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == "reseg"
    for part in ("lmm", "mask_source", "head"):
        assert part in cfg.model, f"{path}: model.{part} missing"
    from reseg.registry import HEADS, LMMS, MASK_SOURCES
    assert cfg.model.lmm.type in LMMS and cfg.model.head.type in HEADS
    assert cfg.model.mask_source.type in MASK_SOURCES


@real
def test_real_config_names_local_checkpoints(real_config):
    cfg = Config.fromfile(real_config)
    assert cfg.model.lmm.pretrained.endswith("llava-1.5-7b-hf")
    assert cfg.model.mask_source.checkpoint.endswith("sam_vit_h_4b8939.pth")
    assert cfg.model.mask_source.variant == "vit_h"
    assert cfg.model.lmm.lora.r == 8 and cfg.model.lmm.lora.lora_alpha == 16  # spec §1.4


@real
def test_real_config_without_llava_fails_naming_the_path(tmp_path, real_config):
    cfg = Config.fromfile(real_config)
    cfg.model.lmm.pretrained = str(tmp_path / "nowhere" / "llava-1.5-7b-hf")
    with pytest.raises(FileNotFoundError) as e:
        MODELS.build(cfg.model)
    assert "nowhere/llava-1.5-7b-hf" in str(e.value) and "model.lmm.pretrained" in str(e.value)


@real
def test_real_config_without_sam_fails_naming_the_path(tmp_path, real_config):
    cfg = Config.fromfile(real_config)
    cfg.model.lmm = tiny_lmm_cfg(str(tmp_path / "tok"))
    cfg.model.mask_source.checkpoint = str(tmp_path / "missing_sam_vit_h.pth")
    with pytest.raises(FileNotFoundError) as e:
        MODELS.build(cfg.model)
    assert "missing_sam_vit_h.pth" in str(e.value) and "model.mask_source.checkpoint" in str(e.value)


@pytest.mark.parametrize("name", ["lisa/lisa_llava15-7b_sam-vit-h_reasonseg.py",
                                  "read/read_llava15-7b_sam-vit-h_reasonseg.py"])
def test_real_lisa_schedule_counts_micro_batches(name):
    """LISA's 10 x 500 optimizer steps (spec §1.4) at grad accumulation 10 = 50 000 mmengine
    iterations (micro-batches); warm-up 100 steps and the decay end are in the same unit."""
    cfg = Config.fromfile(os.path.join(ROOT, "configs", name))
    accum = cfg.optim_wrapper.accumulative_counts
    assert accum == 10
    assert cfg.train_cfg.max_iters // accum == 5000
    assert cfg.train_cfg.val_interval // accum == 500
    warm, decay = cfg.param_scheduler
    assert warm.end == 100 * accum and decay.begin == warm.end
    assert decay.end == cfg.train_cfg.max_iters and decay.end_factor == 0.0


@pytest.mark.parametrize("suffix,stage,accum", [("ds-zero2", 2, 10), ("ds-zero3", 3, 10), ("1x24g", 2, 80)])
def test_deepspeed_configs_build_with_lisas_optimiser_and_precision(suffix, stage, accum, tmp_path):
    """DeepSpeed cannot train here (no CUDA); its configs must build (docs/scaling.md) and run as written."""
    from mmengine.registry import STRATEGIES

    from reseg.engine.config_check import config_problems
    from reseg.engine.runner import import_strategies

    import_strategies()
    cfg = Config.fromfile(os.path.join(ROOT, "configs", "lisa", f"lisa_llava15-7b_sam-vit-h_reasonseg_{suffix}.py"))
    assert config_problems(cfg, launcher="pytorch", cuda=True) == []
    assert cfg.runner_type == "FlexibleRunner" and cfg.precision == "bf16"
    assert dict(cfg.optim_wrapper) == dict(type="DeepSpeedOptimWrapper", optimizer=dict(
        type="AdamW", lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0))
    strategy = STRATEGIES.build(dict(cfg.strategy, work_dir=str(tmp_path)))  # its log folder (default work_dirs/)
    ds = strategy.config
    assert type(strategy).__name__ == "DeepSpeedStrategy" and ds["zero_optimization"]["stage"] == stage
    # LISA's recipe (seg_token_family.md §1.4): bf16, clipping 1.0, 2 images x 10 accumulation steps
    assert ds["bf16"] == {"enabled": True} and ds["gradient_clipping"] == 1.0
    assert ds["gradient_accumulation_steps"] == accum and ds["train_micro_batch_size_per_gpu"] == 2
    assert cfg.train_dataloader.batch_size == ds["train_micro_batch_size_per_gpu"]
    assert cfg.train_cfg.max_iters == 5000 * accum  # micro-batches: 5000 optimizer steps either way
    if suffix == "1x24g":
        assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
        assert ds["zero_optimization"]["overlap_comm"] is True  # the rest of the ZeRO-2 preset is kept


def test_fsdp_config_builds(tmp_path):
    from mmengine.registry import STRATEGIES

    from reseg.engine.runner import import_strategies

    import_strategies()
    cfg = Config.fromfile(os.path.join(ROOT, "configs", "lisa", "lisa_llava15-7b_sam-vit-h_reasonseg_fsdp.py"))
    assert cfg.runner_type == "FlexibleRunner" and cfg.precision == "bf16"
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"
    assert type(STRATEGIES.build(dict(cfg.strategy, work_dir=str(tmp_path)))).__name__ == "FSDPStrategy"


def test_train_strategy_flag_merges_a_preset_into_any_config():
    from reseg.engine.config_check import config_problems
    from reseg.tools import train

    cfg = Config.fromfile(os.path.join(ROOT, "configs", "lisa", "lisa_tiny_synthref.py"))
    notes = train.apply_strategy(cfg, "deepspeed_zero3")
    assert cfg.strategy.zero_optimization.stage == 3 and cfg.runner_type == "FlexibleRunner"
    # the config's optimiser, written out for DeepSpeed by the flag (and printed), not by the runner
    assert cfg.optim_wrapper == dict(type="DeepSpeedOptimWrapper", optimizer=dict(
        type="AdamW", lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0))
    assert (cfg.strategy.gradient_clipping, cfg.strategy.gradient_accumulation_steps,
            cfg.strategy.train_micro_batch_size_per_gpu) == (1.0, 1, cfg.train_dataloader.batch_size)
    assert cfg.precision == "bf16"  # the preset enables DeepSpeed's bf16
    assert any("'OptimWrapper' -> 'DeepSpeedOptimWrapper'" in n for n in notes)
    assert any("precision 'fp32' -> 'bf16'" in n for n in notes)
    assert config_problems(cfg, launcher="pytorch", cuda=True) == []
    with pytest.raises(SystemExit, match="presets: deepspeed_zero2, deepspeed_zero3, fsdp"):
        train.apply_strategy(cfg, "zero9")


RAS_REAL_CONFIGS = [os.path.join(ROOT, "configs", "ras", n) for n in
                    ("ras_llava15-13b_sam-vit-h_maskgroups-hq.py", "ras_llava15-13b_co-detr_refcoco.py")]
ras_real = pytest.mark.parametrize("ras_config", RAS_REAL_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))


@ras_real
def test_real_ras_config_without_llava_fails_naming_the_path(tmp_path, ras_config):
    cfg = Config.fromfile(ras_config)
    assert cfg.model.lmm.pretrained.endswith("llava-1.5-13b-hf")  # the paper's only size (anchorseg_ras.md §2.2)
    cfg.model.lmm.pretrained = str(tmp_path / "nowhere" / "llava-1.5-13b-hf")
    with pytest.raises(FileNotFoundError) as e:
        MODELS.build(cfg.model)
    assert "nowhere/llava-1.5-13b-hf" in str(e.value) and "model.lmm.pretrained" in str(e.value)


@ras_real
def test_real_ras_config_without_encoder_weights_fails_naming_every_missing_file(tmp_path, ras_config):
    cfg = Config.fromfile(ras_config)
    cfg.model.lmm = tiny_lmm_cfg(str(tmp_path / "tok"))
    cfg.model.mask_source.proposer = None  # the detector's own files are the proposer's business
    cfg.model.mask_source.pool = "auto"
    with pytest.raises(FileNotFoundError) as e:
        MODELS.build(cfg.model)
    msg = str(e.value)
    for i, enc in enumerate(cfg.model.mask_source.tokenizer.encoders):
        if enc.get("checkpoint"):
            assert enc["checkpoint"] in msg and f"model.mask_source.tokenizer.encoders[{i}].checkpoint" in msg
