#!/usr/bin/env python
"""Export a trained model: ``python tools/export.py CONFIG CHECKPOINT OUT_DIR [--cfg-options ...] [--overwrite]``.

The code and its documentation are in :mod:`reseg.tools.export`; this file runs it.
"""
import sys

from reseg.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
