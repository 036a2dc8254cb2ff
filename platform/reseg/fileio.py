"""File writes that a kill cannot leave half done (checkpoints, run reports, prediction dumps)."""
from __future__ import annotations

import os
import tempfile


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a kill) sees the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk (``fsync``) and then
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows). A killed writer leaves at
    most a ``.<name>.*.tmp`` file behind, which nothing reads.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def iter_json_objects(path: str | os.PathLike, what: str, error: type = ValueError):
    """``(line_no, where, obj)`` for each non-blank line of a JSON-lines file, in order.

    ``where`` is ``"<path>, line <n>"`` for messages. A line that is not JSON, or not a JSON object,
    raises ``error`` naming the file, the line and ``what`` each line should hold.
    """
    from json import JSONDecodeError, loads

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")  # the line ending is not part of the object (nor of error columns)
            if not line.strip():
                continue
            where = f"{os.fspath(path)}, line {n}"
            try:
                obj = loads(line)
            except JSONDecodeError as err:
                at = "at the end of the line" if err.pos >= len(line) else f"at column {err.pos + 1}"
                raise error(f"{where}: not valid JSON ({err.msg} {at}); expected {what}") from None
            if not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object ({what}), got {type(obj).__name__}")
            yield n, where, obj
