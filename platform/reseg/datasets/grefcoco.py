"""gRefCOCO (generalised referring expressions: several targets or none) in the REFER layout.

Layout (spec seg_token_family.md §5.3, platform_research.md §C3)::

    <data_root>/                          # LISA's ``refer_seg`` folder
        grefcoco/grefs(unc).json          # JSON list of refs (or ``grefs(unc).p``, read safely)
        grefcoco/instances.json           # COCO images / annotations / categories
        images/mscoco/images/train2014/   # COCO train2014 (``image_dir`` overrides)

Each ref has ``ann_id`` as a **list**: several ids = several targets (the query's ``masks`` holds one
instance mask each; their union is the ground truth), ``[-1]`` = no target (``masks`` is
``[0, H, W]``, ``exists=False``). Polygons with fewer than 3 points are dropped (ReLA/GSVA), as
:func:`reseg.datasets.io.coco_segmentation_to_mask` always does.

Items are images, as for :class:`~reseg.datasets.refer.RefCOCODataset` (the machinery is shared): in
test mode every sentence of every ref of the image is one query (GSVA's ``eval_gres`` asks all of an
image's expressions at once, spec §4.3); in training mode up to ``num_queries_per_sample`` refs are
drawn without replacement, one random sentence each (spec §4.2; GSVA's redraw of an image whose
drawn targets are all empty is not done here).
"""
from __future__ import annotations

from reseg.datasets.io import PathLike
from reseg.datasets.refer import RefCOCODataset
from reseg.registry import DATASETS


@DATASETS.register_module()
class GRefCOCODataset(RefCOCODataset):
    """gRefCOCO in the REFER layout; one :class:`~reseg.structures.Sample` (task ``'gres'``) per image.

    Args:
        data_root: folder holding ``<dataset>/grefs(<split_by>).json`` (LISA's ``refer_seg``).
        dataset: the dataset folder, ``grefcoco`` (the synthetic benchmark's is ``grefcoco_synth``).
        split_by: the refs file variant, ``unc``.
        split: ``train``, ``val``, ``testA``, ``testB`` (``test`` = testA + testB).
        image_dir, test_mode, num_queries_per_sample, seed: as :class:`RefCOCODataset`.

    The refs file is ``grefs(<split_by>).json``, else ``grefs(<split_by>).p`` (safe unpickler).
    Query ``meta['ann_ids']`` is the ref's list (``[-1]`` for no target); ``exists`` is False exactly
    for the no-target refs.
    """

    task = "gres"
    REFS_PREFIX = "grefs"
    REFS_SUFFIXES = (".json", ".p")

    def __init__(
        self,
        data_root: PathLike,
        dataset: str = "grefcoco",
        split_by: str = "unc",
        split: str = "val",
        image_dir: PathLike | None = None,
        test_mode: bool = False,
        num_queries_per_sample: int = 3,
        seed: int | None = None,
    ) -> None:
        super().__init__(data_root, dataset=dataset, split_by=split_by, split=split, image_dir=image_dir,
                         test_mode=test_mode, num_queries_per_sample=num_queries_per_sample, seed=seed)
