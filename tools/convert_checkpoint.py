#!/usr/bin/env python
"""Convert an official LISA / READ / AnchorSeg checkpoint into a reseg checkpoint.

The code and its documentation are in :mod:`reseg.tools.convert_checkpoint`; this file runs it.
"""
import sys

from reseg.tools.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
