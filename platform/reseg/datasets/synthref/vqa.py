"""Visual question answering about the synthetic scenes: the tiny scale's stand-in for LLaVA-Instruct.

LISA trains on a mixture that includes VQA conversations (``llava_instruct_150k``, spec
seg_token_family.md §1.7): text answers that make the LLM ground the question in the image. At the
tiny scale there is no pretrained LLaVA and no instruction data, so this dataset asks questions about
the synthetic scenes of a REFER-format split whose ``instances.json`` carries the generator's
``synth`` attributes (colour, kind) and answers them from those attributes. Each item is one image
with up to ``num_queries_per_sample`` question/answer pairs (``Query.answer`` set, no mask; task
``'vqa'``). Every question needs the image: colours, kinds, counts and left/right extremes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from reseg.datasets.io import read_json
from reseg.datasets.refer import RefCOCODataset
from reseg.registry import DATASETS
from reseg.structures import Query, Sample

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def scene_questions(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Question/answer pairs answerable from ``objects`` (dicts with ``colour``, ``kind``, ``cx``).

    Only unambiguous questions are asked (e.g. "what colour is the circle?" needs one circle).
    """
    qa: list[tuple[str, str]] = []
    kinds = [o["kind"] for o in objects]
    colours = [o["colour"] for o in objects]
    for o in objects:
        if kinds.count(o["kind"]) == 1:
            qa.append((f"What colour is the {o['kind']}?", f"It is {o['colour']}."))
        if colours.count(o["colour"]) == 1:
            qa.append((f"What shape is the {o['colour']} object?", f"It is a {o['kind']}."))
    qa.append(("How many shapes are there in this image?", f"There are {NUMBERS[min(len(objects), 9)]}."))
    if objects:
        left = min(objects, key=lambda o: o["cx"])
        right = max(objects, key=lambda o: o["cx"])
        qa.append(("Which shape is the leftmost?", f"The {left['colour']} {left['kind']}."))
        qa.append(("Which shape is the rightmost?", f"The {right['colour']} {right['kind']}."))
    return qa


@DATASETS.register_module()
class SynthVQADataset(RefCOCODataset):
    """Question/answer conversations about the images of a synthetic REFER-format split.

    Args: as :class:`RefCOCODataset` (default ``dataset='synthref'``); the split's
    ``instances.json`` must carry the generator's ``synth`` attributes.
    """

    task = "vqa"

    def __init__(self, data_root, dataset: str = "synthref", split_by: str = "unc", split: str = "train",
                 image_dir=None, test_mode: bool = False, num_queries_per_sample: int = 3,
                 seed: int | None = None) -> None:
        super().__init__(data_root, dataset=dataset, split_by=split_by, split=split, image_dir=image_dir,
                         test_mode=test_mode, num_queries_per_sample=num_queries_per_sample, seed=seed)
        wanted = set(self._image_ids)
        self._objects: dict[int, list[dict[str, Any]]] = {i: [] for i in wanted}
        for ann in read_json(self.instances_file)["annotations"]:
            if ann["image_id"] in wanted:
                synth = ann.get("synth")
                if synth is None:
                    raise ValueError(f"{self.instances_file}: annotation {ann['id']} has no 'synth' attributes; "
                                     "SynthVQADataset needs a benchmark written by tools/make_synthref.py")
                x, _, w, _ = ann["bbox"]
                self._objects[ann["image_id"]].append(dict(colour=synth["colour"], kind=synth["kind"], cx=x + w / 2))

    def __getitem__(self, index: int) -> Sample:
        i = self._check_index(index)
        info = self.image_info(i)
        from reseg.datasets.io import read_image_rgb

        image = read_image_rgb(self.image_dir / info["file_name"])
        h, w = image.shape[:2]
        qa = scene_questions(self._objects[info["image_id"]])
        if not self.test_mode:
            picked = self._rng.sample(range(len(qa)), min(self.num_queries_per_sample, len(qa)))
            qa = [qa[k] for k in picked]
        empty = np.zeros((0, h, w), dtype=bool)
        queries = [Query(text=q, masks=empty, answer=a, is_sentence=True, meta=dict(kind="vqa")) for q, a in qa]
        meta = dict(dataset=f"{self.dataset_name}_vqa", split=self.split, image_id=info["image_id"],
                    file_name=info["file_name"], sample_id=f"{self.dataset_name}_vqa|{self.split}|{info['image_id']}")
        return Sample(image=image, queries=queries, task=self.task, meta=meta)
