#!/usr/bin/env python
"""Plot a run's training curves: ``python tools/plot_curves.py WORK_DIR [--keys loss seg/gIoU] [--out curves.png]``.

The code and its documentation are in :mod:`reseg.tools.plot_curves`; this file runs it.
"""
import sys

from reseg.tools.plot_curves import main

if __name__ == "__main__":
    sys.exit(main())
