"""A config's relative paths are under the reseg root (``reseg.paths``), whatever the current folder.

``load_model`` and the tools work from any folder and write nothing into it; ``RESEG_ROOT`` moves the
root; a missing file that a ``make`` target writes names that target.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reseg.paths import missing_hint, reseg_root, resolve_path

ROOT = Path(__file__).resolve().parents[1]


def test_the_root_is_the_checkout_or_reseg_root(tmp_path, monkeypatch):
    monkeypatch.delenv("RESEG_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert reseg_root() == ROOT
    assert resolve_path("data/synthref") == ROOT / "data" / "synthref"
    monkeypatch.setenv("RESEG_ROOT", str(tmp_path / "elsewhere"))
    assert resolve_path("data/synthref") == tmp_path / "elsewhere" / "data" / "synthref"
    assert resolve_path("/abs/x.pth") == Path("/abs/x.pth")
    assert resolve_path("~/x.pth") == Path.home() / "x.pth"


def test_missing_hints(tmp_path, monkeypatch):
    monkeypatch.setenv("RESEG_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    assert "`make pools`" in missing_hint("data/synthref/pools/synthref_val.jsonl")
    assert "`make data`" in missing_hint("data/synthref/refer_seg")
    for part in ("data/tiny_models/vision_tiny.pth", "data/tiny_models/sam_tiny.pth",
                 "data/tiny_models/sam128_attr/sam_tiny.pth"):
        assert "`make pretrain-demo` (part of `make demo`)" in missing_hint(part)
        assert f"in {tmp_path / 'root'}" in missing_hint(part)
    assert missing_hint("checkpoints/sam_vit_h_4b8939.pth") == ""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "sam.pth").touch()  # in the current folder, not under the root
    hint = missing_hint("checkpoints/sam.pth")
    assert str(tmp_path / "checkpoints" / "sam.pth") in hint and "RESEG_ROOT" in hint


def _write_tiny_parts(root: Path, config: Path) -> None:
    """The parts ``config`` names (vision tower, tiny SAM), random, where ``make demo`` writes them."""
    from mmengine.config import Config

    from reseg.registry import LMMS, MASK_SOURCES

    cfg = Config.fromfile(str(config)).model
    lmm_cfg = cfg.lmm.to_dict()
    vision = lmm_cfg["tiny"].pop("vision_checkpoint")
    lmm_cfg["tiny"]["tokenizer_dir"] = str(root / "tok")
    sam_cfg = dict(cfg.mask_source.to_dict(), checkpoint=None)
    torch.manual_seed(0)
    for rel, sd in ((vision, LMMS.build(lmm_cfg).model.model.vision_tower.state_dict()),
                    (cfg.mask_source.checkpoint, MASK_SOURCES.build(sam_cfg).sam.state_dict())):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(sd, root / rel)


def test_load_model_works_from_any_folder_and_writes_nothing_there(tmp_path, monkeypatch):
    from reseg import load_model

    config = ROOT / "configs" / "lisa" / "lisa_tiny_synthref.py"
    root, cwd = tmp_path / "root", tmp_path / "somewhere"
    cwd.mkdir()
    monkeypatch.setenv("RESEG_ROOT", str(root))
    _write_tiny_parts(root, config)
    monkeypatch.chdir(cwd)
    with pytest.warns(UserWarning, match="no checkpoint given"):
        seg = load_model(str(config), device="cpu")
    assert type(seg.model.head).__name__ == "LISAHead"
    assert list(cwd.iterdir()) == []  # the tokenizer cache went under the root, not here
    assert (root / "data" / "tiny_models" / "tokenizer" / "tokenizer.json").is_file()
    sd = torch.load(root / "data" / "tiny_models" / "vision_tiny.pth", weights_only=True)
    got = seg.model.lmm.model.model.vision_tower.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())  # the root's parts were loaded


def test_a_dataset_root_is_under_the_reseg_root(synth_root, tmp_path, monkeypatch):
    from reseg.datasets import RefCOCODataset

    for folder in (tmp_path / "root", tmp_path / "cwd"):
        (folder / "data").mkdir(parents=True)
        (folder / "data" / "synthref").symlink_to(synth_root)
    monkeypatch.setenv("RESEG_ROOT", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path / "cwd")
    ds = RefCOCODataset("data/synthref/refer_seg", dataset="synthref", split="val", test_mode=True)
    assert ds.data_root == tmp_path / "root" / "data" / "synthref" / "refer_seg" and len(ds) > 0
    monkeypatch.setenv("RESEG_ROOT", str(tmp_path / "empty"))  # the current folder's copy is not looked at
    with pytest.raises(FileNotFoundError, match=r"REFER data_root .*empty/data/synthref/refer_seg.*`make data`"):
        RefCOCODataset("data/synthref/refer_seg", dataset="synthref", split="val")
