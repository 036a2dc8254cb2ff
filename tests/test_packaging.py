"""Packaging: setup.cfg declares ranges, constraints.txt pins the tested set, and the two agree.

A user installs reseg beside their own torch build or a newer library, so ``install_requires`` must not
pin exact versions; ``make`` installs with ``pip -c constraints.txt`` so the two README commands stay
reproducible. These checks read the files as pip would and compare them with the installed environment.
"""
from __future__ import annotations

import configparser
import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _requirements(value: str) -> list[Requirement]:
    lines = [ln.split("#", 1)[0].strip() for ln in value.splitlines()]
    return [Requirement(ln) for ln in lines if ln]


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt line {n}: {line!r} is not 'name==version'"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_install_requires_declares_ranges_not_pins():
    reqs = _requirements(_setup_cfg()["options"]["install_requires"])
    assert len(reqs) >= 10
    pinned = [str(r) for r in reqs if any(s.operator in ("==", "===") for s in r.specifier)]
    assert pinned == [], f"setup.cfg install_requires pins exact versions: {pinned}"
    unbounded = [r.name for r in reqs if not r.specifier]
    assert unbounded == [], f"setup.cfg install_requires without a tested lower bound: {unbounded}"


def test_one_opencv_distribution():
    names = {canonicalize_name(r.name) for r in _requirements(_setup_cfg()["options"]["install_requires"])}
    opencv = sorted(n for n in names if n.startswith("opencv"))
    assert len(opencv) == 1, f"two OpenCV distributions overwrite each other's cv2: {opencv}"


def test_constraints_pin_every_requirement_inside_its_range():
    pins = _constraints()
    cfg = _setup_cfg()
    reqs = _requirements(cfg["options"]["install_requires"]) + _requirements(cfg["options.extras_require"]["test"])
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"{r.name} (setup.cfg) has no pin in constraints.txt"
        assert r.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {r.name}=={pins[name]}, outside setup.cfg's range {r.specifier}"


@pytest.mark.parametrize("name", ["torch", "transformers", "mmengine", "peft", "numpy", "segment-anything"])
def test_the_installed_versions_are_the_pinned_ones(name):
    """`make` installs with -c constraints.txt: what the tests run on is what the file says."""
    pinned = _constraints()[canonicalize_name(name)]
    installed = metadata.version(name)
    assert installed.split("+")[0] == pinned.split("+")[0], \
        f"{name}: installed {installed}, constraints.txt pins {pinned} (run make lock after an upgrade)"
