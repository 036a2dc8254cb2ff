"""``--cfg-options`` on a top-level path variable also moves the paths the config derived from it."""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from reseg.cfg_options import describe_rewrites, merge_cfg_options

ROOT = Path(__file__).resolve().parents[1]

CONFIG = '''
data_root = "data/own"
other = 3
_sub = dict(data_root=data_root + "/refer_seg", image_dir="images/x")
train_dataloader = dict(dataset=dict(type="ConcatDataset", datasets=[dict(_sub, split="train"),
                                                                      dict(_sub, split="val")]))
pools = [data_root + "/pools/a.jsonl", "elsewhere/b.jsonl"]
pair = (data_root, "data/own2/not_derived")
'''


def _cfg(tmp_path: Path) -> Config:
    path = tmp_path / "cfg.py"
    path.write_text(CONFIG)
    return Config.fromfile(str(path))


def test_derived_strings_follow_the_variable_in_dicts_lists_and_tuples(tmp_path: Path):
    cfg = _cfg(tmp_path)
    changed = merge_cfg_options(cfg, {"data_root": "/data/mine/"})
    assert cfg.data_root == "/data/mine/"
    assert [d.data_root for d in cfg.train_dataloader.dataset.datasets] == ["/data/mine/refer_seg"] * 2
    assert cfg.train_dataloader.dataset.datasets[0].image_dir == "images/x"
    assert cfg.pools == ["/data/mine/pools/a.jsonl", "elsewhere/b.jsonl"]
    assert tuple(cfg.pair) == ("/data/mine", "data/own2/not_derived")  # a prefix only up to a '/'
    assert changed["train_dataloader.dataset.datasets.1.data_root"] == "/data/mine/refer_seg"
    assert "data_root" not in changed and "pools.0" in describe_rewrites(changed)


def test_explicit_keys_win_over_derived_ones(tmp_path: Path):
    cfg = _cfg(tmp_path)
    changed = merge_cfg_options(cfg, {"data_root": "/a", "pools": ["/b.jsonl"]})
    assert cfg.pools == ["/b.jsonl"] and not any(k.startswith("pools") for k in changed)


def test_other_options_are_a_plain_merge(tmp_path: Path):
    cfg = _cfg(tmp_path)
    assert merge_cfg_options(cfg, {"other": 5, "train_dataloader.dataset.datasets.0.split": "x"}) == {}
    assert cfg.other == 5 and cfg.train_dataloader.dataset.datasets[0].data_root == "data/own/refer_seg"
    assert merge_cfg_options(cfg, None) == {} and describe_rewrites({}) == ""


def test_dataset_dir_of_a_real_scale_config_moves_every_dataset(tmp_path: Path):
    cfg = Config.fromfile(str(ROOT / "configs" / "lisa" / "lisa_llava15-7b_sam-vit-h_reasonseg.py"))
    merge_cfg_options(cfg, {"dataset_dir": "/data/lisa"})
    roots = [d.data_root for d in cfg.train_dataloader.dataset.datasets] + [cfg.val_dataloader.dataset.data_root]
    assert roots and all(r.startswith("/data/lisa/") for r in roots)


def test_a_dict_replaces_a_key_that_holds_none_or_is_merged_into_a_dict():
    from mmengine.config import Config

    from reseg.cfg_options import merge_cfg_options

    cfg = Config(dict(model=dict(mask_source=dict(proposer=None, pool="auto"), head=dict(type="H", a=1))))
    merge_cfg_options(cfg, {"model.mask_source.proposer": dict(type="P", k=2), "model.head": dict(b=3)})
    assert cfg.model.mask_source.to_dict() == dict(proposer=dict(type="P", k=2), pool="auto")
    assert cfg.model.head.to_dict() == dict(type="H", a=1, b=3)  # dict onto dict: merged as mmengine does
