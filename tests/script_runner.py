"""Run a script of ``tools/`` in the test process, as ``python tools/<name>.py ARGS`` runs it.

For the scripts whose code is not (yet) a module of ``reseg.tools`` (``tools/infer.py``,
``tools/benchmark.py``, ``tools/analyze_seg_token.py``): the file is executed as ``__main__`` with
``sys.argv`` set, so its ``if __name__ == "__main__"`` entry point is what the test exercises.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(path: str, argv: list[str]) -> int:
    """Run ``ROOT/path`` as a script with ``argv``; its exit code (0 when it returns normally).

    ``sys.exit("error: ...")`` (a message, not a number) propagates as ``SystemExit``, so tests can
    match the message with ``pytest.raises(SystemExit, match=...)``.
    """
    script = str(ROOT / path)
    saved = sys.argv
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        raise
    finally:
        sys.argv = saved
    return 0
