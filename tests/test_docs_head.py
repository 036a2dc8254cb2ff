"""docs/write_a_head_plugin.md shows the tested fixture head verbatim, and it is a page long."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAD = ROOT / "tests" / "fixtures" / "thirdparty_head" / "reseg_thirdparty_head" / "head.py"
DOC = ROOT / "docs" / "write_a_head_plugin.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_documented_head_is_the_tested_fixture_verbatim():
    assert HEAD.read_text() in _python_blocks(DOC.read_text())


def test_the_documented_head_is_complete_and_at_most_80_lines():
    code = HEAD.read_text()
    assert len(code.splitlines()) <= 80
    assert "..." not in code and "NotImplementedError" not in code
    for step in ("def build_conversations", "def forward", "def loss_by_feat", "def predict_by_feat"):
        assert step in code
