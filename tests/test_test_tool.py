"""``tools/test.py`` next to a training run: another head's checkpoint is flagged, the run's files stay.

* A checkpoint records the model it was saved from (mmengine's ``meta['cfg']``, read without running
  it; ``reseg weights`` carries it into the ``.safetensors`` metadata). LISA's weights fit READ's keys
  exactly, so testing a READ config with a LISA checkpoint used to score silently: now a warning, and
  an error with ``--strict-meta``; ``reseg.load_model`` warns too.
* Testing into the training's work dir leaves the training's config dump as it was (the tested config
  goes into the test run's own timestamp folder) and leaves no empty folder behind.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tiny import tiny_train_cfg


@pytest.fixture(scope="module")
def lisa_run(synth_root, tmp_path_factory):
    """A 2-iteration tiny LISA training: its work dir and config (with a test section)."""
    from reseg.engine.runner import build_runner

    tmp = tmp_path_factory.mktemp("lisa_run")
    work = tmp / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp / "tok"), str(work), max_iters=2, batch_size=2, ckpt_interval=2)
    cfg.train_cfg.val_interval = 1000
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.test_cfg = dict(type="TestLoop")
    build_runner(cfg).train()
    return work, cfg


def _dump(cfg, path: Path, **model) -> str:
    cfg = copy.deepcopy(cfg)
    cfg.model.update(model)
    cfg.dump(str(path))
    return str(path)


def test_another_heads_checkpoint_warns_and_strict_meta_refuses(lisa_run, tmp_path, capsys):
    from reseg.cli import main as reseg_cli
    from reseg.tools import test as test_tool

    work, cfg = lisa_run
    read_cfg = _dump(cfg, tmp_path / "read.py", head=dict(type="READHead", num_points=4, down_sample=1))
    ckpt = str(work / "iter_2.pth")
    args = [read_cfg, ckpt, "--work-dir", str(tmp_path / "t")]
    assert test_tool.main(args) == 0
    err = capsys.readouterr().err
    assert "warning: checkpoint" in err and "model.head.type='LISAHead' in the checkpoint, 'READHead' in the config" \
        in err and "--strict-meta" in err, err
    with pytest.raises(SystemExit, match=r"error: checkpoint .*iter_2\.pth.*'LISAHead' in the checkpoint, "
                                         r"'READHead' in the config.*--strict-meta"):
        test_tool.main(args + ["--strict-meta"])

    st = tmp_path / "lisa.safetensors"  # the recorded model travels into the safetensors file
    assert reseg_cli(["weights", ckpt, str(st)]) == 0
    with pytest.raises(SystemExit, match=r"'LISAHead' in the checkpoint, 'READHead' in the config"):
        test_tool.main([read_cfg, str(st), "--work-dir", str(tmp_path / "t"), "--strict-meta"])

    same = _dump(cfg, tmp_path / "lisa.py")  # the checkpoint's own config: no warning
    assert test_tool.main([same, ckpt, "--work-dir", str(tmp_path / "t"), "--strict-meta"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_load_model_warns_about_another_heads_checkpoint(lisa_run, tmp_path):
    from reseg import load_model

    work, cfg = lisa_run
    read_cfg = _dump(cfg, tmp_path / "read.py", head=dict(type="READHead", num_points=4, down_sample=1))
    with pytest.warns(UserWarning, match=r"model.head.type='LISAHead' in the checkpoint, 'READHead' in the config"):
        load_model(read_cfg, str(work / "iter_2.pth"), device="cpu")


def test_the_recorded_model_is_read_without_running_the_config(tmp_path):
    from reseg.engine.checkpoint import model_types, recorded_model

    marker = tmp_path / "ran"
    text = (f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
            "model = dict(type='ReasoningSegmentor', head=dict(type='reseg.LISAHead', dice_weight=0.5),\n"
            "             lmm=dict(type='LlavaLMM', tiny=dict(vision=dict(hidden_size=8))), mask_source=None)\n")
    model = recorded_model(text)
    assert not marker.exists()
    assert model_types(model) == {"model.type": "ReasoningSegmentor", "model.head.type": "LISAHead",
                                  "model.lmm.type": "LlavaLMM"}
    assert recorded_model("not python (") is None and recorded_model(None) is None


def _training_dir(lisa_run, work: Path, configs: Path) -> tuple[str, str]:
    """``work`` laid out like a training run of config ``run.py``: its config dump and its checkpoint."""
    import shutil

    src, cfg = lisa_run
    work.mkdir(parents=True)
    shutil.copy(src / "iter_2.pth", work / "iter_2.pth")
    configs.mkdir(exist_ok=True)
    config = _dump(cfg, configs / "run.py")
    (work / "run.py").write_text("# the training run's dump\ntrain_cfg = dict(max_iters=2)\n")
    return config, str(work / "iter_2.pth")


def test_testing_with_the_default_work_dir_leaves_the_training_run_alone(lisa_run, tmp_path, monkeypatch, capsys):
    from reseg.tools import test as test_tool

    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work_dirs" / "run"  # tools/test.py's default work dir of configs named run.py
    config, ckpt = _training_dir(lisa_run, work, tmp_path / "configs")
    before = sorted(p.name for p in work.iterdir())
    assert test_tool.main([config, ckpt]) == 0
    out = capsys.readouterr().out
    assert (work / "run.py").read_text() == "# the training run's dump\ntrain_cfg = dict(max_iters=2)\n"
    added = sorted({p.name for p in work.iterdir()} - set(before))
    assert len(added) == 1 and added[0].startswith("test_"), added
    log = work / added[0] / f"{added[0]}.log"
    assert (work / added[0] / "vis_data" / "config.py").is_file()  # the config that was tested
    # item 10: the environment and config go to the log file, the console names it
    assert "System environment" in log.read_text() and "Config:" in log.read_text()
    assert "System environment" not in out and "Hooks will be executed" not in out, out[:2000]
    assert f"environment, config and hooks of this run: {log}" in out
    assert sorted(p.name for p in (tmp_path / "work_dirs").iterdir()) == ["run"]  # nothing beside it


def test_a_test_that_fails_before_testing_leaves_no_folder(lisa_run, tmp_path, capsys):
    from reseg.tools import test as test_tool

    work = tmp_path / "work"
    config, ckpt = _training_dir(lisa_run, work, tmp_path / "configs")
    bad = tmp_path / "cut.pth"
    bad.write_bytes(Path(ckpt).read_bytes()[:5000])
    with pytest.raises(SystemExit, match=r"error: .*cut\.pth.*corrupt or truncated"):
        test_tool.main([config, str(bad), "--work-dir", str(work)])
    assert sorted(p.name for p in work.iterdir()) == ["iter_2.pth", "run.py"]
    out = capsys.readouterr().out
    assert "System environment" not in out and len(out.splitlines()) < 10, out[:3000]


def test_two_tests_in_one_second_get_their_own_log_folders(tmp_path):
    """mmengine names its logger and visualizer after the timestamp: a second test run in the same second
    (a refused checkpoint, then another) must not reuse the first one's (removed) folder."""
    from reseg.engine.runner import _test_stamp

    first = _test_stamp("20990101_000000", str(tmp_path), True)
    second = _test_stamp("20990101_000000", str(tmp_path), True)
    assert (first, second) == ("test_20990101_000000", "test_20990101_000000_2")
    (tmp_path / "test_20990101_000001").mkdir()  # another process's test of that second
    assert _test_stamp("20990101_000001", str(tmp_path), True) == "test_20990101_000001_2"
    assert _test_stamp("20990101_000002", str(tmp_path), False) == "test_20990101_000002"
