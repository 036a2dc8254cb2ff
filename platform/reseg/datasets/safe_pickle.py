"""Loading REFER ``refs(<splitBy>).p`` files without letting a pickle run code.

A pickle can name any importable callable (``os.system``, ``builtins.exec``, ...) and have the loader
call it. The REFER refs files (spec seg_token_family.md §5.2) only hold plain containers and scalars
(dict, list, tuple, str, bytes, int, float, bool, None), which the pickle format encodes without
naming any global. :func:`load_pickle` therefore refuses *every* global: a file that names one is
rejected before anything is called, with an error naming the file and the global.

This is the only place in reseg that unpickles data; use :func:`load_pickle` / :func:`loads_pickle`
instead of ``pickle.load``.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, "os.PathLike[str]"]

#: Protocol used by :func:`dump_pickle`: 2 is what the original (Python 2) REFER files use and what
#: every Python can read; it needs no globals for dict/list/str/int/float.
DUMP_PROTOCOL = 2


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global (a class or function); it was not loaded."""

    def __init__(self, source: str, global_name: str) -> None:
        self.source = source
        self.global_name = global_name
        super().__init__(
            f"refusing to unpickle {source}: it references the global {global_name!r}. "
            "reseg only loads pickles made of plain containers and scalars (dict, list, tuple, str, "
            "bytes, int, float, bool, None), as REFER refs files are; nothing from this file was run."
        )


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` refuses everything, so no pickled callable can be reached."""

    def __init__(self, file: io.BufferedIOBase, source: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding, errors="strict")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(self._source, f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            f"refusing to unpickle {self._source}: it uses a persistent id ({pid!r}), "
            "which plain-data pickles never do"
        )


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle plain data from ``data``; see :func:`load_pickle`. ``source`` names it in errors."""
    # Python-2 pickles store ``str`` as raw bytes: decode them as UTF-8 (which ASCII is), and fall back
    # to latin-1, which maps every byte, when a string is not valid UTF-8.
    last: Exception | None = None
    for encoding in ("utf-8", "latin1"):
        try:
            return _PlainDataUnpickler(io.BytesIO(data), source, encoding).load()
        except UnsafePickleError:
            raise
        except UnicodeDecodeError as err:
            last = err
            continue
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, OverflowError) as err:
            raise pickle.UnpicklingError(
                f"{source}: not a readable pickle ({type(err).__name__}: {err})"
            ) from None
    raise pickle.UnpicklingError(f"{source}: could not decode its strings ({last})")


def load_pickle(path: PathLike) -> Any:
    """Load a pickle of plain data (a REFER ``refs(<splitBy>).p``) without running any code.

    Handles Python-2-era pickles (byte strings decoded as UTF-8, falling back to latin-1).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle references a global (``module.name`` is in the message).
        pickle.UnpicklingError: the file is truncated or not a pickle.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pickle file not found: {p}")
    return loads_pickle(p.read_bytes(), source=str(p))


def dump_pickle(obj: Any, path: PathLike, protocol: int = DUMP_PROTOCOL) -> None:
    """Write plain data ``obj`` to ``path`` deterministically (same values => same bytes).

    Parent folders are created; the file is written to a temporary name, then renamed.
    ``obj`` must not contain reference cycles.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        pickler = pickle.Pickler(f, protocol=protocol)
        # No memo: the bytes then depend only on the values, not on which equal strings happen to be
        # the same object (which differs between a single process and a worker pool). Plain data has
        # no cycles, which is the one thing the memo would be needed for.
        pickler.fast = True
        pickler.dump(obj)
    os.replace(tmp, p)
