"""Every tiny config computes the numbers pinned in ``tests/fixtures/equivalence.json``.

The fixture holds, per config, the training losses and gradient norm of a randomly initialised model
on a fixed batch, its teacher-forced predictions (mask logits at probe pixels, existence, scores,
selections, heat-maps) and its free-generation answers; ``tests/equivalence.py`` says how it was made.
A refactor of the core or a head that changes any of them beyond 1e-6 fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from equivalence import CONFIGS, compare, record

FIXTURE = Path(__file__).parent / "fixtures" / "equivalence.json"


@pytest.fixture(scope="module")
def pinned() -> dict:
    return json.loads(FIXTURE.read_text())


def test_the_fixture_covers_every_pinned_config(pinned):
    assert sorted(pinned) == sorted(CONFIGS)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_numbers_are_unchanged(config, pinned, synth_root, tmp_path):
    got = json.loads(json.dumps(record(config, synth_root, str(tmp_path / "tok"))))
    diffs = compare(got, pinned[config])
    assert not diffs, f"{config}: {len(diffs)} values changed, e.g.\n" + "\n".join(diffs[:12])


def test_the_comparison_sees_a_change_beyond_the_tolerance(pinned):
    config = sorted(pinned)[0]
    changed = json.loads(json.dumps(pinned[config]))
    name = sorted(changed["loss"])[0]
    changed["loss"][name] += 1e-4
    expected = f".loss.{name}: {changed['loss'][name]!r} != {pinned[config]['loss'][name]!r}"
    assert compare(changed, pinned[config]) == [expected]
    changed["loss"][name] = pinned[config]["loss"][name] + 1e-8
    assert compare(changed, pinned[config]) == []
