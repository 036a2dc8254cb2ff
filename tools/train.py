#!/usr/bin/env python
"""Train any reseg model: ``python tools/train.py CONFIG [--work-dir D] [--cfg-options k=v ...] [--resume]``.

The code and its documentation are in :mod:`reseg.tools.train`; this file runs it.
"""
import sys

from reseg.tools.train import main

if __name__ == "__main__":
    sys.exit(main())
