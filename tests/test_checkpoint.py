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
