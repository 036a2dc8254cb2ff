"""RefCOCO / RefCOCO+ / RefCOCOg / RefCLEF (and the synthetic ``synthref``) in the REFER layout.

Layout (spec seg_token_family.md §5.2, platform_research.md §C2)::

    <data_root>/                          # LISA's ``refer_seg`` folder
        <dataset>/refs(<split_by>).p      # pickled list of refs (loaded with reseg's safe unpickler)
        <dataset>/instances.json          # COCO images / annotations / categories
        images/mscoco/images/train2014/   # COCO train2014 (refcoco family; ``image_dir`` overrides)
        images/saiapr_tc-12/              # refclef

Each item is one image of the split. In test mode every sentence of every ref of the image is one
query (spec §1.8); in training mode up to ``num_queries_per_sample`` refs are drawn without
replacement and one random sentence of each is used (spec §1.7). Query texts are lower-cased and
stripped in both modes (spec §1.8; REFER's ``sent`` is lower-case already).
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from reseg.datasets.base import ResegDataset
from reseg.datasets.io import (
    DatasetFormatError,
    PathLike,
    UnknownSplitError,
    coco_segmentation_to_mask,
    read_image_rgb,
    read_json,
    require_dir,
    require_file,
    require_key,
    resolve_under,
    stack_masks,
)
from reseg.datasets.safe_pickle import load_pickle
from reseg.registry import DATASETS
from reseg.structures import Query, Sample

#: Image folders relative to ``data_root`` by dataset name (spec §5.2); anything else that is in the
#: REFER layout (refcoco family, gRefCOCO, FP-/R-RefCOCO) uses COCO train2014.
DEFAULT_IMAGE_DIRS: dict[str, str] = {
    "refclef": "images/saiapr_tc-12",
    "synthref": "images/synthref",
    "grefcoco_synth": "images/grefcoco_synth",
    "fprefcoco_synth": "images/fprefcoco_synth",
}
COCO_TRAIN2014_DIR = "images/mscoco/images/train2014"

#: Sentence keys not kept in memory (the loader never uses them).
_DROPPED_SENT_KEYS = ("tokens", "raw")


def default_image_dir(dataset: str) -> str:
    """The image folder (relative to ``data_root``) REFER uses for ``dataset`` (spec §5.2)."""
    return DEFAULT_IMAGE_DIRS.get(dataset, COCO_TRAIN2014_DIR)


def select_refs(refs: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Refs of ``split`` as REFER's ``getRefIds(split=...)`` selects them.

    Exact match on ``ref['split']``; additionally ``'test'`` selects every split whose name contains
    "test" when no split is literally called ``'test'`` (refcoco's testA + testB), as REFER does.
    """
    exact = [r for r in refs if r["split"] == split]
    if exact or split != "test":
        return exact
    return [r for r in refs if "test" in str(r["split"])]


def _ann_ids_of(ref: dict[str, Any]) -> list[int]:
    """``ref['ann_id']`` as a list (int for REFER, list for gRefCOCO; -1 means no target)."""
    a = ref["ann_id"]
    ids = list(a) if isinstance(a, (list, tuple)) else [a]
    return [int(i) for i in ids]


@DATASETS.register_module()
class RefCOCODataset(ResegDataset):
    """Referring segmentation in the REFER layout; yields one :class:`Sample` (task ``'res'``) per image.

    Args:
        data_root: folder holding ``<dataset>/refs(<split_by>).p`` (LISA's ``refer_seg``).
        dataset: ``refcoco``, ``refcoco+``, ``refcocog``, ``refclef``, ``synthref``, ...
        split_by: the refs file variant: ``unc`` (refcoco, refcoco+, refclef), ``umd`` (refcocog), ...
        split: a split present in the refs file (``train``, ``val``, ``testA``, ``testB``, ``test``).
        image_dir: image folder; absolute, or relative to ``data_root`` (tried first) or to the working
            directory. Default :func:`default_image_dir` (COCO train2014 for the refcoco family).
        test_mode: every sentence of every ref is a query (spec §1.8) vs sampled training queries.
        num_queries_per_sample: training mode: at most this many refs per image, drawn without
            replacement, one random sentence each (spec §1.7: LISA uses 3).
        seed: seed of the training-time sampling (``None``: Python's global ``random``).

    Items: ``Sample(image [H, W, 3] uint8 RGB, queries, task='res', meta)``; each query has ``masks``
    ``[n, H, W] bool`` (n = 1 for REFER refs; 0 for a ref without a target), ``is_sentence`` from the
    sentence's optional ``is_sentence`` field (absent from the REFER / gRefCOCO releases: False; the
    own-data converter :mod:`reseg.datasets.own_data` writes it) and ``meta`` with
    ``ref_id``, ``sent_id``, ``ann_ids``, ``category_id``. ``Sample.meta``: ``dataset``, ``split``,
    ``split_by``, ``image_id``, ``file_name``, ``height``, ``width``, ``sample_id``.
    """

    task = "res"
    #: The refs file is ``<dataset>/<REFS_PREFIX>(<split_by>)<suffix>``, the first of
    #: ``REFS_SUFFIXES`` that exists (``.json`` is read as JSON, anything else with the safe unpickler).
    REFS_PREFIX = "refs"
    REFS_SUFFIXES: tuple[str, ...] = (".p",)

    def __init__(
        self,
        data_root: PathLike,
        dataset: str = "refcoco",
        split_by: str = "unc",
        split: str = "val",
        image_dir: PathLike | None = None,
        test_mode: bool = False,
        num_queries_per_sample: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__(test_mode=test_mode, seed=seed)
        if int(num_queries_per_sample) < 1:
            raise ValueError(f"num_queries_per_sample must be >= 1, got {num_queries_per_sample}")
        self.num_queries_per_sample = int(num_queries_per_sample)
        self.data_root = require_dir(data_root, "REFER data_root (the folder holding <dataset>/refs(...).p)")
        self.dataset_name = str(dataset)
        self.split_by = str(split_by)
        self.split = str(split)
        ds_dir = require_dir(self.data_root / self.dataset_name, f"REFER dataset folder for {dataset!r}")
        self.refs_file = self._find_refs_file(ds_dir)
        self.instances_file = require_file(ds_dir / "instances.json", "COCO instances file")
        self.image_dir = resolve_under(self.data_root, image_dir or default_image_dir(self.dataset_name))
        require_dir(self.image_dir, f"image folder of {dataset!r} (set image_dir=...)")
        self._load()

    # -- loading -----------------------------------------------------------------------------------

    def _find_refs_file(self, ds_dir: Path) -> Path:
        names = [f"{self.REFS_PREFIX}({self.split_by}){suffix}" for suffix in self.REFS_SUFFIXES]
        for name in names:
            if (ds_dir / name).is_file():
                return ds_dir / name
        found = sorted(p.name for suffix in self.REFS_SUFFIXES
                       for p in ds_dir.glob(f"{self.REFS_PREFIX}(*){suffix}"))
        raise FileNotFoundError(
            f"REFER refs file not found: {ds_dir / names[0]}"
            + (f" (nor {', '.join(names[1:])})" if len(names) > 1 else "")
            + f" (split_by={self.split_by!r}; refs files in {ds_dir}: {found or 'none'})"
        )

    def _read_refs(self) -> list[dict[str, Any]]:
        if self.refs_file.suffix == ".json":
            refs = read_json(self.refs_file)
            what = "a JSON list of refs"
        else:
            refs = load_pickle(self.refs_file)
            what = "a pickled list of refs"
        if not isinstance(refs, list):
            raise DatasetFormatError(f"{self.refs_file}: expected {what}, got {type(refs).__name__}")
        return refs

    def _load(self) -> None:
        refs_all = self._read_refs()
        for k, ref in enumerate(refs_all):
            where = f"{self.refs_file}: ref #{k}"
            for key in ("ref_id", "ann_id", "image_id", "split", "sentences"):
                require_key(ref, key, where, "REFER refs need ref_id, ann_id, image_id, split, sentences")
        valid = sorted({str(r["split"]) for r in refs_all})
        refs = select_refs(refs_all, self.split)
        if not refs:
            raise UnknownSplitError(
                f"split {self.split!r} not in {self.refs_file}; valid splits: {', '.join(valid)}"
            )
        del refs_all

        # Trimmed refs: only what the loader uses (plus extra per-sentence fields, e.g. FP-RefCOCO's).
        self._refs_by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        num_sents = 0
        for ref in refs:
            where = f"{self.refs_file}: ref_id {ref['ref_id']}"
            sents = []
            for j, s in enumerate(ref["sentences"]):
                text = require_key(s, "sent", f"{where}, sentence #{j}", "the expression text")
                if not isinstance(s.get("is_sentence", False), bool):
                    raise DatasetFormatError(f"{where}, sentence #{j}: 'is_sentence' must be true or false, "
                                             f"got {s['is_sentence']!r}")
                keep = {k: v for k, v in s.items() if k not in _DROPPED_SENT_KEYS}
                keep["sent"] = str(text)
                sents.append(keep)
            if not sents:
                raise DatasetFormatError(f"{where}: 'sentences' is empty")
            num_sents += len(sents)
            self._refs_by_image[int(ref["image_id"])].append(
                dict(
                    ref_id=int(ref["ref_id"]),
                    ann_ids=_ann_ids_of(ref),
                    category_id=ref.get("category_id"),
                    sentences=sents,
                )
            )
        self._image_ids = sorted(self._refs_by_image)

        coco = read_json(self.instances_file)
        for key in ("images", "annotations"):
            require_key(coco, key, str(self.instances_file), "COCO instances need images and annotations")
        wanted = set(self._image_ids)
        self._images: dict[int, tuple[str, int, int]] = {}
        for k, img in enumerate(coco["images"]):
            iid = int(require_key(img, "id", f"{self.instances_file}: images[{k}]"))
            if iid in wanted:
                where = f"{self.instances_file}: image id {iid}"
                self._images[iid] = (
                    str(require_key(img, "file_name", where)),
                    int(require_key(img, "height", where)),
                    int(require_key(img, "width", where)),
                )
        missing = wanted - set(self._images)
        if missing:
            raise DatasetFormatError(
                f"{self.instances_file}: {len(missing)} image ids used by refs of split "
                f"{self.split!r} are not in 'images' (e.g. {sorted(missing)[:5]})"
            )
        # Every annotation of the split's images (the 'largest object' baseline needs all of them).
        self._anns: dict[int, Any] = {}
        self._anns_by_image: dict[int, list[int]] = defaultdict(list)
        for k, ann in enumerate(coco["annotations"]):
            iid = int(require_key(ann, "image_id", f"{self.instances_file}: annotations[{k}]"))
            if iid in wanted:
                where = f"{self.instances_file}: annotation #{k}"
                aid = int(require_key(ann, "id", where))
                self._anns[aid] = require_key(ann, "segmentation", where, "polygons or RLE")
                self._anns_by_image[iid].append(aid)
        classes = {int(c["id"]): str(c["name"]) for c in coco.get("categories", []) if "id" in c}
        del coco
        for iid in self._image_ids:
            for ref in self._refs_by_image[iid]:
                for aid in ref["ann_ids"]:
                    if aid != -1 and aid not in self._anns:
                        raise DatasetFormatError(
                            f"{self.instances_file}: annotation id {aid} (ref_id {ref['ref_id']}) "
                            f"is not among the annotations of image {iid}"
                        )
        self.info = dict(
            dataset=self.dataset_name,
            split=self.split,
            split_by=self.split_by,
            task=self.task,
            num_images=len(self._image_ids),
            num_refs=len(refs),
            num_sentences=num_sents,
            classes=[classes[k] for k in sorted(classes)],
            valid_splits=valid,
            data_root=str(self.data_root),
            image_dir=str(self.image_dir),
            test_mode=self.test_mode,
        )

    # -- items -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._image_ids)

    def image_info(self, index: int) -> dict[str, Any]:
        """``image_id``, ``file_name``, ``height``, ``width`` of item ``index`` (no image read)."""
        iid = self._image_ids[self._check_index(index)]
        file_name, h, w = self._images[iid]
        return dict(image_id=iid, file_name=file_name, height=h, width=w)

    def _mask(self, ann_id: int, h: int, w: int) -> np.ndarray:
        try:
            return coco_segmentation_to_mask(self._anns[ann_id], h, w)
        except DatasetFormatError as err:
            raise DatasetFormatError(f"{self.instances_file}: annotation id {ann_id}: {err}") from None

    def object_masks(self, index: int) -> np.ndarray:
        """``[N, H, W] bool``: every annotated object of item ``index`` (for the largest-object baseline)."""
        info = self.image_info(index)
        h, w = info["height"], info["width"]
        return stack_masks(
            (self._mask(a, h, w) for a in self._anns_by_image[info["image_id"]]), h, w
        )

    def _chosen_sentences(self, refs: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
        if self.test_mode:
            return [(ref, s) for ref in refs for s in ref["sentences"]]
        k = min(self.num_queries_per_sample, len(refs))
        picked = self._rng.sample(range(len(refs)), k)
        return [(refs[i], refs[i]["sentences"][self._rng.randrange(len(refs[i]["sentences"]))])
                for i in picked]

    def _query_exists(self, ref: dict[str, Any], sent: dict[str, Any], targets: list[int]) -> bool:
        """Whether the query of ``sent`` has a target: here, whether the ref lists an annotation
        (``[-1]`` = no target). Subclasses add per-sentence rules (FP-RefCOCO's premise flags)."""
        return bool(targets)

    def __getitem__(self, index: int) -> Sample:
        i = self._check_index(index)
        info = self.image_info(i)
        iid, h, w = info["image_id"], info["height"], info["width"]
        path = self.image_dir / info["file_name"]
        image = read_image_rgb(path)
        if image.shape[:2] != (h, w):
            raise DatasetFormatError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but {self.instances_file} "
                f"says {w}x{h} (width x height) for image id {iid} (an EXIF orientation tag rotates "
                "the image as it is read, as OpenCV and LISA do: is the annotation of the unrotated pixels?)"
            )
        cache: dict[int, np.ndarray] = {}
        queries = []
        for ref, sent in self._chosen_sentences(self._refs_by_image[iid]):
            targets = [a for a in ref["ann_ids"] if a != -1]
            exists = self._query_exists(ref, sent, targets)
            if not exists:
                targets = []  # no target / false premise: the ground truth is an empty mask
            for a in targets:
                if a not in cache:
                    cache[a] = self._mask(a, h, w)
            extra = {k: v for k, v in sent.items() if k not in ("sent", "sent_id", "is_sentence")}
            queries.append(
                Query(
                    text=sent["sent"].strip().lower(),
                    masks=stack_masks((cache[a] for a in targets), h, w),
                    is_sentence=sent.get("is_sentence", False),
                    exists=exists,
                    meta={
                        **extra,
                        "ref_id": ref["ref_id"],
                        "sent_id": sent.get("sent_id"),
                        "ann_ids": list(ref["ann_ids"]),
                        "category_id": ref["category_id"],
                    },
                )
            )
        return Sample(
            image=image,
            queries=queries,
            task=self.task,
            meta=dict(
                dataset=self.dataset_name,
                split=self.split,
                split_by=self.split_by,
                image_id=iid,
                file_name=info["file_name"],
                height=h,
                width=w,
                sample_id=f"{self.dataset_name}|{self.split_by}|{self.split}|{iid}",
            ),
        )
