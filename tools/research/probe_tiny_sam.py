#!/usr/bin/env python
"""Can the tiny SAM of a config follow a query whose encoding is perfect? An oracle probe.

The code and its documentation are in :mod:`reseg.research.probe_tiny_sam`; this file runs it.
"""
import sys

from reseg.research.probe_tiny_sam import main

if __name__ == "__main__":
    sys.exit(main())
