"""Modules moved in v2: the old import path fails with a message naming the new one (reseg.moved)."""
from __future__ import annotations

import importlib
import re

import pytest

from reseg.moved import MOVED_MODULES


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_fails_naming_its_new_home(old):
    new = MOVED_MODULES[old].split()[0]
    importlib.import_module(new)  # the new home exists
    with pytest.raises(ModuleNotFoundError, match=rf"^{re.escape(old)} moved in reseg v2 to {re.escape(new)}\b"):
        importlib.import_module(old)


def test_a_module_that_never_existed_gets_the_usual_error():
    with pytest.raises(ModuleNotFoundError, match=r"^No module named 'reseg\.datasets\.no_such_module'$"):
        importlib.import_module("reseg.datasets.no_such_module")


def test_the_changelog_lists_every_moved_module():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "changelog.md").read_text()
    assert [old for old in MOVED_MODULES if f"`{old}`" not in text] == []
