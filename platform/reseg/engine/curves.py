"""Training curves from an mmengine run: read ``vis_data/scalars.json`` and plot it.

mmengine's ``LocalVisBackend`` writes one JSON object per logging event to
``<work_dir>/<timestamp>/vis_data/scalars.json``: the training lines carry ``lr``, ``loss*``,
``grad_norm``, ``time``... and ``step`` (the iteration); the validation lines carry the metrics
(``seg/gIoU``...) and ``step`` (the iteration they were computed at). A resumed run writes a second
timestamped folder; :func:`find_scalars` returns them all and :func:`read_scalars` merges them in
order (a later run's value at the same step replaces the earlier one).
"""
from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence

#: Keys plotted by default: the training losses and the headline metrics.
DEFAULT_PATTERNS = ("loss", "seg/gIoU", "seg/cIoU")


def find_scalars(path: str) -> list[str]:
    """The ``scalars.json`` files of a work dir (sorted by run timestamp), or ``[path]`` for a file."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"not a work dir or scalars.json file: {path!r}")
    found = sorted(glob.glob(os.path.join(path, "*", "vis_data", "scalars.json")))
    if not found:
        raise FileNotFoundError(f"{path!r} holds no <timestamp>/vis_data/scalars.json (was the run logged "
                                "with mmengine's LocalVisBackend?)")
    return found


def read_scalars(paths: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``key -> [(step, value), ...]`` sorted by step, over every numeric key of every line."""
    from reseg.fileio import iter_json_objects

    series: dict[str, dict[int, float]] = {}
    for path in paths:
        for _, where, rec in iter_json_objects(path, "an mmengine scalars record"):
            step = rec.get("step", rec.get("iter"))
            if isinstance(step, bool) or not isinstance(step, int):
                raise ValueError(f"{where}: no integer 'step' (or 'iter') field")
            for key, value in rec.items():
                if key in ("step", "iter", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                series.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in series.items()}


def select_keys(keys: Sequence[str], patterns: Sequence[str] = DEFAULT_PATTERNS) -> list[str]:
    """Keys equal to a pattern or starting with it (``loss`` -> ``loss``, ``loss_text``, ...), in
    the patterns' order."""
    out: list[str] = []
    for p in patterns:
        for k in sorted(keys):
            if (k == p or k.startswith(p)) and k not in out:
                out.append(k)
    return out


def plot_curves(series: dict[str, list[tuple[int, float]]], keys: Sequence[str], out: str,
                title: str | None = None) -> str:
    """One panel per key (value against iteration) in a grid, saved to ``out`` (PNG); returns ``out``."""
    missing = [k for k in keys if k not in series]
    if missing or not keys:
        raise KeyError(f"no such curve(s) {missing or list(keys)}; the log has {sorted(series)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        steps, values = zip(*series[key])
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
