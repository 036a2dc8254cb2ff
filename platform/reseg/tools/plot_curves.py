"""Plot a run's training curves: ``python tools/plot_curves.py WORK_DIR [--keys loss seg/gIoU] [--out curves.png]``.

Reads every ``<timestamp>/vis_data/scalars.json`` of WORK_DIR (a resumed run continues the curve) or
one ``scalars.json`` file. ``--keys`` takes exact keys or prefixes (``loss`` = every loss term);
default: the losses, ``seg/gIoU`` and ``seg/cIoU``. ``--list`` prints the keys the log has.
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("path", help="a work dir, or one scalars.json")
    p.add_argument("--keys", nargs="+", default=None, help="keys or key prefixes to plot")
    p.add_argument("--out", default=None, help="PNG to write (default: WORK_DIR/curves.png)")
    p.add_argument("--list", action="store_true", help="print the logged keys and exit")
    args = p.parse_args(argv)
    from reseg.engine.curves import DEFAULT_PATTERNS, find_scalars, plot_curves, read_scalars, select_keys

    try:
        files = find_scalars(args.path)
        series = read_scalars(files)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.list:
        for k in sorted(series):
            print(f"{k}\t{len(series[k])} points")
        return 0
    keys = select_keys(list(series), args.keys or DEFAULT_PATTERNS)
    if not keys:
        print(f"error: no logged key matches {args.keys or list(DEFAULT_PATTERNS)}; the log has {sorted(series)}",
              file=sys.stderr)
        return 1
    base = args.path if os.path.isdir(args.path) else os.path.dirname(os.path.abspath(args.path))
    out = args.out or os.path.join(base, "curves.png")
    plot_curves(series, keys, out, title=os.path.basename(os.path.normpath(base)))
    print(f"wrote {out} ({len(keys)} curves from {len(files)} log file(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
