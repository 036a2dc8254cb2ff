"""Where a config's relative paths point: the reseg root, whatever the current folder is.

A config says ``data/synthref/refer_seg`` or ``data/tiny_models/vision_tiny.pth``; the code that reads
such a path resolves it with :func:`resolve_path`, against :func:`reseg_root`:

1. ``RESEG_ROOT`` when it is set (a folder holding ``data/``, ``checkpoints/``, ... of your own);
2. else the source checkout reseg runs from (the folder holding ``configs/`` and ``platform/reseg/``,
   which ``pip install -e .`` and ``make`` use), so ``load_model(".../configs/x.py", ...)`` and
   ``tools/*.py`` work from any folder and find what ``make demo`` wrote;
3. else (reseg installed without its checkout) the current folder, mmengine's convention.

Paths given on the command line (``tools/test.py CONFIG CHECKPOINT``, ``--work-dir``, ``--out``) stay
relative to the current folder, as every command-line path is. Absolute paths and ``~`` work as usual.

:func:`missing_hint` says, for a path that does not exist, which ``make`` target writes it (the
synthetic benchmark, the tiny pre-trained parts, the candidate pools) or that the current folder
holds a file of that name (a relative path is no longer looked up there).
"""
from __future__ import annotations

import os
from pathlib import Path

PathLike = str | os.PathLike

#: The environment variable that sets the folder a config's relative paths are relative to.
ROOT_ENV = "RESEG_ROOT"

#: The checkout this module belongs to, when it is one: ``<root>/platform/reseg/paths.py``.
_CHECKOUT = Path(__file__).resolve().parents[2]

#: Relative paths that a ``make`` target of the checkout writes, most specific first: (path or folder
#: prefix, what writes it). Keep in step with the Makefile (tests/test_after_make_demo.py checks the tiny parts).
MAKE_TARGETS: tuple[tuple[str, str], ...] = (
    ("data/synthref/pools", "`make pools` (the tiny SAM's candidate pools of the RES and GRES splits)"),
    ("data/synthref", "`make data` (the synthetic benchmark; `make demo` runs it)"),
    ("data/tiny_models/sam128_attr/sam_tiny.pth", "`make pretrain-demo` (part of `make demo`)"),
    ("data/tiny_models/sam_tiny.pth", "`make pretrain-demo` (part of `make demo`)"),
    ("data/tiny_models/vision_tiny.pth", "`make pretrain-demo` (part of `make demo`)"),
    ("data/tiny_models/llava_tiny.pth",
     "`tools/research/pretrain_tiny.py --parts llava` (an experiment, not part of `make demo`)"),
)


def _is_checkout(folder: Path) -> bool:
    return (folder / "configs").is_dir() and (folder / "platform" / "reseg").is_dir()


def reseg_root() -> Path:
    """The folder a config's relative paths are relative to (``RESEG_ROOT``, the checkout, or the
    current folder; see the module docstring)."""
    env = os.environ.get(ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    if _is_checkout(_CHECKOUT):
        return _CHECKOUT
    return Path.cwd()


def resolve_path(path: PathLike) -> Path:
    """``path`` from a config as an absolute :class:`~pathlib.Path`: ``~`` expanded, a relative path
    taken under :func:`reseg_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else reseg_root() / p


def resolve_optional(path: PathLike | None) -> Path | None:
    """:func:`resolve_path`, passing None through (an optional checkpoint left unset)."""
    return None if path is None else resolve_path(path)


def missing_hint(path: PathLike) -> str:
    """What to do about a configured path that does not exist: ``""``, or a sentence (with a leading
    space) naming the ``make`` target that writes it, or the file of that name in the current folder."""
    p = resolve_path(path)
    root = reseg_root()
    try:
        rel = p.relative_to(root).as_posix()
    except ValueError:
        rel = None
    if rel is not None:
        for known, writer in MAKE_TARGETS:
            if rel == known or rel.startswith(known + "/"):
                where = "" if root == Path.cwd() else f" in {root}"
                return f" {writer} writes it: run it{where}."
        here = Path.cwd() / rel
        if root != Path.cwd() and here.exists():
            return (f" A relative path in a config is relative to the reseg root {root}, not to the current "
                    f"folder, which holds {str(here)!r}: give that absolute path, or set {ROOT_ENV}.")
    return ""


def require_weights_file(path: PathLike, key: str, example: str = "/data/checkpoints/sam_vit_h_4b8939.pth") -> Path:
    """The resolved weights file of config key ``key``, or a ``FileNotFoundError`` naming the path and
    the key, with the ``make`` target that writes it (a tiny part) or an ``--cfg-options`` example."""
    p = resolve_path(path)
    if not p.is_file():
        hint = missing_hint(path) or f" Point {key} at a local file, e.g. --cfg-options {key}={example}"
        raise FileNotFoundError(f"checkpoint not found: {str(p)!r} (config key {key}). reseg never downloads "
                                f"weights.{hint}")
    return p
