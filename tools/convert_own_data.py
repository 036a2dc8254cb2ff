#!/usr/bin/env python
"""Convert your own images, masks and queries (a JSON-lines file) to the gRefCOCO layout reseg reads.

The code and its documentation are in :mod:`reseg.tools.convert_own_data`; this file runs it.
"""
import sys

from reseg.tools.convert_own_data import main

if __name__ == "__main__":
    sys.exit(main())
