"""Precompute candidate pools for a dataset: one proposer run per image, written as a pool file.

    python tools/make_pools.py PROPOSER_CFG [--dataset-config CONFIG] [--split val|train|test]
        --out pools.jsonl [--overwrite] [--limit N] [--key image_id]
        [--cfg-options k=v ...] [--dataset-cfg-options k=v ...]
        [--oracle-rule coverage|best_per_instance] [--oracle-thr 0.5] [--oracle-split-by KEY]

PROPOSER_CFG is a config file with a ``proposer = dict(type=..., ...)`` variable, or a model config
whose ``model.mask_source.proposer`` holds one (``--cfg-options`` override keys of this file, e.g.
``proposer.amg.points_per_side=16``). The dataset is ``<split>_dataloader.dataset`` of
``--dataset-config`` (default: PROPOSER_CFG itself), built in test mode (every query of every
sample; ``--dataset-cfg-options`` override its keys).

The proposer runs once per distinct value of ``Sample.meta[--key]`` (``image_id`` by default; two
different images with the same value are an error: choose a key that is unique, e.g. ``file_name``).
The file is written atomically when all images are done (``docs/proposers.md`` has the format); an
existing file is kept unless ``--overwrite`` is given. Read it back with
``proposer=dict(type='PrecomputedProposer', pool_file='pools.jsonl')``.

At the end the pool's **oracle** gIoU/cIoU over the dataset's queries (``PoolOracleMetric``: the
best any selection head could do with these pools, ``anchorseg_ras.md`` §2.5) and the mean pool size
are printed and stored in the file's header.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import hashlib
import inspect
import os
import sys
import time
from typing import Any

from mmengine.config import Config, ConfigDict

from reseg.cfg_options import KeyValueAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Precompute candidate pools (tools/make_pools.py)")
    p.add_argument("proposer_config", help="config file with `proposer = dict(type=...)` (or a model config with "
                                           "model.mask_source.proposer)")
    p.add_argument("--dataset-config", help="config whose <split>_dataloader.dataset to run on "
                                            "(default: PROPOSER_CONFIG)")
    p.add_argument("--split", choices=["train", "val", "test"], default="val",
                   help="which dataloader's dataset of the dataset config (default val)")
    p.add_argument("--out", required=True, help="the pool file to write (.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--limit", type=int, default=None, help="stop after this many distinct images")
    p.add_argument("--key", default="image_id",
                   help="the Sample.meta field naming an image (default image_id; must be unique per image)")
    p.add_argument("--cfg-options", nargs="+", action=KeyValueAction, default=None,
                   help="override keys of PROPOSER_CONFIG, e.g. proposer.amg.points_per_side=16")
    p.add_argument("--dataset-cfg-options", nargs="+", action=KeyValueAction, default=None,
                   help="override keys of the dataset config, e.g. val_dataloader.dataset.data_root=/data/x")
    p.add_argument("--oracle-rule", choices=["coverage", "best_per_instance"], default="coverage",
                   help="PoolOracleMetric rule (default coverage: candidates covered > --oracle-thr by the target)")
    p.add_argument("--oracle-thr", type=float, default=0.5, help="coverage threshold of the oracle (default 0.5)")
    p.add_argument("--oracle-split-by", default=None,
                   help="also report the oracle per value of this key (e.g. dataset)")
    return p.parse_args(argv)


def _plain(obj: Any) -> Any:
    """JSON-friendly copy of a config value (classes and other objects become their names)."""
    if isinstance(obj, (ConfigDict, dict)):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, type):
        return obj.__name__
    return str(obj)


def proposer_config(cfg: Config, path: str) -> tuple[dict, str]:
    """``(proposer config dict, where it was found)`` from a proposer or model config."""
    prop = cfg.get("proposer", None)
    if prop is not None:
        where = "proposer"
    else:
        src = (cfg.get("model", None) or {}).get("mask_source", None) or {}
        prop = src.get("proposer", None) if hasattr(src, "get") else None
        where = "model.mask_source.proposer"
    if not isinstance(prop, dict) or "type" not in prop:
        raise SystemExit(f"error: {path} has no proposer config: expected a variable `proposer = dict(type=...)` or "
                         "model.mask_source.proposer = dict(type=...)")
    return copy.deepcopy(prop.to_dict() if isinstance(prop, ConfigDict) else dict(prop)), where


def in_test_mode(ds_cfg: Any) -> Any:
    """A copy of a dataset config with ``test_mode=True`` on every dataset that takes it (all queries)."""
    from reseg.registry import DATASETS

    ds_cfg = copy.deepcopy(ds_cfg)

    def visit(c: Any) -> None:
        if not isinstance(c, dict):
            return
        for child in c.get("datasets", None) or []:
            visit(child)
        if "dataset" in c:
            visit(c["dataset"])
        typ = c.get("type")
        try:
            cls = DATASETS.get(typ) if isinstance(typ, str) else typ
            params = inspect.signature(cls).parameters if cls is not None else {}
        except Exception:
            params = {}
        if "test_mode" in params:
            c["test_mode"] = True

    visit(ds_cfg)
    return ds_cfg


def image_digest(image) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(image.shape).encode())
    h.update(image.tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.proposer_config):
        sys.exit(f"error: proposer config {args.proposer_config!r} does not exist")
    ds_config = args.dataset_config or args.proposer_config
    if not os.path.isfile(ds_config):
        sys.exit(f"error: dataset config {ds_config!r} does not exist")
    if os.path.exists(args.out) and not args.overwrite:
        sys.exit(f"error: {args.out!r} exists; pass --overwrite to replace it")
    if args.limit is not None and args.limit < 1:
        sys.exit(f"error: --limit must be >= 1, got {args.limit}")

    from reseg.plugins import load_plugins

    load_plugins()
    import reseg.datasets  # noqa: F401  (register loaders)
    from reseg.cfg_options import describe_rewrites, merge_cfg_options
    from reseg.evaluation import PoolOracleMetric
    from reseg.evaluation.dump import build_dataset
    from reseg.models.mask_sources.pool.proposers import PoolFileWriter
    from reseg.registry import PROPOSERS

    pcfg = Config.fromfile(args.proposer_config)
    notes = [describe_rewrites(merge_cfg_options(pcfg, args.cfg_options))]
    prop_cfg, prop_where = proposer_config(pcfg, args.proposer_config)
    dcfg = pcfg if ds_config == args.proposer_config else Config.fromfile(ds_config)
    notes.append(describe_rewrites(merge_cfg_options(dcfg, args.dataset_cfg_options)))
    for note in filter(None, notes):
        print(note)
    loader = dcfg.get(f"{args.split}_dataloader", None)
    if not loader or "dataset" not in loader:
        sys.exit(f"error: {ds_config} has no {args.split}_dataloader.dataset")
    ds_cfg = in_test_mode(loader["dataset"].to_dict() if isinstance(loader["dataset"], ConfigDict)
                          else dict(loader["dataset"]))
    dataset = build_dataset(ds_cfg, scope=dcfg.get("default_scope", "reseg"))

    build_cfg = dict(prop_cfg)
    cls = PROPOSERS.get(build_cfg["type"]) if isinstance(build_cfg["type"], str) else build_cfg["type"]
    if "config_key" in inspect.signature(cls).parameters:
        build_cfg.setdefault("config_key", prop_where)  # errors name the key of this config
    proposer = PROPOSERS.build(build_cfg)
    metric = PoolOracleMetric(rule=args.oracle_rule, thr=args.oracle_thr, split_by=args.oracle_split_by)

    try:
        from reseg import __version__ as reseg_version
    except ImportError:
        reseg_version = None
    header = dict(
        proposer=proposer.describe(),
        proposer_config=_plain(prop_cfg),
        proposer_source=f"{os.path.abspath(args.proposer_config)} ({prop_where})",
        dataset=dict(config=os.path.abspath(ds_config), split=args.split, dataset=_plain(ds_cfg)),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        reseg_version=reseg_version,
        limit=args.limit,
    )

    from tqdm import tqdm

    digests: dict[str, tuple[str, str]] = {}  # key value -> (image digest, first sample id)
    scored: set[str] = set()
    sizes: list[int] = []
    seconds = 0.0
    last: tuple[str, Any] | None = None  # (key value, masks) of the previous sample's image
    bar = tqdm(total=len(dataset), desc="pools", unit="sample", dynamic_ncols=True)
    try:
        with PoolFileWriter(args.out, key=args.key, header=header, overwrite=args.overwrite) as writer:
            for i in range(len(dataset)):
                bar.update(1)
                sample = dataset[i]
                if args.key not in sample.meta:
                    sys.exit(f"error: sample {sample.sample_id!r} has no meta[{args.key!r}] (--key); "
                             f"its meta keys: {sorted(sample.meta)}")
                value = sample.meta[args.key]
                kstr = str(value)
                digest = image_digest(sample.image)
                if kstr in digests:
                    first_digest, first_id = digests[kstr]
                    if digest != first_digest:
                        sys.exit(f"error: --key {args.key} value {value!r} names two different images (samples "
                                 f"{first_id!r} and {sample.sample_id!r}); choose a key unique per image, e.g. "
                                 "--key file_name, or run each dataset separately")
                    if sample.sample_id in scored:  # a dataset listed twice (up-weighting): nothing to do
                        continue
                    masks = last[1] if last is not None and last[0] == kstr else writer.get(value)[0]
                else:
                    if args.limit is not None and len(digests) >= args.limit:
                        break
                    t0 = time.perf_counter()
                    props = proposer.propose(sample.image, dict(sample.meta))
                    seconds += time.perf_counter() - t0
                    writer.add(value, props.masks, props.scores)
                    digests[kstr] = (digest, sample.sample_id)
                    sizes.append(len(props))
                    masks = props.masks
                    bar.set_postfix(images=len(sizes), mean_N=f"{sum(sizes) / len(sizes):.1f}")
                last = (kstr, masks)
                if sample.sample_id in scored:  # a dataset listed twice (up-weighting): score its queries once
                    continue
                scored.add(sample.sample_id)
                s = dataclasses.replace(sample, candidate_masks=masks)
                metric.process(dict(samples=[s]), [dict(sample_id=s.sample_id)])
            oracle = metric.compute_metrics(metric.results) if metric.results else {}
            stats = dict(
                n_images=len(sizes),
                n_samples_scored=len(scored),
                mean_n=float(sum(sizes) / len(sizes)) if sizes else 0.0,
                min_n=int(min(sizes)) if sizes else 0,
                max_n=int(max(sizes)) if sizes else 0,
                seconds_per_image=seconds / len(sizes) if sizes else 0.0,
            )
            writer.header.update(stats)
            writer.header["oracle"] = dict(rule=args.oracle_rule, thr=args.oracle_thr,
                                           split_by=args.oracle_split_by,
                                           **{k: float(v) if isinstance(v, float) else v for k, v in oracle.items()})
    except FileExistsError as err:
        sys.exit(f"error: {err}")
    finally:
        bar.close()

    print(f"pools: {stats['n_images']} images, N mean {stats['mean_n']:.2f} (min {stats['min_n']}, max "
          f"{stats['max_n']}), {stats['seconds_per_image']:.2f} s/image -> {args.out}")
    if oracle:
        rule = f"{args.oracle_rule}" + (f" > {args.oracle_thr}" if args.oracle_rule == "coverage" else "")
        print(f"oracle ({rule}, {oracle.get('n_queries', 0)} queries): gIoU {oracle['gIoU']:.4f}  cIoU "
              f"{oracle['cIoU']:.4f}  mean selected {oracle.get('mean_selected', 0.0):.2f}")
        for k, v in oracle.items():
            if "/" in k and isinstance(v, float):
                print(f"  {k}: {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
