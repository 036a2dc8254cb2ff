"""Every documented tiny command works straight after ``make demo``, with nothing else built.

The tiny parts are built as ``make demo`` builds them: the ``tools/research/pretrain_tiny.py`` commands
that ``make -n pretrain-demo`` prints, run as printed but at 2 steps each, in a folder laid out like
a fresh clone (``configs/``, ``tools/``, ``docs/`` of this checkout; ``data/synthref`` the session's
small benchmark) that ``RESEG_ROOT`` names. The configs are the repository's, unchanged, so the paths
they name are the ones ``make demo`` writes. Then the documented commands run there: the own-data
example, a 2-iteration training of tiny READ, AnchorSeg and RAS, and (``make test-slow``) a 2-process
``torchrun`` of tiny LISA; and every tiny config builds its model (the RAS configs on RES / GRES data
name ``make pools``).
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["--steps", "2", "--vision-steps", "2"]


def _env(root: Path) -> dict:
    return dict(os.environ, RESEG_ROOT=str(root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                PYTHONHASHSEED="0", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def demo_pretrain_commands() -> list[list[str]]:
    """The pretrain commands of ``make pretrain-demo`` (``make -B -n``: every step, nothing run)."""
    out = subprocess.run(["make", "-B", "-n", "pretrain-demo"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    cmds = [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if "pretrain_tiny.py" in line]
    assert len(cmds) == 2, out
    return cmds


def _run(cmd: list[str], cwd: Path, root: Path, timeout: int = 600) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=_env(root), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def demo_root(synth_root, tmp_path_factory) -> Path:
    """A fresh clone after ``make demo``'s data and pretrain steps (at 2 steps each)."""
    root = tmp_path_factory.mktemp("clone")
    for name in ("configs", "tools", "docs"):
        (root / name).symlink_to(ROOT / name)
    (root / "data").mkdir()
    (root / "data" / "synthref").symlink_to(synth_root)
    for cmd in demo_pretrain_commands():
        assert cmd[0].endswith("python") and "--data" in cmd, cmd
        _run([sys.executable, *cmd[1:], *STEPS], root, root)
    built = sorted(str(p.relative_to(root / "data")) for p in (root / "data" / "tiny_models").rglob("*.pth"))
    assert built == ["tiny_models/sam128_attr/sam_tiny.pth", "tiny_models/sam_tiny.pth",
                     "tiny_models/vision_tiny.pth"]
    return root


def _train(root: Path, config: str, work: str, *options: str) -> str:
    return _run([sys.executable, "tools/train.py", config, "--work-dir", work, "--cfg-options",
                 "train_cfg.max_iters=2", *options], root, root)


def test_the_own_data_example_runs_as_documented(demo_root):
    _run([sys.executable, "tools/convert_own_data.py", "docs/examples/own_data/data.jsonl", "--out", "data/own_data"],
         demo_root, demo_root)
    _train(demo_root, "configs/lisa/lisa_tiny_own-data.py", "work_dirs/own_smoke", "data_root=data/own_data")
    assert (demo_root / "work_dirs" / "own_smoke" / "iter_2.pth").is_file()


@pytest.mark.parametrize("config", ["configs/read/read_tiny_synthref.py",
                                    "configs/anchorseg/anchorseg_tiny_synthref.py",
                                    "configs/ras/ras_tiny_synthref-ores.py"])
def test_a_tiny_method_trains_two_iterations(demo_root, config):
    name = Path(config).stem
    _train(demo_root, config, f"work_dirs/{name}")
    assert (demo_root / "work_dirs" / name / "iter_2.pth").is_file()


@pytest.mark.slow  # ~40 s; tests/test_distributed.py runs torchrun on CPU in every suite
def test_two_torchrun_processes_train_tiny_lisa(demo_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(port), "tools/train.py", "configs/lisa/lisa_tiny_synthref.py", "--launcher",
                "pytorch", "--work-dir", "work_dirs/lisa_ddp", "--cfg-options", "train_cfg.max_iters=2"],
               demo_root, demo_root)
    assert (demo_root / "work_dirs" / "lisa_ddp" / "iter_2.pth").is_file(), log[-2000:]


#: tiny configs that need candidate pools no make-demo step writes, and what their error names
NEEDS_POOLS = {"ras_tiny_synthref-res.py": "`make pools`", "ras_tiny_synthref-gres.py": "`make pools`",
               "ras_tiny_own-data.py": "tools/make_pools.py"}


def test_every_tiny_config_builds_its_model(demo_root, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from reseg.registry import MODELS, SCOPE

    monkeypatch.setenv("RESEG_ROOT", str(demo_root))
    configs = sorted(p for p in (ROOT / "configs").glob("*/*.py") if "_tiny" in p.name and p.parent.name != "_base_")
    assert len(configs) >= 15
    for path in configs:
        cfg = Config.fromfile(str(path))
        with DefaultScope.overwrite_default_scope(SCOPE):
            if path.name in NEEDS_POOLS:
                with pytest.raises(FileNotFoundError, match="pool file not found") as err:
                    MODELS.build(cfg.model)
                assert NEEDS_POOLS[path.name] in str(err.value), str(err.value)
            else:
                MODELS.build(cfg.model)


def test_a_missing_tiny_part_names_the_make_target(tmp_path, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from reseg.registry import MODELS, SCOPE

    monkeypatch.setenv("RESEG_ROOT", str(tmp_path))
    cfg = Config.fromfile(str(ROOT / "configs" / "lisa" / "lisa_tiny_synthref.py"))
    with DefaultScope.overwrite_default_scope(SCOPE), pytest.raises(FileNotFoundError) as err:
        MODELS.build(cfg.model)
    msg = str(err.value)
    assert str(tmp_path / "data" / "tiny_models" / "vision_tiny.pth") in msg and "`make pretrain-demo`" in msg, msg
    assert "model.lmm.tiny.vision_checkpoint" in msg and "sam_vit_h" not in msg
    assert not (tmp_path / "data" / "tiny_models" / "tokenizer").exists()  # nothing written before the check


def _two_iterations(text: str) -> str:
    """A documented ``tools/train.py`` command at 2 iterations (its ``--cfg-options`` extended), or a
    documented ``tools/test.py`` command of the 500-iteration checkpoint on the 2-iteration one."""
    if "tools/train.py" in text:
        return text + (" train_cfg.max_iters=2" if "--cfg-options" in text else " --cfg-options train_cfg.max_iters=2")
    return text.replace("/iter_500.pth", "/iter_2.pth")


@pytest.mark.slow  # `make demo` in a fresh clone: its own venv, pretraining and demo training (~1 h on 2 cores)
def test_a_fresh_clone_after_make_demo_runs_the_documented_examples(tmp_path):
    """Issue 29's blocker as a new user meets it: ``git clone``, ``make demo``, nothing else; then the
    own-data example (docs/own_data.md's three steps) and the tiny READ and AnchorSeg trainings of
    their method pages run as written (trainings at 2 iterations), and a tiny RAS training of 2
    iterations. Run it with ``make test-slow`` or ``pytest -m slow tests/test_after_make_demo.py -k fresh``;
    it clones HEAD, so commit first."""
    import doc_commands as dc

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in _env(clone).items() if k != "RESEG_ROOT"}  # the clone is found as a checkout
    done = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True, timeout=4 * 3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    activate = f"source {clone / '.venv' / 'bin' / 'activate'} && "
    quick_start = [s for s in dc.extract(clone / "docs" / "own_data.md", clone) if s.kind == "runnable"][:3]
    pages = [clone / "docs" / "methods" / page for page in ("read.md", "anchorseg.md")]
    method_runs = [s for page in pages for s in dc.extract(page, clone)
                   if s.kind == "runnable" and "_tiny_synthref.py" in s.text]
    assert [s.text.split()[1] for s in quick_start] == ["tools/convert_own_data.py", "tools/train.py", "tools/test.py"]
    assert len(method_runs) == 4, [s.where for s in method_runs]  # train and test of each
    for step in [*quick_start, *method_runs]:
        _run(["bash", "-e", "-o", "pipefail", "-c", activate + _two_iterations(step.text)], clone, clone, timeout=1800)
    for work in ("lisa_tiny_own-data", "read_tiny_synthref", "anchorseg_tiny_synthref"):
        assert (clone / "work_dirs" / work / "iter_2.pth").is_file(), work
    _run(["bash", "-c", activate + "python tools/train.py configs/ras/ras_tiny_synthref-ores.py --cfg-options "
          "train_cfg.max_iters=2"], clone, clone, timeout=1800)
    assert (clone / "work_dirs" / "ras_tiny_synthref-ores" / "iter_2.pth").is_file()
