"""FP-RefCOCO(+/g) and R-RefCOCO(+/g): referring expressions that may name something absent.

Layout (spec seg_token_family.md §5.4, platform_research.md §C4): the REFER layout of
:class:`~reseg.datasets.refer.RefCOCODataset`, with SESAME's refs files::

    <data_root>/fprefcoco/refs(berkeley_exclude_unified).p + instances.json   # FP-RefCOCO (+, g alike)
    <data_root>/R-refcoco/refs(unc_exclude_unified).p + instances.json        # R-RefCOCO, R-RefCOCO+
    <data_root>/R-refcocog/refs(umd_exclude_unified).p + instances.json

Each ref keeps the ``ann_id`` of its real object; each sentence adds

* ``is_false_premise`` (FP-RefCOCO): the sentence names an object that is not in the image;
* ``gt_sent`` (FP-RefCOCO): the true expression a false-premise query should be corrected to (it fills
  the ``{gt_name}`` slot of SESAME's correction answers);
* ``exist`` (R-RefCOCO).

Existence per sentence (SESAME): ``not is_false_premise`` if present, else ``exist`` if present,
else True (and never when the ref lists no annotation). A non-existent query gets an empty ground
truth (``masks`` ``[0, H, W]``, ``exists=False``): the evaluation GT is an all-zero mask. Every
sentence field other than ``sent``/``sent_id`` (so ``gt_sent``, ``is_false_premise``, ``exist``) is
kept in ``Query.meta``; ``meta['ann_ids']`` stays the ref's real annotation.
"""
from __future__ import annotations

from typing import Any

from reseg.datasets.io import DatasetFormatError, PathLike
from reseg.datasets.refer import RefCOCODataset
from reseg.registry import DATASETS

#: SESAME's ``determine_split_by`` (spec seg_token_family.md §5.2).
SESAME_SPLIT_BY: dict[str, str] = {
    "fprefcoco": "berkeley_exclude_unified",
    "fprefcoco+": "berkeley_exclude_unified",
    "fprefcocog": "berkeley_exclude_unified",
    "R-refcoco": "unc_exclude_unified",
    "R-refcoco+": "unc_exclude_unified",
    "R-refcocog": "umd_exclude_unified",
}


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
        return value.strip().lower() in ("true", "1")
    raise DatasetFormatError(f"{where}: expected a boolean, got {value!r}")


def premise_exists(sent: dict[str, Any], where: str = "sentence") -> bool:
    """SESAME's existence rule: ``not is_false_premise``, else ``exist``, else True (spec §5.4)."""
    if sent.get("is_false_premise") is not None:
        return not _as_bool(sent["is_false_premise"], f"{where}: 'is_false_premise'")
    if sent.get("exist") is not None:
        return _as_bool(sent["exist"], f"{where}: 'exist'")
    return True


@DATASETS.register_module()
class FPRefCOCODataset(RefCOCODataset):
    """FP-/R-RefCOCO(+/g) in the REFER layout; one :class:`~reseg.structures.Sample` (task ``'fp'``) per image.

    Args:
        data_root: folder holding ``<dataset>/refs(<split_by>).p`` (LISA's ``refer_seg``).
        dataset: ``fprefcoco``, ``fprefcoco+``, ``fprefcocog``, ``R-refcoco``, ``R-refcoco+``,
            ``R-refcocog`` (the synthetic benchmark's is ``fprefcoco_synth``).
        split_by: the refs file variant; ``None`` picks SESAME's (:data:`SESAME_SPLIT_BY`:
            ``berkeley_exclude_unified`` for the FP sets, ``unc_``/``umd_exclude_unified`` for R-*).
        split, image_dir, test_mode, num_queries_per_sample, seed: as :class:`RefCOCODataset`
            (training draws one random sentence per drawn ref, true or false premise alike).

    Query: ``exists`` by :func:`premise_exists`; ``masks`` the real object (``[1, H, W]``) if it
    exists, else ``[0, H, W]``; ``meta`` has ``gt_sent``, ``is_false_premise`` / ``exist`` as present
    in the file, plus ``ref_id``, ``sent_id``, ``ann_ids``, ``category_id``.
    """

    task = "fp"

    def __init__(
        self,
        data_root: PathLike,
        dataset: str = "fprefcoco",
        split_by: str | None = None,
        split: str = "val",
        image_dir: PathLike | None = None,
        test_mode: bool = False,
        num_queries_per_sample: int = 3,
        seed: int | None = None,
    ) -> None:
        if split_by is None:
            split_by = SESAME_SPLIT_BY.get(str(dataset), "berkeley_exclude_unified")
        super().__init__(data_root, dataset=dataset, split_by=split_by, split=split, image_dir=image_dir,
                         test_mode=test_mode, num_queries_per_sample=num_queries_per_sample, seed=seed)
        self.info["num_false_premise"] = sum(
            not premise_exists(s, f"{self.refs_file}: ref_id {r['ref_id']}")
            for refs in self._refs_by_image.values() for r in refs for s in r["sentences"]
        )

    def _query_exists(self, ref: dict[str, Any], sent: dict[str, Any], targets: list[int]) -> bool:
        where = f"{self.refs_file}: ref_id {ref['ref_id']}, sent_id {sent.get('sent_id')}"
        return bool(targets) and premise_exists(sent, where)
