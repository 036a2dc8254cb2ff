#!/usr/bin/env python
"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out-metrics metrics.json]``.

The code and its documentation are in :mod:`reseg.tools.test`; this file runs it.
"""
import sys

from reseg.tools.test import main

if __name__ == "__main__":
    sys.exit(main())
