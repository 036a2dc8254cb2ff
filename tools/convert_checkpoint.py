#!/usr/bin/env python
"""Convert an official checkpoint (LISA, READ, AnchorSeg, or any plugin's method) into a reseg checkpoint.

The code and its documentation are in :mod:`reseg.convert`; this file runs it.
"""
import sys

from reseg.tools.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
