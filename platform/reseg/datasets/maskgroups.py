"""MaskGroups-HQ (RAS / Ref2Any, omni-referring segmentation): pick a group of masks from a pool.

Record format (anchorseg_ras.md §2.3, platform_research.md §C5; from third-party loaders of the HF
dataset ``Shengcao1006/MaskGroups-HQ``, not verified on the data). ``<data_root>/<split>.json`` is a
JSON list of records (``<split>.jsonl``, one record per line, works too), each with

* ``id``;
* ``image``: a file name in the image folder (``images_resized/`` in the release);
* ``conversations``: LLaVA-style ``[{from, value}]``; the first ``human`` turn holds ``<image>``,
  ``<mask_pool>`` and the query after ``<mask_pool>``, which may contain the reference placeholder;
* ``mask_pool``: COCO RLE dicts ``{size: [h, w], counts}``, the candidate proposals
  (-> ``Sample.candidate_masks``);
* ``gt_mask_pool``: COCO RLE dicts, the ground-truth masks;
* ``gt_mask_group``: lists of indices into ``gt_mask_pool`` (the released loaders use ``[0]``).

Two things are **guesses** (the spec does not know them), so they are constructor options:

* the reference-mask field, ``ref_field='ref_mask'``: a list of indices into ``gt_mask_pool``, a list
  of RLE dicts, or a single index / RLE dict; absent, ``None`` or ``[]`` = a text-only query;
* the reference placeholder, ``ref_token='<mask_ref>'`` (the paper figure writes ``<mask-ref>``).
  In ``Query.text`` it is always rewritten to :data:`REF_PLACEHOLDER` so heads see one spelling.

Candidate labels (``Query.pool_labels``) are not in the data; :func:`match_pool_labels` derives them
from the GT group (anchorseg_ras.md §2.4 L; the default rule is the coverage rule of the evaluation's
pool oracle, ``reseg.evaluation.functional.oracle_selection``).
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from reseg.datasets.base import ResegDataset
from reseg.datasets.io import (
    DatasetFormatError,
    PathLike,
    decode_rle,
    read_image_rgb,
    read_json,
    require_dir,
    require_key,
    resolve_under,
    rle_size,
    stack_masks,
)
from reseg.registry import DATASETS
from reseg.structures import Query, Sample

logger = logging.getLogger(__name__)

#: How ``Query.text`` spells the reference-mask placeholder, whatever the file uses.
REF_PLACEHOLDER = "<mask_ref>"
#: Rules of :func:`match_pool_labels`.
POOL_LABEL_RULES = ("coverage", "iou")
#: Image folders tried (under ``data_root``) when ``image_dir`` is not given.
DEFAULT_IMAGE_DIRS = ("images_resized", "images")


def match_pool_labels(
    candidates: np.ndarray, gt_masks: np.ndarray, rule: str = "coverage", thr: float = 0.5
) -> np.ndarray:
    """Per-candidate 0/1 training labels from a ground-truth group (a pure function).

    * ``rule="coverage"`` (default): candidate ``c`` is positive when the GT group's union ``U``
      covers more than ``thr`` of its own area, ``|c ∩ U| / |c| > thr``. Parts of a target (halves,
      eroded versions) are positive; a merge of a target with a non-target is positive only when
      the target makes up more than ``thr`` of it. This is the evaluation's pool-oracle rule.
    * ``rule="iou"``: positive when ``IoU(c, g) >= thr`` for some single GT mask ``g`` (one
      candidate per target instance, the RAS spec's first guess, anchorseg_ras.md §2.4 L).

    Empty candidates are never positive; an empty group (no GT mask, or only empty ones) makes every
    label 0.

    Args:
        candidates: ``[N, H, W]`` bool candidate pool.
        gt_masks: ``[n, H, W]`` bool GT instance masks of the group (``n`` may be 0), or ``[H, W]``.
        rule: one of :data:`POOL_LABEL_RULES`.
        thr: the threshold of the rule.

    Returns:
        ``[N] uint8`` labels.
    """
    if rule not in POOL_LABEL_RULES:
        raise ValueError(f"rule must be one of {POOL_LABEL_RULES}, got {rule!r}")
    cand = np.asarray(candidates, dtype=bool)
    gt = np.asarray(gt_masks, dtype=bool)
    if gt.ndim == 2:
        gt = gt[None]
    if cand.ndim != 3 or gt.ndim != 3 or cand.shape[1:] != gt.shape[1:]:
        raise ValueError(
            f"candidates must be [N, H, W] and gt_masks [n, H, W] of the same H, W; got "
            f"{cand.shape} and {gt.shape}"
        )
    n = cand.shape[0]
    if n == 0 or gt.shape[0] == 0:
        return np.zeros(n, dtype=np.uint8)
    flat = cand.reshape(n, -1)
    area = flat.sum(axis=1)
    if rule == "coverage":
        union = gt.reshape(gt.shape[0], -1).any(axis=0)
        inter = (flat & union[None]).sum(axis=1)
        keep = (area > 0) & (inter > thr * area)
    else:
        g = gt.reshape(gt.shape[0], -1)
        inter = flat.astype(np.float32) @ g.T.astype(np.float32)  # exact: counts < 2**24
        union = area[:, None] + g.sum(axis=1)[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        keep = (area > 0) & (iou >= thr).any(axis=1)
    return keep.astype(np.uint8)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a MaskGroups file: a JSON list, a JSON dict with a list under ``data``/``records``/
    ``annotations``, or JSON lines (``.jsonl``)."""
    if path.suffix == ".jsonl":
        records = []
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line.decode("utf-8-sig")))
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    raise DatasetFormatError(f"{path}: line {n}: invalid JSON ({err})") from None
        return records
    data = read_json(path)
    if isinstance(data, dict):
        for key in ("data", "records", "annotations"):
            if isinstance(data.get(key), list):
                return data[key]
    if not isinstance(data, list):
        raise DatasetFormatError(
            f"{path}: expected a JSON list of MaskGroups records (or JSON lines), got {type(data).__name__}"
        )
    return data


@DATASETS.register_module()
class MaskGroupsDataset(ResegDataset):
    """MaskGroups-HQ (ORES): one :class:`Sample` (task ``'ores'``) per image and candidate pool.

    Args:
        data_root: folder holding ``<split>.json`` (or ``.jsonl``) and the image folder.
        split: ``train`` or ``validation`` (the file stem), unless ``ann_file`` is given.
        ann_file: the records file; absolute, or relative to ``data_root`` (then to the working
            directory). Default: ``<split>.json``, else ``<split>.jsonl``.
        image_dir: image folder; absolute, or relative to ``data_root`` (then to the working
            directory). Default: the first of ``images_resized``, ``images`` under ``data_root``.
        group_index: which entry of ``gt_mask_group`` is the target group (0, as the loaders do).
        ref_field: the record field holding the reference masks (GUESS, see the module docstring).
        ref_token: the reference placeholder in the query text (GUESS); rewritten to ``<mask_ref>``.
        pool_token, image_token: the other placeholders of the human turn (removed from the text;
            the query is what follows ``pool_token``, or what precedes it if nothing follows). The
            first human turn is the query; the first gpt turn after it is kept as ``response``.
        label_rule, label_thr: how ``pool_labels`` are derived (:func:`match_pool_labels`).
        group_by_image: records of the same image with an *identical* ``mask_pool`` become one
            sample with one query each (as the REFER loaders do); False: one record per sample.
        test_mode: every query of the sample vs up to ``num_queries_per_sample`` drawn without
            replacement (training).
        num_queries_per_sample: see ``test_mode``.
        mask_size_mismatch: ``'error'`` (default): an RLE whose size differs from the image is an
            error naming the file, record and field; ``'resize'``: resize it (nearest) to the image.
        dataset_name: ``Sample.meta['dataset']``.
        seed: seed of the training-time sampling (``None``: Python's global ``random``).

    Items: ``Sample(image, queries, task='ores', candidate_masks [N, H, W] bool, meta)``. Each query:
    ``text`` (with ``<mask_ref>`` where the reference goes), ``masks`` = the GT group ``[n, H, W]``
    (``n == 0``, ``exists=False`` for an empty group), ``reference_masks`` ``[r, H, W]`` or None
    (text-only), ``pool_labels`` ``[N] uint8``, ``meta``: ``id``, ``has_reference``, ``gt_indices``,
    ``ref_indices`` (when given as indices), ``group_index``, ``response`` (the gpt turn, if any).
    ``Sample.meta``: ``dataset``, ``split``, ``image_id`` (the file name), ``file_name``,
    ``height``, ``width``, ``sample_id``, ``record_ids``, ``caption`` (if the records have one).
    """

    task = "ores"

    def __init__(
        self,
        data_root: PathLike,
        split: str = "validation",
        ann_file: PathLike | None = None,
        image_dir: PathLike | None = None,
        group_index: int = 0,
        ref_field: str = "ref_mask",
        ref_token: str = "<mask_ref>",
        pool_token: str = "<mask_pool>",
        image_token: str = "<image>",
        label_rule: str = "coverage",
        label_thr: float = 0.5,
        group_by_image: bool = True,
        test_mode: bool = False,
        num_queries_per_sample: int = 3,
        mask_size_mismatch: str = "error",
        dataset_name: str = "MaskGroups-HQ",
        seed: int | None = None,
    ) -> None:
        super().__init__(test_mode=test_mode, seed=seed)
        if int(num_queries_per_sample) < 1:
            raise ValueError(f"num_queries_per_sample must be >= 1, got {num_queries_per_sample}")
        if label_rule not in POOL_LABEL_RULES:
            raise ValueError(f"label_rule must be one of {POOL_LABEL_RULES}, got {label_rule!r}")
        if mask_size_mismatch not in ("error", "resize"):
            raise ValueError(f"mask_size_mismatch must be 'error' or 'resize', got {mask_size_mismatch!r}")
        for name, tok in (("ref_token", ref_token), ("pool_token", pool_token)):
            if not tok:
                raise ValueError(f"{name} must be a non-empty string")
        self.num_queries_per_sample = int(num_queries_per_sample)
        self.data_root = require_dir(data_root, "MaskGroups data_root (the folder holding <split>.json)")
        self.split = str(split)
        self.group_index = int(group_index)
        self.ref_field = str(ref_field)
        self.ref_token = str(ref_token)
        self.pool_token = str(pool_token)
        self.image_token = str(image_token)
        self.label_rule = label_rule
        self.label_thr = float(label_thr)
        self.group_by_image = bool(group_by_image)
        self.mask_size_mismatch = mask_size_mismatch
        self.dataset_name = str(dataset_name)
        self.ann_file = self._find_ann_file(ann_file)
        self.image_dir = self._find_image_dir(image_dir)
        self._load()

    # -- files -------------------------------------------------------------------------------------

    def _find_ann_file(self, ann_file: PathLike | None) -> Path:
        if ann_file is not None:
            p = resolve_under(self.data_root, ann_file)
            if not p.is_file():
                raise FileNotFoundError(f"MaskGroups records file not found: {p} (ann_file={ann_file!r})")
            return p
        for suffix in (".json", ".jsonl"):
            p = self.data_root / f"{self.split}{suffix}"
            if p.is_file():
                return p
        found = sorted(p.stem for p in self.data_root.glob("*.json*") if p.suffix in (".json", ".jsonl"))
        raise FileNotFoundError(
            f"MaskGroups split {self.split!r} not found: no {self.split}.json or {self.split}.jsonl in "
            f"{self.data_root} (record files there: {', '.join(found) or 'none'}; or set ann_file=...)"
        )

    def _find_image_dir(self, image_dir: PathLike | None) -> Path:
        if image_dir is not None:
            return require_dir(resolve_under(self.data_root, image_dir), "MaskGroups image folder (image_dir)")
        for name in DEFAULT_IMAGE_DIRS:
            if (self.data_root / name).is_dir():
                return self.data_root / name
        raise FileNotFoundError(
            f"MaskGroups image folder not found: none of {', '.join(DEFAULT_IMAGE_DIRS)} under "
            f"{self.data_root} (set image_dir=...)"
        )

    # -- parsing -----------------------------------------------------------------------------------

    def _query_text(self, record: dict[str, Any], where: str) -> tuple[str, str | None]:
        conv = require_key(record, "conversations", where, "LLaVA-style [{from, value}] turns")
        if not isinstance(conv, list):
            raise DatasetFormatError(f"{where}: 'conversations' must be a list, got {type(conv).__name__}")
        human = response = None
        for k, turn in enumerate(conv):
            speaker = str(require_key(turn, "from", f"{where}: conversations[{k}]", "human or gpt")).lower()
            value = require_key(turn, "value", f"{where}: conversations[{k}]", "the turn's text")
            if speaker in ("human", "user") and human is None:
                human = str(value)
            elif speaker in ("gpt", "assistant") and human is not None and response is None:
                response = str(value)
        if human is None:
            raise DatasetFormatError(f"{where}: 'conversations' has no human turn (the query)")
        before, _, after = human.partition(self.pool_token)
        text = self._clean(after) or self._clean(before)  # the query follows <mask_pool> (else precedes it)
        if not text:
            raise DatasetFormatError(f"{where}: the human turn has no query text besides the placeholders")
        return text, response

    def _clean(self, text: str) -> str:
        """``text`` without the image / pool placeholders, the reference one spelled ``<mask_ref>``."""
        for token in (self.image_token, self.pool_token):
            if token:
                text = text.replace(token, " ")
        return " ".join(text.replace(self.ref_token, REF_PLACEHOLDER).split())

    def _rle_list(self, record: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
        value = require_key(record, key, where, "a list of COCO RLE dicts")
        if not isinstance(value, list):
            raise DatasetFormatError(f"{where}: {key!r} must be a list of COCO RLE dicts, got {type(value).__name__}")
        return value

    def _check_sizes(self, rles: Sequence[Any], field: str, where: str, size: tuple | None) -> tuple | None:
        for j, rle in enumerate(rles):
            s = rle_size(rle, f"{where}: {field}[{j}]")
            if size is None:
                size = s
            elif s != size:
                raise DatasetFormatError(
                    f"{where}: {field}[{j}] has size {list(s)} but other masks of the record have {list(size)}"
                )
        return size

    def _references(self, record: dict[str, Any], where: str, n_gt: int) -> tuple[str, list]:
        """``('none', [])``, ``('indices', [i, ...])`` or ``('rle', [rle, ...])`` of the record."""
        value = record.get(self.ref_field)
        if value is None or (isinstance(value, list) and not value):
            return "none", []
        items = value if isinstance(value, list) else [value]
        field = f"{where}: {self.ref_field!r}"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            bad = [v for v in items if not 0 <= v < n_gt]
            if bad:
                raise DatasetFormatError(
                    f"{field}: indices {bad} out of range for 'gt_mask_pool' of {n_gt} masks"
                )
            return "indices", [int(v) for v in items]
        if all(isinstance(v, dict) for v in items):
            return "rle", list(items)
        raise DatasetFormatError(
            f"{field}: expected indices into 'gt_mask_pool' or COCO RLE dicts (or a list of either), "
            f"got {value!r:.120}"
        )

    def _parse(self, k: int, record: dict[str, Any]) -> dict[str, Any]:
        where = f"{self.ann_file}: record #{k}"
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{where}: expected a dict, got {type(record).__name__}")
        rid = record.get("id", f"#{k}")
        where = f"{self.ann_file}: record #{k} (id {rid!r})"
        image = str(require_key(record, "image", where, "the image file name"))
        text, response = self._query_text(record, where)
        pool = self._rle_list(record, "mask_pool", where)
        gt_pool = self._rle_list(record, "gt_mask_pool", where)
        groups = require_key(record, "gt_mask_group", where, "lists of indices into 'gt_mask_pool'")
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            raise DatasetFormatError(f"{where}: 'gt_mask_group' must be a list of index lists, got {groups!r:.120}")
        if not -len(groups) <= self.group_index < len(groups):
            raise DatasetFormatError(
                f"{where}: 'gt_mask_group' has {len(groups)} groups; group_index={self.group_index} is out of range"
            )
        group = groups[self.group_index]
        bad = [g for g in group if not (isinstance(g, int) and not isinstance(g, bool) and 0 <= g < len(gt_pool))]
        if bad:
            raise DatasetFormatError(
                f"{where}: 'gt_mask_group'[{self.group_index}] has indices {bad} out of range for "
                f"'gt_mask_pool' of {len(gt_pool)} masks"
            )
        ref_kind, refs = self._references(record, where, len(gt_pool))
        if REF_PLACEHOLDER in text and ref_kind == "none":
            raise DatasetFormatError(
                f"{where}: the query contains {self.ref_token!r} but the record has no reference mask in "
                f"{self.ref_field!r} (set ref_field=... to the field that holds it)"
            )
        size = self._check_sizes(pool, "mask_pool", where, None)
        size = self._check_sizes([gt_pool[g] for g in group], "gt_mask_pool", where, size)
        if ref_kind == "indices":
            size = self._check_sizes([gt_pool[g] for g in refs], "gt_mask_pool", where, size)
        elif ref_kind == "rle":
            size = self._check_sizes(refs, self.ref_field, where, size)
        caption = record.get("caption")
        return dict(
            id=rid,
            index=k,
            image=image,
            text=text,
            response=response,
            pool=pool,
            gt=[gt_pool[g] for g in group],
            gt_indices=[int(g) for g in group],
            ref_kind=ref_kind,
            refs=[gt_pool[g] for g in refs] if ref_kind == "indices" else refs,
            ref_indices=refs if ref_kind == "indices" else None,
            caption=str(caption) if caption is not None else None,
        )

    def _load(self) -> None:
        records = read_records(self.ann_file)
        if not records:
            raise DatasetFormatError(f"{self.ann_file}: no records")
        parsed = [self._parse(k, r) for k, r in enumerate(records)]
        del records
        # items: lists of parsed records sharing an image (and an identical pool, when grouping)
        self._items: list[list[dict[str, Any]]] = []
        buckets: dict[tuple[str, int], list[int]] = defaultdict(list)
        for rec in parsed:
            if self.group_by_image:
                key = (rec["image"], len(rec["pool"]))
                match = next((i for i in buckets[key] if self._items[i][0]["pool"] == rec["pool"]), None)
                if match is not None:
                    rec["pool"] = self._items[match][0]["pool"]  # share one copy
                    self._items[match].append(rec)
                    continue
                buckets[key].append(len(self._items))
            self._items.append([rec])
        n_ref = sum(r["ref_kind"] != "none" for r in parsed)
        self.info = dict(
            dataset=self.dataset_name,
            split=self.split,
            task=self.task,
            num_images=len({r["image"] for r in parsed}),
            num_samples=len(self._items),
            num_records=len(parsed),
            num_hybrid=n_ref,
            num_text_only=len(parsed) - n_ref,
            num_empty_groups=sum(not r["gt"] for r in parsed),
            mean_pool_size=round(float(np.mean([len(it[0]["pool"]) for it in self._items])), 2),
            ann_file=str(self.ann_file),
            image_dir=str(self.image_dir),
            label_rule=self.label_rule,
            label_thr=self.label_thr,
            test_mode=self.test_mode,
        )

    # -- items -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def _decode(self, rles: Sequence[Any], field: str, rec: dict[str, Any], h: int, w: int) -> np.ndarray:
        where = f"{self.ann_file}: record #{rec['index']} (id {rec['id']!r})"
        out = []
        for j, rle in enumerate(rles):
            m = decode_rle(rle, f"{where}: {field}[{j}]")
            if m.shape != (h, w):
                if self.mask_size_mismatch == "error":
                    raise DatasetFormatError(
                        f"{where}: {field}[{j}] is {m.shape[0]}x{m.shape[1]} (height x width) but the image "
                        f"{self.image_dir / rec['image']} is {h}x{w} (set mask_size_mismatch='resize' to "
                        "resize masks to the image)"
                    )
                m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            out.append(m)
        return stack_masks(out, h, w)

    def _chosen(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.test_mode:
            return records
        k = min(self.num_queries_per_sample, len(records))
        return [records[i] for i in self._rng.sample(range(len(records)), k)]

    def __getitem__(self, index: int) -> Sample:
        records = self._items[self._check_index(index)]
        first = records[0]
        path = self.image_dir / first["image"]
        image = read_image_rgb(path)
        h, w = image.shape[:2]
        pool = self._decode(first["pool"], "mask_pool", first, h, w)
        queries = []
        for rec in self._chosen(records):
            gt = self._decode(rec["gt"], "gt_mask_pool", rec, h, w)
            refs = None
            if rec["ref_kind"] != "none":
                field = "gt_mask_pool" if rec["ref_kind"] == "indices" else self.ref_field
                refs = self._decode(rec["refs"], field, rec, h, w)
            meta = dict(
                id=rec["id"],
                has_reference=refs is not None,
                gt_indices=list(rec["gt_indices"]),
                group_index=self.group_index,
            )
            if rec["ref_indices"] is not None:
                meta["ref_indices"] = list(rec["ref_indices"])
            if rec["response"] is not None:
                meta["response"] = rec["response"]
            queries.append(Query(
                text=rec["text"],
                masks=gt,
                exists=bool(gt.shape[0]) and bool(gt.any()),
                reference_masks=refs,
                pool_labels=match_pool_labels(pool, gt, self.label_rule, self.label_thr),
                meta=meta,
            ))
        meta = dict(
            dataset=self.dataset_name,
            split=self.split,
            image_id=first["image"],
            file_name=first["image"],
            height=h,
            width=w,
            sample_id=f"{self.dataset_name}|{self.split}|{first['id']}",
            record_ids=[r["id"] for r in records],
        )
        caption = next((r["caption"] for r in records if r["caption"]), None)
        if caption is not None:
            meta["caption"] = caption
        return Sample(image=image, queries=queries, task=self.task, candidate_masks=pool, meta=meta)
