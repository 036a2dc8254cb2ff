"""Checkpoints load under torch's weights_only=True with no global override (environment.md)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from reseg.engine.checkpoint import from_plain, load_checkpoint_file, to_plain


def test_message_hub_round_trips_through_plain_containers(tmp_path):
    buf = HistoryBuffer([1.0, 2.5, 4.0], [1, 1, 2], max_length=10)
    ckpt = {"message_hub": {"log_scalars": {"train/loss": buf}, "runtime_info": {"iter": np.int64(7),
                                                                              "arr": np.arange(3)}},
            "state_dict": {"w": torch.ones(2)}}
    plain = {k: to_plain(v) for k, v in ckpt.items()}
    path = tmp_path / "ck.pth"
    torch.save(plain, path)
    back = torch.load(path, weights_only=True)  # would raise on any pickled object
    restored = from_plain(back["message_hub"])
    rb = restored["log_scalars"]["train/loss"]
    assert isinstance(rb, HistoryBuffer) and rb.max_length == 10
    assert rb.data[0].tolist() == [1.0, 2.5, 4.0] and rb.data[1].tolist() == [1, 1, 2]
    assert restored["runtime_info"]["iter"] == 7 and restored["runtime_info"]["arr"].tolist() == [0, 1, 2]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/reseg_pwned_by_checkpoint",))


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path):
    marker = "/tmp/reseg_pwned_by_checkpoint"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "meta": _Evil()}, f)
    with pytest.raises(RuntimeError, match="refusing to load"):
        load_checkpoint_file(str(path))
    assert not os.path.exists(marker)


# ----------------------------------------------------------------------------- atomic checkpoints
def _touch_ckpt(path, value: float) -> None:
    torch.save({"state_dict": {"w": torch.tensor([value])}}, path)


def test_latest_checkpoint_is_the_newest_complete_one_whatever_the_pointer_says(tmp_path):
    from reseg.engine.checkpoint import latest_checkpoint

    assert latest_checkpoint(str(tmp_path / "missing")) is None
    assert latest_checkpoint(str(tmp_path)) is None
    for step in (4, 8, 12):
        _touch_ckpt(tmp_path / f"iter_{step}.pth", step)
    (tmp_path / ".iter_16.pth.abc.tmp").write_bytes(b"half a checkpoint")  # a killed writer's leftover
    pointer = tmp_path / "last_checkpoint"
    newest = str(tmp_path / "iter_12.pth")
    assert latest_checkpoint(str(tmp_path)) == newest  # no pointer
    pointer.write_text("")  # killed while mmengine rewrote it
    assert latest_checkpoint(str(tmp_path)) == newest
    pointer.write_text(str(tmp_path / "iter_8.pth"))  # stale: killed between the rename and the pointer
    assert latest_checkpoint(str(tmp_path)) == newest
    pointer.write_text(str(tmp_path / "iter_99.pth"))  # names a file that is gone
    assert latest_checkpoint(str(tmp_path)) == newest
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    _touch_ckpt(elsewhere / "iter_20.pth", 20)
    pointer.write_text(str(elsewhere / "iter_20.pth"))  # an out_dir checkpoint, newer: trusted
    assert latest_checkpoint(str(tmp_path)) == str(elsewhere / "iter_20.pth")


_SLOW_WRITER = r"""
import os, sys, time
import torch
import reseg.fileio as fio
import reseg.engine.checkpoint as ck

def stall(fd):  # the bytes are in the temporary file; stop before it is renamed over the target
    print("WRITING", flush=True)
    time.sleep(60)

fio.os.fsync = stall
ck.AtomicLocalBackend().put(b"x" * 5_000_000, sys.argv[1])
"""


def test_a_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    import subprocess
    import sys

    from reseg.engine.checkpoint import latest_checkpoint

    target = tmp_path / "iter_8.pth"
    _touch_ckpt(target, 8.0)
    before = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING", proc.communicate()
    proc.kill()  # SIGKILL in the middle of saving
    proc.wait()
    assert target.read_bytes() == before
    assert load_checkpoint_file(str(target))["state_dict"]["w"].item() == 8.0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".iter_8.pth.")
    assert latest_checkpoint(str(tmp_path)) == str(target)


def test_old_checkpoints_are_pruned_only_after_the_new_one_is_saved(synth_root, tmp_path):
    """max_keep_ckpts=1: mmengine deleted the only checkpoint before writing the next one."""
    from reseg.engine.runner import build_runner
    from tiny import tiny_train_cfg

    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=4, batch_size=2, ckpt_interval=2)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 1
    cfg.train_cfg.val_interval = 1000
    runner = build_runner(cfg)
    hook = [h for h in runner.hooks if type(h).__name__ == "SafeCheckpointHook"]
    assert len(hook) == 1  # tiny_train_cfg's runtime (configs/_base_/default_runtime.py) names it
    real_save = runner.save_checkpoint
    calls = []

    def save_then_die(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed while saving iter_4")
        return real_save(*args, **kwargs)

    runner.save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    assert calls == ["iter_2.pth", "iter_4.pth"]
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_2.pth"]
    assert load_checkpoint_file(str(work / "iter_2.pth"))["meta"]["iter"] == 2
    assert (work / "last_checkpoint").read_text().strip() == str(work / "iter_2.pth")


def test_pruning_keeps_the_newest_checkpoints(synth_root, tmp_path):
    from reseg.engine.runner import build_runner
    from tiny import tiny_train_cfg

    work = tmp_path / "work"
    cfg = tiny_train_cfg(synth_root, str(tmp_path / "tok"), str(work), max_iters=6, batch_size=2, ckpt_interval=2)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 2
    cfg.train_cfg.val_interval = 1000
    build_runner(cfg).train()
    assert sorted(p.name for p in work.glob("iter_*.pth")) == ["iter_4.pth", "iter_6.pth"]
    assert not list(work.glob(".*.tmp"))


def test_step_seed_hook_makes_dropout_a_function_of_the_iteration():
    from types import SimpleNamespace

    from reseg.engine.determinism import StepSeedHook, step_seed

    hook = StepSeedHook()
    runner = SimpleNamespace(seed=0, iter=17)
    hook.before_train_iter(runner, 0)
    a = torch.rand(5)
    torch.rand(1000)  # whatever else consumed the RNG in between (validation, a new dataloader)
    hook.before_train_iter(runner, 0)
    assert torch.equal(torch.rand(5), a)
    runner.iter = 18
    hook.before_train_iter(runner, 0)
    assert not torch.equal(torch.rand(5), a)
    assert step_seed(0, 17) != step_seed(1, 17) and step_seed(0, 17) == step_seed(0, 17)


def test_load_model_weights_strict_names_keys_and_non_strict_loads_what_fits(tmp_path):
    from reseg.engine.checkpoint import load_model_weights

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    sd = {k: torch.full_like(v, 7.0) for k, v in model.state_dict().items()}
    sd["1.weight"] = torch.zeros(5, 4)  # resized
    sd["2.weight"] = torch.zeros(1)  # unexpected
    del sd["1.bias"]  # missing
    path = tmp_path / "partial.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ValueError, match=r"1 missing keys \['1.bias'\].*1 unexpected keys \['2.weight'\].*"
                                         r"1 of another shape \['1.weight \(5, 4\) vs \(2, 4\)'\]"):
        load_model_weights(model, str(path))
    report = load_model_weights(model, str(path), strict=False)
    assert report == dict(missing=["1.bias"], unexpected=["2.weight"], resized=["1.weight"])
    assert torch.equal(model[0].weight, torch.full((4, 3), 7.0)) and not torch.equal(model[1].weight, torch.zeros(2, 4))
