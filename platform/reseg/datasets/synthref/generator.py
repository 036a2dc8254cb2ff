"""The synthetic benchmark ``synthref``: coloured shapes, written in the real datasets' formats.

``generate_synthref(out, SynthRefConfig(seed=0))`` writes five split families::

    <out>/refer_seg/images/synthref/synthref_<image_id>.jpg   # REFER / COCO (spec §5.2)
    <out>/refer_seg/synthref/instances.json                   # every object of every image
    <out>/refer_seg/synthref/refs(unc).p                      # train / val / testA / testB refs
    <out>/reason_seg/ReasonSeg/{train,val,test}/<name>.jpg + <name>.json   # ReasonSeg (spec §5.1)
    <out>/refer_seg/grefcoco_synth/grefs(unc).json + instances.json        # gRefCOCO (spec §5.3)
    <out>/refer_seg/images/grefcoco_synth/*.jpg
    <out>/refer_seg/fprefcoco_synth/refs(berkeley_exclude_unified).p + instances.json   # FP-RefCOCO (§5.4)
    <out>/refer_seg/images/fprefcoco_synth/*.jpg
    <out>/mask_groups/{train,validation}.json + images/*.jpg  # MaskGroups-HQ (anchorseg_ras.md §2.3)
    <out>/synthref_meta.json                                  # generator version, seed, counts

so the real loaders read it unchanged::

    RefCOCODataset(data_root=f"{out}/refer_seg", dataset="synthref", split_by="unc", split="val")
    ReasonSegDataset(data_root=f"{out}/reason_seg", split="val")
    GRefCOCODataset(data_root=f"{out}/refer_seg", dataset="grefcoco_synth", split="val")
    FPRefCOCODataset(data_root=f"{out}/refer_seg", dataset="fprefcoco_synth", split="val")
    MaskGroupsDataset(data_root=f"{out}/mask_groups", split="validation")

Determinism: every image comes from its own ``numpy`` generator seeded by
``(seed, family, split, index)``, so the same seed gives byte-identical files (whatever the number of
workers), and changing one split's count, or one family's, leaves the other splits' images unchanged.

This module only wires the parts of the package together: :mod:`.items` draws each image (scene from
:mod:`.scene`, expressions from :mod:`.language` and :mod:`.group_language`, pools from
:mod:`.candidate_pools`) and :mod:`.writers` writes the file formats.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reseg.datasets.io import PathLike
from reseg.datasets.synthref.candidate_pools import PoolConfig
from reseg.datasets.synthref.items import (
    IMAGE_ID_STRIDE,
    MaskGroupsItem,
    ReasonItem,
    ReferItem,
    make_fp_item,
    make_gref_item,
    make_maskgroups_item,
    make_reason_item,
    make_refer_item,
)
from reseg.datasets.synthref.scene import COLOURS, KINDS, SceneConfig
from reseg.datasets.synthref.writers import MaskGroupsWriter, ReasonSegWriter, ReferWriter

GENERATOR_VERSION = "2.0"
META_FILE = "synthref_meta.json"

REFER_SPLITS = ("train", "val", "testA", "testB")
REASON_SPLITS = ("train", "val", "test")
MASKGROUPS_SPLITS = ("train", "validation")


@dataclass
class SynthRefConfig:
    """What :func:`generate_synthref` writes. Counts are images per split."""

    seed: int = 0
    refer_counts: dict[str, int] = field(
        default_factory=lambda: {"train": 1600, "val": 150, "testA": 150, "testB": 150})
    reason_counts: dict[str, int] = field(
        default_factory=lambda: {"train": 300, "val": 100, "test": 100})
    scene: SceneConfig = field(default_factory=SceneConfig)
    dataset_name: str = "synthref"
    split_by: str = "unc"
    max_refs_per_image: int = 4
    max_sentences_per_ref: int = 3
    ignore_prob: float = 0.3
    long_query_prob: float = 0.5
    reason_family_weights: dict[str, float] = field(
        default_factory=lambda: {"colour": 0.3, "shape": 0.35, "combo": 0.2, "superlative": 0.15})
    jpeg_quality: int = 95
    # -- gRefCOCO ----------------------------------------------------------------------------------------
    gref_counts: dict[str, int] = field(
        default_factory=lambda: {"train": 500, "val": 100, "testA": 100, "testB": 100})
    gref_dataset_name: str = "grefcoco_synth"
    gref_max_single_refs: int = 2
    gref_max_multi_refs: int = 2
    gref_no_target_prob: float = 0.7
    # -- FP-RefCOCO --------------------------------------------------------------------------------------
    fp_counts: dict[str, int] = field(
        default_factory=lambda: {"train": 400, "val": 100, "testA": 100, "testB": 100})
    fp_dataset_name: str = "fprefcoco_synth"
    fp_split_by: str = "berkeley_exclude_unified"
    fp_prob: float = 0.5
    # -- MaskGroups --------------------------------------------------------------------------------------
    maskgroups_counts: dict[str, int] = field(
        default_factory=lambda: {"train": 400, "validation": 100})
    mg_dataset_name: str = "maskgroups_synth"
    mg_queries_per_image: tuple[int, int] = (2, 4)
    mg_reference_prob: float = 0.35
    mg_no_target_prob: float = 0.08
    mg_reference_empty_prob: float = 0.15
    pool: PoolConfig = field(default_factory=PoolConfig)

    def __post_init__(self) -> None:
        for name, counts, valid in (("refer_counts", self.refer_counts, REFER_SPLITS),
                                    ("reason_counts", self.reason_counts, REASON_SPLITS),
                                    ("gref_counts", self.gref_counts, REFER_SPLITS),
                                    ("fp_counts", self.fp_counts, REFER_SPLITS),
                                    ("maskgroups_counts", self.maskgroups_counts, MASKGROUPS_SPLITS)):
            bad = set(counts) - set(valid)
            if bad:
                raise ValueError(f"{name}: unknown splits {sorted(bad)}; valid: {list(valid)}")
            if any(int(v) < 0 or int(v) >= IMAGE_ID_STRIDE for v in counts.values()):
                raise ValueError(f"{name}: counts must be in [0, {IMAGE_ID_STRIDE}), got {counts}")


# -- the whole benchmark -------------------------------------------------------------------------------


def _refer_task(args: tuple[SynthRefConfig, str, int]) -> ReferItem:
    return make_refer_item(*args)


def _reason_task(args: tuple[SynthRefConfig, str, int]) -> ReasonItem:
    return make_reason_item(*args)


def _gref_task(args: tuple[SynthRefConfig, str, int]) -> ReferItem:
    return make_gref_item(*args)


def _fp_task(args: tuple[SynthRefConfig, str, int]) -> ReferItem:
    return make_fp_item(*args)


def _maskgroups_task(args: tuple[SynthRefConfig, str, int]) -> MaskGroupsItem:
    return make_maskgroups_item(*args)


def _imap(fn, tasks: list, workers: int):
    if workers <= 1 or len(tasks) < 2 * workers:
        return map(fn, tasks)
    import multiprocessing as mp

    pool = mp.get_context("fork").Pool(workers)
    try:
        return list(pool.imap(fn, tasks, chunksize=8))
    finally:
        pool.close()
        pool.join()


def _refer_counts(st: Counter, item: ReferItem) -> None:
    for r in item.refs:
        for strat in r["synth_strategies"]:
            st[f"sentences_{strat}"] += 1


def _gref_counts(st: Counter, item: ReferItem) -> None:
    for r in item.refs:
        n = len(r["sentences"])
        kind = "no_target" if r["ann_id"] == [-1] else "multi_target" if len(r["ann_id"]) > 1 else "single_target"
        st[f"refs_{kind}"] += 1
        st[f"sentences_{kind}"] += n
        st[f"strategy_{r['synth_strategy']}"] += 1


def _fp_counts(st: Counter, item: ReferItem) -> None:
    for r in item.refs:
        for sent in r["sentences"]:
            st["sentences_false_premise" if sent["is_false_premise"] else "sentences_true_premise"] += 1


def _write_refer_family(writer: ReferWriter, task, cfg: SynthRefConfig, counts: dict[str, int], workers: int,
                        extra) -> dict[str, dict[str, int]]:
    """Draw and write one REFER-layout family (no files at all when every count is 0)."""
    stats: dict[str, dict[str, int]] = {}
    tasks = [(cfg, s, i) for s in REFER_SPLITS for i in range(int(counts.get(s, 0)))]
    if not tasks:
        return stats
    for (_, split, _), item in zip(tasks, _imap(task, tasks, workers)):
        writer.add_image(item.image, item.jpeg, item.annotations, item.refs)
        st = stats.setdefault(split, Counter())
        st["images"] += 1
        st["annotations"] += len(item.annotations)
        st["refs"] += len(item.refs)
        st["sentences"] += sum(len(r["sentences"]) for r in item.refs)
        extra(st, item)
    writer.close()
    return {s: dict(sorted(v.items())) for s, v in stats.items()}


def generate_synthref(out: PathLike, cfg: SynthRefConfig | None = None, workers: int = 1,
                      overwrite: bool = False) -> dict[str, Any]:
    """Write the synthetic benchmark under ``out`` (layout in the module docstring); return the meta.

    Args:
        out: benchmark root (created).
        cfg: counts, seed and scene parameters (default: the demo sizes).
        workers: processes used to draw images (the output does not depend on it).
        overwrite: replace a benchmark already at ``out`` (only the folders this generator owns are
            removed). Without it an existing benchmark is an error.
    """
    cfg = cfg or SynthRefConfig()
    root = Path(out)
    refer = ReferWriter(root, cfg.dataset_name, cfg.split_by)
    reason = ReasonSegWriter(root)
    gref = ReferWriter(root, cfg.gref_dataset_name, "unc", refs_prefix="grefs", refs_format="json")
    fp = ReferWriter(root, cfg.fp_dataset_name, cfg.fp_split_by)
    groups = MaskGroupsWriter(root, MASKGROUPS_SPLITS)
    owned = refer.paths + reason.paths + gref.paths + fp.paths + groups.paths + [root / META_FILE]
    existing = [p for p in owned if p.exists() and (p.is_file() or any(p.iterdir()))]
    if existing and not overwrite:
        raise FileExistsError(
            f"{root} already holds a benchmark ({', '.join(str(p) for p in existing[:3])}); "
            "pass overwrite=True (--overwrite) to replace it"
        )
    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    refer_stats = _write_refer_family(refer, _refer_task, cfg, cfg.refer_counts, workers, _refer_counts)

    reason_stats: dict[str, dict[str, int]] = {}
    tasks = [(cfg, s, i) for s in REASON_SPLITS for i in range(int(cfg.reason_counts.get(s, 0)))]
    for item in _imap(_reason_task, tasks, workers):
        reason.add(item.split, item.name, item.jpeg, item.record)
        st = reason_stats.setdefault(item.split, Counter())
        st["images"] += 1
        st["long_queries"] += int(item.record["is_sentence"])
        st["with_ignore"] += int(any(s["label"] == "ignore" for s in item.record["shapes"]))
        st[f"rule_{item.record['synth']['family']}"] += 1

    gref_stats = _write_refer_family(gref, _gref_task, cfg, cfg.gref_counts, workers, _gref_counts)
    fp_stats = _write_refer_family(fp, _fp_task, cfg, cfg.fp_counts, workers, _fp_counts)

    mg_stats: dict[str, dict[str, int]] = {}
    tasks = [(cfg, s, i) for s in MASKGROUPS_SPLITS for i in range(int(cfg.maskgroups_counts.get(s, 0)))]
    for item in _imap(_maskgroups_task, tasks, workers):
        groups.add(item.split, item.file_name, item.jpeg, item.records)
        st = mg_stats.setdefault(item.split, Counter())
        st["images"] += 1
        st["pool_masks"] += len(item.records[0]["mask_pool"]) if item.records else 0
        for r in item.records:
            st["records"] += 1
            st["hybrid" if "ref_mask" in r else "text_only"] += 1
            st["empty_groups"] += int(not r["gt_mask_group"][0])
            st[f"strategy_{r['synth']['strategy']}"] += 1
    groups.close()

    meta = dict(
        generator="reseg.datasets.synthref",
        version=GENERATOR_VERSION,
        seed=cfg.seed,
        config=dict(asdict(cfg), scene=asdict(cfg.scene)),
        refer=dict(
            data_root="refer_seg",
            dataset=cfg.dataset_name,
            split_by=cfg.split_by,
            image_dir=f"refer_seg/images/{cfg.dataset_name}",
            refs_file=f"refer_seg/{cfg.dataset_name}/refs({cfg.split_by}).p",
            instances_file=f"refer_seg/{cfg.dataset_name}/instances.json",
            note="instances.json annotates every object of every image (visible part, with 'synth' "
                 "colour/kind/z attributes), not only the referred ones: enough for a largest-object "
                 "baseline.",
            splits=refer_stats,
        ),
        reason=dict(
            data_root="reason_seg/ReasonSeg",
            splits={s: dict(sorted(v.items())) for s, v in reason_stats.items()},
        ),
        grefcoco=dict(
            data_root="refer_seg",
            dataset=cfg.gref_dataset_name,
            split_by="unc",
            image_dir=f"refer_seg/images/{cfg.gref_dataset_name}",
            refs_file=f"refer_seg/{cfg.gref_dataset_name}/{gref.refs_name}",
            instances_file=f"refer_seg/{cfg.gref_dataset_name}/instances.json",
            note="ann_id is a list: several ids = several targets, [-1] = no target (spec §5.3).",
            splits=gref_stats,
        ),
        fprefcoco=dict(
            data_root="refer_seg",
            dataset=cfg.fp_dataset_name,
            split_by=cfg.fp_split_by,
            image_dir=f"refer_seg/images/{cfg.fp_dataset_name}",
            refs_file=f"refer_seg/{cfg.fp_dataset_name}/{fp.refs_name}",
            instances_file=f"refer_seg/{cfg.fp_dataset_name}/instances.json",
            note="each sentence has is_false_premise and gt_sent (the true sentence of the ref's object).",
            splits=fp_stats,
        ),
        mask_groups=dict(
            data_root="mask_groups",
            image_dir="mask_groups/images",
            files={s: f"mask_groups/{s}.json" for s in mg_stats},
            ref_field="ref_mask",
            ref_token="<mask_ref>",
            note="gt_mask_pool holds every object's visible mask (object order); gt_mask_group[0] indexes "
                 "it; ref_mask is a list of RLEs; mask_pool mixes exact, partial, merged, eroded, dilated, "
                 "shifted, jittered and background proposals (record['synth']['pool_sources']).",
            splits={s: dict(sorted(v.items())) for s, v in mg_stats.items()},
        ),
        kinds={k.name: dict(category_id=k.category_id, corners=k.corners) for k in KINDS.values()},
        colours={k: list(v) for k, v in COLOURS.items()},
    )
    (root / META_FILE).write_bytes(json.dumps(meta, indent=2).encode("utf-8") + b"\n")
    meta["_seconds"] = round(time.perf_counter() - start, 2)  # not written: files stay byte-identical
    return meta
