"""Candidate-pool proposers (``reseg.models.mask_sources.pool.proposers``) and ``tools/make_pools.py``.

* :func:`postprocess_pool`: min area, greedy mask-IoU NMS in rank order, ordering, cap (hand-made masks);
* :class:`BaseProposer`: input/output validation with errors that name the proposer class;
* :class:`SAMAutomaticProposer` on a tiny random SAM (non-square image, masks at the original size);
* ``tools/make_pools.py`` -> pool file -> :class:`PrecomputedProposer`, with the oracle gIoU/cIoU
  of a hand-computed dataset, and the errors (missing id, size, overwrite, key collisions);
* :class:`MMDetProposer`: the install hint without mmdet; a random-weight Mask R-CNN under
  ``-m mmdet`` (``make test-mmdet``).
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from reseg.models.mask_sources.pool.proposers import (
    BaseProposer,
    MMDetProposer,
    PoolFileError,
    PrecomputedProposer,
    Proposals,
    SAMAutomaticProposer,
    postprocess_pool,
)
from reseg.registry import DATASETS, PROPOSERS
from reseg.structures import Query, Sample


def load_tool(name: str):
    """The code of ``tools/<name>.py``."""
    return importlib.import_module(f"reseg.tools.{name}")


def box(h: int, w: int, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``[h, w] bool`` with rows ``r0:r1`` x cols ``c0:c1`` set."""
    m = np.zeros((h, w), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def px(h: int, w: int, *cells: tuple[int, int]) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


# -- postprocess_pool ------------------------------------------------------------------------------

def test_masks_under_min_area_are_dropped() -> None:
    masks = np.stack([px(5, 5, (0, 0)), box(5, 5, 0, 2, 0, 2), box(5, 5, 2, 5, 2, 5)])  # areas 1, 4, 9
    out, scores, kept = postprocess_pool(masks, None, min_area=4, nms_iou=None, max_candidates=None, order="given")
    assert kept.tolist() == [1, 2]
    assert scores is None
    assert np.array_equal(out, masks[[1, 2]])


def test_min_area_zero_keeps_even_empty_masks() -> None:
    masks = np.stack([np.zeros((3, 3), bool), np.zeros((3, 3), bool), px(3, 3, (1, 1))])
    _, _, kept = postprocess_pool(masks, None, min_area=0, nms_iou=0.5, max_candidates=None, order="given")
    assert kept.tolist() == [0, 1, 2]  # empty masks have IoU 0 with everything


def test_nms_drops_the_lower_scored_duplicate() -> None:
    a = box(6, 6, 0, 3, 0, 3)            # 9 px
    b = a | px(6, 6, (3, 0))             # 10 px, IoU(a, b) = 9 / 10 = 0.9
    c = box(6, 6, 4, 6, 4, 6)            # elsewhere
    masks = np.stack([a, b, c])
    _, scores, kept = postprocess_pool(masks, np.array([0.5, 0.9, 0.1]), min_area=0, nms_iou=0.8,
                                         max_candidates=None)
    assert kept.tolist() == [1, 2]       # b outranks a and suppresses it
    assert scores.dtype == np.float32 and scores.tolist() == pytest.approx([0.9, 0.1])
    _, _, kept = postprocess_pool(masks, np.array([0.5, 0.9, 0.1]), min_area=0, nms_iou=0.95, max_candidates=None)
    assert kept.tolist() == [1, 0, 2]    # 0.9 <= 0.95: both kept


def test_nms_suppresses_only_above_the_threshold() -> None:
    a = box(4, 4, 0, 2, 0, 2)            # 4 px
    b = a | px(4, 4, (2, 0))             # 5 px, IoU = 4 / 5 = 0.8 exactly
    _, _, kept = postprocess_pool(np.stack([a, b]), np.array([1.0, 0.5]), min_area=0, nms_iou=0.8,
                                  max_candidates=None)
    assert kept.tolist() == [0, 1]
    _, _, kept = postprocess_pool(np.stack([a, b]), np.array([1.0, 0.5]), min_area=0, nms_iou=0.79,
                                  max_candidates=None)
    assert kept.tolist() == [0]


def test_nms_compares_pixels_not_boxes() -> None:
    # an L shape and the square in its corner gap: the boxes overlap fully, the pixels not at all
    ell = box(4, 4, 0, 4, 0, 1) | box(4, 4, 3, 4, 0, 4)
    gap = box(4, 4, 0, 3, 1, 4)
    _, _, kept = postprocess_pool(np.stack([ell, gap]), np.array([0.9, 0.8]), min_area=0, nms_iou=0.0,
                                  max_candidates=None)
    assert kept.tolist() == [0, 1]


def test_order_by_area_is_descending_and_stable() -> None:
    masks = np.stack([box(4, 4, 0, 1, 0, 2), box(4, 4, 0, 4, 0, 4), box(4, 4, 2, 3, 0, 2), box(4, 4, 1, 2, 0, 3)])
    # areas 2, 16, 2, 3
    _, _, kept = postprocess_pool(masks, None, min_area=0, nms_iou=None, max_candidates=None, order="area")
    assert kept.tolist() == [1, 3, 0, 2]


def test_order_by_score_breaks_ties_by_input_order() -> None:
    masks = np.stack([px(3, 3, (0, k)) for k in range(3)])
    _, scores, kept = postprocess_pool(masks, np.array([0.2, 0.7, 0.7]), min_area=0, nms_iou=None,
                                       max_candidates=None)
    assert kept.tolist() == [1, 2, 0]
    assert scores.tolist() == pytest.approx([0.7, 0.7, 0.2])


def test_cap_counts_only_masks_that_survive_nms() -> None:
    a = box(6, 6, 0, 3, 0, 3)
    dup = a.copy()
    c = box(6, 6, 4, 6, 0, 2)
    d = box(6, 6, 4, 6, 4, 6)
    masks = np.stack([a, dup, c, d])
    _, _, kept = postprocess_pool(masks, np.array([0.9, 0.8, 0.7, 0.6]), min_area=0, nms_iou=0.8, max_candidates=2)
    assert kept.tolist() == [0, 2]


def test_defaults_are_the_spec_guesses() -> None:
    # §2.4 A: >= 32 px, NMS 0.8, by score, at most 100
    big = [box(64, 64, r, r + 6, c, c + 6) for r in range(0, 60, 6) for c in range(0, 60, 6)]  # 100 disjoint
    masks = np.stack(big + [box(64, 64, 60, 64, 60, 64)] + [big[0]])  # a 16 px mask, a duplicate of #0
    scores = np.linspace(1.0, 0.5, len(masks))
    scores[-1] = 2.0  # the duplicate ranks first: it stays, #0 goes
    _, _, kept = postprocess_pool(masks, scores)
    assert len(kept) == 100
    assert kept[0] == 101 and 0 not in kept.tolist() and 100 not in kept.tolist()


@pytest.mark.parametrize("kwargs, message", [
    (dict(order="score"), "needs scores"),
    (dict(order="random"), "order must be one of"),
    (dict(order="given", max_candidates=0), "max_candidates must be >= 1"),
    (dict(order="given", nms_iou=1.5), r"nms_iou must be in \[0, 1\]"),
])
def test_bad_settings_are_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        postprocess_pool(np.zeros((1, 2, 2), bool), None, **kwargs)


# -- BaseProposer: validation ----------------------------------------------------------------------

class FixedProposer(BaseProposer):
    """Returns whatever it was given, for the validation tests."""

    def __init__(self, raw: Any, **post: Any) -> None:
        super().__init__(**post)
        self.raw = raw

    def _propose_raw(self, image: np.ndarray, meta: dict) -> Any:
        return self.raw


IMAGE = np.zeros((4, 6, 3), np.uint8)


def test_propose_post_processes_and_reports_what_it_kept() -> None:
    masks = np.stack([box(4, 6, 0, 2, 0, 2), box(4, 6, 0, 2, 0, 2), px(4, 6, (3, 5)), box(4, 6, 2, 4, 2, 6)])
    p = FixedProposer((masks, np.array([0.3, 0.6, 0.9, 0.1])), min_area=2)
    props = p.propose(IMAGE, {"image_id": 1})
    assert isinstance(props, Proposals) and len(props) == 2
    assert props.meta["kept"].tolist() == [1, 3]   # #2 too small, #0 a duplicate of the higher-scored #1
    assert props.meta["n_raw"] == 4 and props.meta["proposer"] == "FixedProposer" and props.meta["scored"]
    assert props.scores.dtype == np.float32 and props.scores.tolist() == pytest.approx([0.6, 0.1])


def test_torch_outputs_are_accepted() -> None:
    masks = torch.from_numpy(np.stack([box(4, 6, 0, 2, 0, 2)]))
    props = FixedProposer((masks, torch.tensor([0.5])), min_area=0).propose(IMAGE)
    assert props.masks.dtype == bool and props.masks.shape == (1, 4, 6)


def test_no_scores_with_given_order_scores_one_each() -> None:
    masks = np.stack([box(4, 6, 0, 1, 0, 6), box(4, 6, 1, 2, 0, 6)])
    props = FixedProposer((masks, None), min_area=0, order="given").propose(IMAGE)
    assert props.scores.tolist() == [1.0, 1.0] and props.meta["scored"] is False


@pytest.mark.parametrize("raw, error, message", [
    ((np.zeros((2, 6, 4), bool), None), ValueError,
     r"FixedProposer\._propose_raw returned masks of shape \(2, 6, 4\), expected \[N, 4, 6\]"),
    ((np.zeros((2, 4, 6), np.float32), None), TypeError,
     r"FixedProposer\._propose_raw returned masks of dtype float32, expected bool"),
    ((np.zeros((2, 4, 6), bool), np.zeros(3)), ValueError,
     r"FixedProposer\._propose_raw returned scores of shape \(3,\) for 2 masks"),
    ((np.zeros((1, 4, 6), bool), np.array([np.nan])), ValueError, "not all finite"),
    (np.zeros((2, 4, 6), bool), TypeError, r"FixedProposer\._propose_raw must return \(masks"),
    ((np.zeros((1, 4, 6), bool), None), ValueError, "returned no scores but the proposer orders by score"),
])
def test_bad_proposer_output_is_an_error_naming_the_class(raw: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        FixedProposer(raw, min_area=0).propose(IMAGE)


def test_image_must_be_rgb_uint8() -> None:
    with pytest.raises(ValueError, match=r"FixedProposer\.propose: image must be \[H, W, 3\] uint8"):
        FixedProposer((np.zeros((0, 4, 6), bool), np.zeros(0))).propose(np.zeros((4, 6), np.uint8))


def test_misspelled_setting_names_the_closest_argument() -> None:
    with pytest.raises(TypeError, match=r"'nms_thr' -> did you mean 'nms_iou'\?"):
        FixedProposer(None, nms_thr=0.5)


def test_bad_postprocessing_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match=r"FixedProposer: order must be one of \('score', 'area', 'given'\), "
                                         r"got 'largest'"):
        FixedProposer(None, order="largest")


def test_builtin_proposers_are_registered() -> None:
    assert PROPOSERS.get("SAMAutomaticProposer") is SAMAutomaticProposer
    assert PROPOSERS.get("MMDetProposer") is MMDetProposer
    assert PROPOSERS.get("PrecomputedProposer") is PrecomputedProposer


def test_registry_locations_find_the_builtin_types_without_any_import() -> None:
    """A fresh process with no plugin loaded finds the proposers and encoders through the registries'
    ``locations`` alone (the modules named there exist and register them)."""
    import subprocess
    import sys

    code = ("from reseg.registry import MASK_ENCODERS, PROPOSERS\n"
            "print(PROPOSERS.get('PrecomputedProposer').__module__, MASK_ENCODERS.get('TimmEncoder').__module__)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RESEG_PLUGINS": ""},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["reseg.models.mask_sources.pool.proposers.precomputed",
                   "reseg.models.mask_sources.pool.tokenizer.encoders.timm_encoder"]


@pytest.mark.parametrize("old, new, name", [
    ("reseg.models.mask_sources.proposers", "reseg.models.mask_sources.pool.proposers", "PoolFileWriter"),
    ("reseg.models.mask_sources.mask_tokenizer", "reseg.models.mask_sources.pool.tokenizer", "MaskTokenizer"),
])
def test_pre_v2_module_paths_import_the_same_objects_with_a_deprecation_warning(
        old: str, new: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    monkeypatch.delitem(sys.modules, old, raising=False)  # import it afresh, and forget it afterwards
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_describe_reports_type_settings_and_postprocessing() -> None:
    d = FixedProposer(None, min_area=5, nms_iou=None, max_candidates=7, order="area").describe()
    assert d == {"type": "FixedProposer",
                 "postprocess": {"min_area": 5, "nms_iou": None, "max_candidates": 7, "order": "area"}}


# -- SAM automatic masks on a tiny random SAM ------------------------------------------------------

TINY_SAM = dict(variant="custom", image_size=128, prompt_dim=32,
                encoder=dict(embed_dim=32, depth=1, num_heads=2, patch_size=8),
                decoder_depth=1, decoder_mlp_dim=64, decoder_heads=2, iou_head_hidden_dim=32)
#: thresholds low enough for random weights (which predict IoUs near 0)
LOW_AMG = dict(points_per_side=4, pred_iou_thresh=-10.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def tiny_sam_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Random tiny SAM weights in a file, so every proposer built from it is the same model."""
    from reseg.models.mask_sources.sam import build_sam

    torch.manual_seed(0)
    sam = build_sam(**TINY_SAM)
    path = tmp_path_factory.mktemp("tiny_sam") / "sam.pth"
    torch.save(sam.state_dict(), path)
    return str(path)


def test_sam_proposer_masks_are_the_generator_masks_sorted_by_iou_times_stability(tiny_sam_checkpoint: str) -> None:
    p = PROPOSERS.build(dict(type="SAMAutomaticProposer", checkpoint=tiny_sam_checkpoint, amg=LOW_AMG,
                             min_area=0, nms_iou=None, max_candidates=None, device="cpu", **TINY_SAM))
    image = np.random.default_rng(0).integers(0, 256, (50, 90, 3), dtype=np.uint8)  # not square
    props = p.propose(image, {})
    assert props.masks.dtype == bool and props.masks.shape[1:] == (50, 90)
    records = [r for r in p.generator.generate(image) if r["area"] > 0]
    assert len(props) == len(records) >= 1
    expected = sorted(records, key=lambda r: -r["predicted_iou"] * r["stability_score"])
    assert props.scores.tolist() == pytest.approx([r["predicted_iou"] * r["stability_score"] for r in expected])
    assert all(np.array_equal(m, r["segmentation"]) for m, r in zip(props.masks, expected))


def test_sam_proposer_applies_the_cap(tiny_sam_checkpoint: str) -> None:
    p = SAMAutomaticProposer(checkpoint=tiny_sam_checkpoint, amg=LOW_AMG, min_area=0, nms_iou=None,
                             max_candidates=1, device="cpu", **TINY_SAM)
    props = p.propose(np.full((40, 30, 3), 128, np.uint8), {})
    assert props.masks.shape[0] <= 1 and props.masks.shape[1:] == (40, 30)


def test_single_output_mode_decodes_one_mask_per_point(tiny_sam_checkpoint: str) -> None:
    kwargs = dict(checkpoint=tiny_sam_checkpoint, amg=LOW_AMG, device="cpu", **TINY_SAM)
    image = np.zeros((32, 48, 3), np.uint8)
    counts = {}
    for multimask in (True, False):
        predictor = SAMAutomaticProposer(multimask_output=multimask, **kwargs).generator.predictor
        predictor.set_image(image)
        points = torch.tensor([[[10.0, 10.0]], [[40.0, 20.0]]])
        masks, _, _ = predictor.predict_torch(points, torch.ones(2, 1, dtype=torch.int), multimask_output=True)
        counts[multimask] = masks.shape[1]
    assert counts == {True: 3, False: 1}


def test_sam_proposer_missing_checkpoint_names_the_key_and_path(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*config key model\.mask_source\.proposer\.checkpoint"):
        SAMAutomaticProposer(checkpoint=missing, config_key="model.mask_source.proposer", **TINY_SAM)


def test_sam_proposer_rejects_unknown_amg_settings() -> None:
    with pytest.raises(TypeError, match=r"unknown amg setting\(s\) \['points_per_edge'\]"):
        SAMAutomaticProposer(amg=dict(points_per_edge=8), **TINY_SAM)


# -- make_pools + PrecomputedProposer on a hand-computed dataset -----------------------------------

def region_image(values: list[list[int]]) -> np.ndarray:
    v = np.asarray(values, dtype=np.uint8)
    return np.repeat(v[:, :, None], 3, axis=2)


#: image "imgA" (4x6): value 1 = rows 0-1 x cols 0-1 (4 px), value 2 = rows 0-2 x cols 4-5 (6 px)
IMG_A = region_image([[1, 1, 0, 0, 2, 2], [1, 1, 0, 0, 2, 2], [0, 0, 0, 0, 2, 2], [0, 0, 0, 0, 0, 0]])
#: image 7 (3x5): value 3 = rows 0-1 x cols 0-2 (6 px), value 5 = (1,4), (2,4) (2 px)
IMG_B = region_image([[3, 3, 3, 0, 0], [3, 3, 3, 0, 5], [0, 0, 0, 0, 5]])


def pool_test_samples(collide: bool = False) -> list[Sample]:
    """Three samples over two images; "A|1" shows imgA again (the proposer must not run twice)."""
    v1, v5 = IMG_A[..., 0] == 1, IMG_B[..., 0] == 5
    return [
        Sample(image=IMG_A, task="ores", meta=dict(sample_id="A|0", image_id="imgA", dataset="pooltest"), queries=[
            Query("region one", v1[None]),                               # oracle: {v1}, I 4 U 4
            Query("one and a bit of two", (v1 | px(4, 6, (0, 4), (1, 4)))[None]),  # v2 covered 2/6: I 4 U 6
        ]),
        Sample(image=IMG_A.copy(), task="ores", meta=dict(sample_id="A|1", image_id="imgA", dataset="pooltest"),
               queries=[Query("nothing", np.zeros((0, 4, 6), bool), exists=False)]),  # nothing selected: 1
        Sample(image=IMG_B, task="ores",
               meta=dict(sample_id="B|0", image_id="imgA" if collide else 7, dataset="pooltest"), queries=[
                   Query("five and a pixel", (v5 | px(3, 5, (2, 3)))[None]),       # {v5}: I 2 U 3
                   Query("the top block", box(3, 5, 0, 2, 0, 4)[None]),            # {v3}: I 6 U 8
               ]),
    ]


@DATASETS.register_module(name="ProposerTestDataset", force=True)
class ProposerTestDataset:
    """``len``/``getitem`` over :func:`pool_test_samples`, mmengine-``ConcatDataset`` ready."""

    def __init__(self, collide: bool = False, interleave: bool = False, test_mode: bool = False) -> None:
        self.collide = collide
        self.order = [0, 2, 1] if interleave else [0, 1, 2]  # interleave: A|0, B|0, A|1
        self.test_mode = test_mode

    @property
    def metainfo(self) -> dict:
        return {"platform": "reseg-test"}

    def full_init(self) -> None:
        pass

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> Sample:
        return pool_test_samples(self.collide)[self.order[i]]


@PROPOSERS.register_module(name="RegionProposerForTests", force=True)
class RegionProposer(BaseProposer):
    """One mask per non-zero value of the red channel, scored value / 10; counts its calls."""

    calls: ClassVar[list[str]] = []

    def __init__(self, fail_on: Any = None, **post: Any) -> None:
        super().__init__(**post)
        self.fail_on = fail_on

    def _propose_raw(self, image: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray]:
        RegionProposer.calls.append(str(meta["image_id"]))
        if meta["image_id"] == self.fail_on:
            raise RuntimeError(f"cannot propose for {meta['image_id']}")
        values = [int(v) for v in np.unique(image[..., 0]) if v]
        masks = np.stack([image[..., 0] == v for v in values])
        return masks, np.asarray(values, dtype=np.float32) / 10


def write_config(path: Path, proposer: dict, dataset: dict) -> str:
    path.write_text(f"proposer = {proposer!r}\nval_dataloader = dict(dataset={dataset!r})\n")
    return str(path)


#: the test dataset listed twice, as training configs up-weight a dataset: queries count once
TWICE = dict(type="ConcatDataset", datasets=[dict(type="ProposerTestDataset"), dict(type="ProposerTestDataset")])
REGIONS = dict(type="RegionProposerForTests", min_area=0, nms_iou=None)


@pytest.fixture
def pool_file(tmp_path: Path) -> tuple[Path, dict]:
    """make_pools run over :data:`TWICE` with the region proposer; returns (path, header)."""
    RegionProposer.calls.clear()
    cfg = write_config(tmp_path / "regions.py", REGIONS, TWICE)
    out = tmp_path / "pools.jsonl"
    assert load_tool("make_pools").main([cfg, "--out", str(out)]) == 0
    return out, json.loads(out.read_text().splitlines()[0])


def test_make_pools_runs_the_proposer_once_per_image(pool_file: tuple[Path, dict]) -> None:
    assert RegionProposer.calls == ["imgA", "7"]


def test_pool_file_lines_hold_key_size_rle_masks_and_scores(pool_file: tuple[Path, dict]) -> None:
    path, _ = pool_file
    lines = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    assert [(x["image_id"], x["size"], len(x["masks"]), x["scores"]) for x in lines] == [
        ("imgA", [4, 6], 2, pytest.approx([0.2, 0.1])), (7, [3, 5], 2, pytest.approx([0.5, 0.3]))]
    assert lines[0]["masks"][0]["size"] == [4, 6] and isinstance(lines[0]["masks"][0]["counts"], str)


def test_pool_file_permissions_follow_the_umask(pool_file: tuple[Path, dict]) -> None:
    umask = os.umask(0)
    os.umask(umask)
    assert pool_file[0].stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_pool_file_header_has_format_proposer_and_pool_size(pool_file: tuple[Path, dict]) -> None:
    _, header = pool_file
    assert (header["format"], header["version"], header["key"]) == ("reseg-pools", 1, "image_id")
    assert header["proposer"]["type"] == "RegionProposerForTests"
    assert header["proposer_config"] == {"type": "RegionProposerForTests", "min_area": 0, "nms_iou": None}
    assert header["dataset"]["split"] == "val"
    assert (header["n_images"], header["mean_n"], header["min_n"], header["max_n"]) == (2, 2.0, 2, 2)
    assert header["n_samples_scored"] == 3


def test_pool_file_header_has_the_hand_computed_oracle(pool_file: tuple[Path, dict]) -> None:
    oracle = pool_file[1]["oracle"]
    # per query (I, U): (4, 4), (4, 6), (0, 0) -> 1 (empty GT, nothing selected), (2, 3), (6, 8)
    assert oracle["rule"] == "coverage" and oracle["thr"] == 0.5
    assert oracle["n_queries"] == 5
    assert oracle["gIoU"] == pytest.approx((1 + 4 / 6 + 1 + 2 / 3 + 6 / 8) / 5)
    assert oracle["cIoU"] == pytest.approx(16 / 21)
    assert oracle["mean_selected"] == pytest.approx(4 / 5)


def test_an_image_seen_again_later_is_scored_with_its_stored_pool(tmp_path: Path) -> None:
    RegionProposer.calls.clear()
    cfg = write_config(tmp_path / "regions.py", REGIONS, dict(type="ProposerTestDataset", interleave=True))
    out = tmp_path / "pools.jsonl"
    load_tool("make_pools").main([cfg, "--out", str(out)])
    assert RegionProposer.calls == ["imgA", "7"]
    oracle = json.loads(out.read_text().splitlines()[0])["oracle"]
    assert (oracle["n_queries"], oracle["cIoU"]) == (5, pytest.approx(16 / 21))


def test_make_pools_prints_the_oracle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = write_config(tmp_path / "regions.py", REGIONS, dict(type="ProposerTestDataset"))
    load_tool("make_pools").main([cfg, "--out", str(tmp_path / "p.jsonl")])
    out = capsys.readouterr().out
    assert "pools: 2 images, N mean 2.00 (min 2, max 2)" in out
    assert "oracle (coverage > 0.5, 5 queries): gIoU 0.8167  cIoU 0.7619  mean selected 0.80" in out


def test_precomputed_proposer_returns_the_stored_pools(pool_file: tuple[Path, dict]) -> None:
    path, _ = pool_file
    pre = PROPOSERS.build(dict(type="PrecomputedProposer", pool_file=str(path)))
    assert len(pre) == 2 and pre.key == "image_id"
    a = pre.propose(IMG_A, {"image_id": "imgA"})
    assert np.array_equal(a.masks, np.stack([IMG_A[..., 0] == 2, IMG_A[..., 0] == 1]))
    assert a.scores.tolist() == pytest.approx([0.2, 0.1])
    for key in (7, "7", np.int64(7)):  # integers and their strings name the same image
        b = pre.propose(IMG_B, {"image_id": key})
        assert np.array_equal(b.masks, np.stack([IMG_B[..., 0] == 5, IMG_B[..., 0] == 3]))


def test_precomputed_proposer_missing_id_names_the_file_and_id(pool_file: tuple[Path, dict]) -> None:
    pre = PrecomputedProposer(str(pool_file[0]))
    with pytest.raises(KeyError, match=rf"pool file\(s\) {pool_file[0]} have no pool for image_id 'imgC'"):
        pre.propose(IMG_A, {"image_id": "imgC"})
    with pytest.raises(KeyError, match=r"has no 'image_id' to look the pool up by; meta keys: \['file_name'\]"):
        pre.propose(IMG_A, {"file_name": "a.jpg"})


def test_precomputed_proposer_reads_several_files_and_refuses_an_image_in_two(pool_file: tuple[Path, dict],
                                                                              tmp_path: Path) -> None:
    path, _ = pool_file
    lines = path.read_text().splitlines()
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("\n".join([lines[0], lines[1]]) + "\n")  # header + imgA
    second.write_text("\n".join([lines[0], lines[2]]) + "\n")  # header + image 7
    both = PrecomputedProposer([str(first), str(second)])
    single = PrecomputedProposer(str(path))
    assert len(both) == 2 and both.keys() == single.keys()
    a = both.propose(IMG_A, {"image_id": "imgA"})
    assert np.array_equal(a.masks, single.propose(IMG_A, {"image_id": "imgA"}).masks)
    with pytest.raises(PoolFileError, match=rf"image_id 'imgA' also in {first}, line 2"):
        PrecomputedProposer([str(first), str(path)])


def test_precomputed_proposer_size_mismatch_names_both_sizes(pool_file: tuple[Path, dict]) -> None:
    pre = PrecomputedProposer(str(pool_file[0]))
    with pytest.raises(ValueError, match=r"line 3: the pool of image_id 7 is 3x5 \(height x width\) but the image "
                                         r"is 4x6"):
        pre.propose(IMG_A, {"image_id": 7})


def test_precomputed_proposer_key_must_be_the_files(pool_file: tuple[Path, dict]) -> None:
    with pytest.raises(PoolFileError, match=r"names images by 'image_id'.*not 'file_name'"):
        PrecomputedProposer(str(pool_file[0]), key="file_name")


def test_precomputed_proposer_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "preds.jsonl"
    bad.write_text('{"sample_id": "a", "query_index": 0}\n')
    with pytest.raises(PoolFileError, match=r"preds\.jsonl, line 1: not a pool file header"):
        PrecomputedProposer(str(bad))
    with pytest.raises(FileNotFoundError, match=r"pool file not found: .*missing\.jsonl"):
        PrecomputedProposer(str(tmp_path / "missing.jsonl"))


def test_make_pools_refuses_to_overwrite(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "regions.py", REGIONS, dict(type="ProposerTestDataset"))
    out = tmp_path / "pools.jsonl"
    out.write_text("my own file\n")
    with pytest.raises(SystemExit, match=r"exists; pass --overwrite to replace it"):
        load_tool("make_pools").main([cfg, "--out", str(out)])
    assert out.read_text() == "my own file\n"
    assert load_tool("make_pools").main([cfg, "--out", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text().splitlines()[0])["format"] == "reseg-pools"


def test_make_pools_failure_leaves_no_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "regions.py", dict(REGIONS, fail_on=7), dict(type="ProposerTestDataset"))
    with pytest.raises(RuntimeError, match="cannot propose for 7"):
        load_tool("make_pools").main([cfg, "--out", str(tmp_path / "pools.jsonl")])
    assert sorted(os.listdir(tmp_path)) == ["regions.py"]  # neither the pool file nor a temporary one


def test_make_pools_key_naming_two_images_is_an_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "regions.py", REGIONS, dict(type="ProposerTestDataset", collide=True))
    with pytest.raises(SystemExit, match=r"--key image_id value 'imgA' names two different images \(samples "
                                         r"'A\|0' and 'B\|0'\)"):
        load_tool("make_pools").main([cfg, "--out", str(tmp_path / "pools.jsonl")])
    assert not (tmp_path / "pools.jsonl").exists()


def test_make_pools_limit_stops_after_n_images(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "regions.py", REGIONS, dict(type="ProposerTestDataset"))
    out = tmp_path / "pools.jsonl"
    load_tool("make_pools").main([cfg, "--out", str(out), "--limit", "1"])
    header, *lines = out.read_text().splitlines()
    assert len(lines) == 1 and json.loads(header)["oracle"]["n_queries"] == 3  # samples A|0 and A|1


def test_proposer_config_is_found_in_a_model_config(tmp_path: Path) -> None:
    from mmengine.config import Config

    tool = load_tool("make_pools")
    path = tmp_path / "model.py"
    path.write_text("model = dict(mask_source=dict(type='CandidatePoolSource', "
                    "proposer=dict(type='PrecomputedProposer', pool_file='p.jsonl')))\n")
    assert tool.proposer_config(Config.fromfile(str(path)), str(path)) == (
        {"type": "PrecomputedProposer", "pool_file": "p.jsonl"}, "model.mask_source.proposer")
    (tmp_path / "none.py").write_text("model = dict(mask_source=dict(type='SAMMaskSource'))\n")
    with pytest.raises(SystemExit, match=r"none\.py has no proposer config"):
        tool.proposer_config(Config.fromfile(str(tmp_path / "none.py")), str(tmp_path / "none.py"))


def test_tiny_sam_pools_round_trip_on_the_synthetic_benchmark(synth_root: Path, tiny_sam_checkpoint: str,
                                                              tmp_path: Path) -> None:
    from reseg.evaluation.dump import build_dataset

    sam = dict(type="SAMAutomaticProposer", checkpoint=tiny_sam_checkpoint, amg=LOW_AMG, device="cpu",
               min_area=0, **TINY_SAM)
    refer = dict(type="RefCOCODataset", data_root=str(synth_root / "refer_seg"), dataset="synthref", split_by="unc",
                 split="val")
    cfg = write_config(tmp_path / "sam.py", sam, refer)
    out = tmp_path / "pools.jsonl"
    assert load_tool("make_pools").main([cfg, "--out", str(out), "--limit", "2"]) == 0
    pre = PrecomputedProposer(str(out))
    fresh = PROPOSERS.build(dict(sam))
    dataset = build_dataset(dict(refer, test_mode=True))
    for i in range(2):
        s = dataset[i]
        stored, again = pre.propose(s.image, s.meta), fresh.propose(s.image, s.meta)
        assert stored.masks.shape[1:] == s.size and len(stored) == len(again) >= 1
        assert np.array_equal(stored.masks, again.masks)
        assert stored.scores == pytest.approx(again.scores, abs=1e-6)


# -- mmdet --------------------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("mmdet") is not None, reason="mmdet is installed")
def test_mmdet_proposer_without_mmdet_says_how_to_install() -> None:
    with pytest.raises(ImportError, match=r"tools/install_mmdet\.sh.*pip install -e \.\[mmdet\]"):
        MMDetProposer(config="any.py")


def mask_rcnn(**kwargs: Any) -> MMDetProposer:
    """mmdet's bundled Mask R-CNN R50-FPN config, random weights, every instance kept (score > 0)."""
    import mmdet

    config = Path(mmdet.__file__).parent / ".mim" / "configs" / "mask_rcnn" / "mask-rcnn_r50_fpn_1x_coco.py"
    assert config.is_file(), f"mmdet's bundled configs not found at {config}"
    return PROPOSERS.build(dict(type="MMDetProposer", config=str(config), score_thr=0.0, device="cpu",
                                cfg_options={"model.backbone.init_cfg": None, "model.test_cfg.rcnn.score_thr": 0.0},
                                min_area=0, max_candidates=20, **kwargs))


@pytest.mark.mmdet
def test_mmdet_mask_rcnn_random_weights_gives_masks_at_the_image_size() -> None:
    pytest.importorskip("mmdet.apis")
    torch.manual_seed(0)
    p = mask_rcnn()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    props = p.propose(image, {})
    assert props.masks.dtype == bool and props.masks.shape[1:] == (96, 128)
    assert 1 <= len(props) <= 20 and props.meta["n_raw"] >= len(props)
    assert np.all(np.diff(props.scores) <= 0) and np.all(props.scores > 0.0)
    # the registry scope is restored after mmdet built and ran the detector
    from mmengine.registry import DefaultScope

    current = DefaultScope.get_current_instance()
    assert current is None or current.scope_name != "mmdet"


@pytest.mark.mmdet
def test_mmdet_checkpoint_is_loaded_strictly_by_the_safe_loader(tmp_path: Path) -> None:
    pytest.importorskip("mmdet.apis")
    import warnings

    torch.manual_seed(0)
    first = mask_rcnn()
    path = tmp_path / "mask_rcnn.pth"
    torch.save({"state_dict": first.model.state_dict(), "meta": {"dataset_meta": {"classes": ("a", "b")}}}, path)
    torch.manual_seed(1)  # other random weights, replaced by the checkpoint's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = mask_rcnn(checkpoint=str(path))
    assert not [w for w in caught if "checkpoint is None" in str(w.message)]
    assert loaded.model.dataset_meta == {"classes": ("a", "b")}
    image = np.random.default_rng(1).integers(0, 256, (80, 72, 3), dtype=np.uint8)
    a, b = first.propose(image), loaded.propose(image)
    assert len(a) == len(b) >= 1 and np.array_equal(a.masks, b.masks)
    assert a.scores == pytest.approx(b.scores)

    sd = first.model.state_dict()
    sd.pop(next(iter(sd)))
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match=r"partial\.pth.*does not fit the config.*1 missing keys"):
        mask_rcnn(checkpoint=str(tmp_path / "partial.pth"))
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pth.*proposer\.checkpoint"):
        mask_rcnn(checkpoint=str(tmp_path / "nope.pth"))


def test_reseg_list_shows_the_built_in_proposers_and_mask_encoders() -> None:
    """`reseg list` imports the registries' lazy locations first (they were listed as "(none)")."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "reseg.cli", "list", "proposers"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("MMDetProposer", "PrecomputedProposer", "SAMAutomaticProposer"):
        assert name in out.stdout
    out = subprocess.run([sys.executable, "-m", "reseg.cli", "list", "mask_encoders"], capture_output=True,
                         text=True, timeout=120)
    assert "MaskTokenizer" in out.stdout and "PositionEncoding" in out.stdout
