"""The COCO RLE codec (:mod:`reseg.masks.rle`) and every file format that stores masks through it.

Unit tests check the codec against run lengths computed here by hand or with plain numpy. The
format tests read ``tests/fixtures/rle_formats``: a pool file, a prediction dump and a MaskGroups
json written by the writers as they were before the codec was unified (commit 73f3c18, with
``PoolFileWriter``, ``PredictionDumper`` and ``reseg.datasets.encode_rle`` on the masks below), and
check that they still load to the same masks and that today's writers produce the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reseg.datasets import DatasetFormatError, MaskGroupsDataset
from reseg.datasets.io import coco_segmentation_to_mask
from reseg.evaluation.dump import load_predictions, record_to_prediction
from reseg.masks.rle import decode_rle, encode_rle, encode_rles, rle_runs, rle_size
from reseg.models.mask_sources.pool.proposers import PoolFileError, PoolFileWriter, PrecomputedProposer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rle_formats"


def runs_of(mask: np.ndarray) -> list[int]:
    """COCO run lengths by plain numpy: column-major pixels, alternating runs starting with background."""
    flat = np.asarray(mask, dtype=bool).T.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(edges).tolist()
    return [0] + runs if flat.size and flat[0] else runs


# -- encoding ----------------------------------------------------------------------------------------

def test_encode_hand_computed_strings():
    # column-major pixels 0 1 1 0 0 0 -> runs 1, 2, 3, one character each ('0' + run)
    assert encode_rle(np.array([[0, 1, 0], [1, 0, 0]], bool)) == {"size": [2, 3], "counts": "123"}
    # runs 2, 4, 1, 1: the fourth run is stored as 1 - 4 = -3, i.e. 29 (sign bit 0x10 set) + 48 = 'M'
    assert encode_rle(np.array([[0, 0, 1, 1, 1, 1, 0, 1]], bool)) == {"size": [1, 8], "counts": "241M"}
    # a run of 40 needs two characters: 40 = 8 + 1 * 32 -> 'X' (8 | 0x20 "more" + 48), then '1'
    m = np.zeros((1, 41), bool)
    m[0, 40] = True
    assert encode_rle(m) == {"size": [1, 41], "counts": "X11"}


def test_round_trip_matches_numpy_runs():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (2, 3), (5, 7), (31, 17), (64, 200)]:
        for density in (0.0, 0.02, 0.5, 0.98, 1.0):
            m = rng.random(shape) < density
            rle = encode_rle(m)
            assert rle["size"] == list(shape) and isinstance(rle["counts"], str)
            assert rle_runs(rle["counts"]).tolist() == runs_of(m), (shape, density)
            out = decode_rle(rle, "x")
            assert out.dtype == bool and out.flags["C_CONTIGUOUS"] and np.array_equal(out, m)
            assert json.loads(json.dumps(rle)) == rle


def test_empty_and_full_masks():
    empty = encode_rle(np.zeros((4, 6), bool))
    assert rle_runs(empty["counts"]).tolist() == [24]
    assert not decode_rle(empty, "x").any()
    full = encode_rle(np.ones((4, 6), bool))
    assert rle_runs(full["counts"]).tolist() == [0, 24]
    assert decode_rle(full, "x").all()


def test_non_contiguous_and_fortran_inputs_encode_their_values():
    rng = np.random.default_rng(1)
    base = rng.random((12, 15)) < 0.4
    view = base[1::2, ::3]  # neither C- nor Fortran-contiguous
    assert not view.flags["C_CONTIGUOUS"] and not view.flags["F_CONTIGUOUS"]
    assert rle_runs(encode_rle(view)["counts"]).tolist() == runs_of(np.ascontiguousarray(view))
    fortran = np.asfortranarray(base)
    assert encode_rle(fortran) == encode_rle(np.ascontiguousarray(base))
    assert np.array_equal(decode_rle(encode_rle(base.T), "x"), base.T)  # a transposed view


def test_any_dtype_nonzero_is_foreground():
    m = np.array([[0, 3, 0], [255, 0, 0]], np.uint8)
    assert encode_rle(m) == encode_rle(m.astype(bool)) == {"size": [2, 3], "counts": "123"}
    assert encode_rle(np.array([[0.0, 0.5, 0.0], [1.0, 0.0, 0.0]])) == {"size": [2, 3], "counts": "123"}


def test_encode_rles_encodes_each_mask_like_encode_rle():
    rng = np.random.default_rng(2)
    masks = rng.random((4, 9, 5)) < 0.5
    assert encode_rles(masks) == [encode_rle(m) for m in masks]
    assert encode_rles(np.zeros((0, 9, 5), bool)) == []
    with pytest.raises(ValueError, match=r"\[N, H, W\].*\(9, 5\)"):
        encode_rles(masks[0])
    with pytest.raises(ValueError, match=r"\[H, W\].*\(4, 9, 5\)"):
        encode_rle(masks)


# -- decoding ----------------------------------------------------------------------------------------

def test_decode_accepts_bytes_and_uncompressed_counts():
    expected = np.array([[0, 1, 0], [1, 0, 0]], bool)
    for counts in ("123", b"123", [1, 2, 3], (1, 2, 3)):
        assert np.array_equal(decode_rle({"size": [2, 3], "counts": counts}, "x"), expected), counts
    # a mask whose first pixel is set starts with an empty background run
    assert np.array_equal(decode_rle({"size": [1, 3], "counts": [0, 1, 2]}, "x"), [[True, False, False]])


def test_string_runs_decode_negative_deltas_and_long_runs():
    assert rle_runs("241M").tolist() == [2, 4, 1, 1]
    assert rle_runs("X11").tolist() == [40, 1]
    assert rle_runs("").tolist() == []


class _MyFormatError(ValueError):
    pass


@pytest.mark.parametrize("rle, message", [
    ([1, 2, 3], r"here: expected a COCO RLE dict \{size, counts\}, got list"),
    ({"counts": "123"}, r"here: missing key 'size' \(\[height, width\]\); keys present: \['counts'\]"),
    ({"size": [2, 3]}, r"here: missing key 'counts'"),
    ({"size": [2], "counts": "6"}, r"here: RLE 'size' must be \[height, width\] \(positive ints\), got \[2\]"),
    ({"size": [2, 0], "counts": ""}, r"'size' must be .*got \[2, 0\]"),
    ({"size": [2, True], "counts": "6"}, r"'size' must be"),
    ({"size": [2, 3], "counts": 6}, r"here: malformed RLE counts \('counts' must be a string or a list, got int\)"),
    ({"size": [2, 3], "counts": "12~"}, r"malformed RLE counts \(character '~' outside the RLE alphabet\)"),
    ({"size": [2, 3], "counts": "12X"}, r"malformed RLE counts \(truncated run"),
    ({"size": [2, 3], "counts": "12é"}, r"malformed RLE counts \(a non-ASCII character"),
    ({"size": [2, 3], "counts": [1, "a", 3]}, r"malformed RLE counts \(a list of counts must hold integers"),
    ({"size": [2, 3], "counts": "122"}, r"here: RLE runs add up to 5 pixels \(negative runs: False\), but 'size' "
                                        r"\[2, 3\] has 6"),
    ({"size": [2, 3], "counts": ""}, r"add up to 0 pixels"),
    ({"size": [1, 3], "counts": [4, -1]}, r"add up to 3 pixels \(negative runs: True\)"),
])
def test_malformed_rles_raise_the_callers_error_naming_where(rle, message):
    with pytest.raises(_MyFormatError, match=message):
        decode_rle(rle, "here", _MyFormatError)
    with pytest.raises(ValueError, match=message):  # the default error type
        decode_rle(rle, "here")


def test_rle_size():
    assert rle_size({"size": [3, 4], "counts": "C"}, "x") == (3, 4)
    assert rle_size({"size": (np.int64(3), 4), "counts": "C"}, "x") == (3, 4)


# -- the on-disk formats, as written before the codec was unified -----------------------------------

H, W = 5, 7


def fixture_masks() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The masks the fixture files hold: a box, three single pixels, an empty and a full mask."""
    a = np.zeros((H, W), bool)
    a[1:3, 2:6] = True
    b = np.zeros((H, W), bool)
    b[0, 0] = b[4, 6] = b[2, 3] = True
    return a, b, np.zeros((H, W), bool), np.ones((H, W), bool)


def test_pool_file_written_before_reads_back_and_is_written_identically(tmp_path):
    a, b, c, d = fixture_masks()
    path = FIXTURES / "pools.jsonl"
    proposer = PrecomputedProposer(str(path))
    image = np.zeros((H, W, 3), np.uint8)
    masks, scores = proposer._propose_raw(image, {"image_id": 7})
    assert np.array_equal(masks, np.stack([a, b, d])) and scores.tolist() == pytest.approx([0.9, 0.5, 0.25])
    masks, scores = proposer._propose_raw(image, {"image_id": "img_b"})
    assert np.array_equal(masks, c[None]) and scores is None
    masks, _ = proposer._propose_raw(image, {"image_id": 9})
    assert masks.shape == (0, H, W)
    # the same pools written today: the same bytes
    out = tmp_path / "pools.jsonl"
    with PoolFileWriter(out, key="image_id", header={"proposer": {"type": "HandMade"}}) as writer:
        writer.add(7, np.stack([a, b, d]), np.array([0.9, 0.5, 0.25]))
        writer.add("img_b", c[None], None)
        writer.add(9, np.zeros((0, H, W), bool), np.zeros(0))
    assert out.read_bytes() == path.read_bytes()


def test_pool_file_errors_name_the_line_and_the_mask(tmp_path):
    lines = (FIXTURES / "pools.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["masks"][1]["counts"] = rec["masks"][1]["counts"][:-1]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([lines[0], json.dumps(rec)]) + "\n")
    proposer = PrecomputedProposer(str(bad))
    with pytest.raises(PoolFileError, match=rf"{bad}, line 2: masks\[1\]: RLE runs add up to"):
        proposer._propose_raw(np.zeros((H, W, 3), np.uint8), {"image_id": 7})
    rec["masks"][1] = {"size": [W, H], "counts": "S1"}
    bad.write_text("\n".join([lines[0], json.dumps(rec)]) + "\n")
    with pytest.raises(PoolFileError, match=r"line 2: masks\[1\] has size \[7, 5\] but the line's size is \[5, 7\]"):
        PrecomputedProposer(str(bad))._propose_raw(np.zeros((H, W, 3), np.uint8), {"image_id": 7})


def test_prediction_dump_written_before_reads_back():
    a, b, c, _ = fixture_masks()
    path = FIXTURES / "predictions.jsonl"
    table = load_predictions(str(path))
    first = record_to_prediction(table["s|0"][0], (H, W))
    assert np.array_equal(first.masks, np.stack([a, a | b]))  # [first mask, union]
    none = record_to_prediction(table["s|0"][1], (H, W))
    assert none.masks.shape == (0, H, W) and not none.exists
    # the masks as the dumper encodes them today
    assert table["s|0"][0]["mask_rle"] == encode_rle(a | b)
    assert table["s|0"][0]["first_mask_rle"] == encode_rle(a)
    assert table["s|0"][1]["mask_rle"] == encode_rle(c)


def test_prediction_dump_errors_name_the_record_and_field():
    record = dict(json.loads((FIXTURES / "predictions.jsonl").read_text().splitlines()[0]))
    record["first_mask_rle"] = {"size": [H, W], "counts": "0"}
    with pytest.raises(ValueError, match=r"sample 's\|0', query 0: first_mask_rle: RLE runs add up to 0 pixels"):
        record_to_prediction(record, (H, W))


def test_maskgroups_json_written_before_loads():
    a, b, _, d = fixture_masks()
    ds = MaskGroupsDataset(FIXTURES / "mask_groups", split="validation", image_dir="images", test_mode=True)
    sample = ds[0]
    assert np.array_equal(sample.candidate_masks, np.stack([a, b, d]))
    (query,) = sample.queries
    assert np.array_equal(query.masks, a[None]) and np.array_equal(query.reference_masks, b[None])
    records = json.loads((FIXTURES / "mask_groups" / "validation.json").read_text())
    assert records[0]["mask_pool"] == [encode_rle(m) for m in (a, b, d)]
    assert records[0]["ref_mask"] == [encode_rle(b)]


def test_coco_segmentation_rle_compressed_and_uncompressed():
    expected = np.array([[0, 1, 0], [1, 0, 0]], bool)
    for counts in ("123", [1, 2, 3]):
        assert np.array_equal(coco_segmentation_to_mask({"size": [2, 3], "counts": counts}, 2, 3), expected)
    with pytest.raises(DatasetFormatError, match=r"RLE segmentation: RLE runs add up to 5"):
        coco_segmentation_to_mask({"size": [2, 3], "counts": "122"}, 2, 3)
    with pytest.raises(DatasetFormatError, match=r"RLE segmentation has size \[3, 2\] .* the image is 2x3"):
        coco_segmentation_to_mask({"size": [3, 2], "counts": "123"}, 2, 3)
