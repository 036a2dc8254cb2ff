#!/usr/bin/env python
"""A local web page to try a trained model: ``python tools/demo.py CONFIG CHECKPOINT [--port 7860]``.

The code and its documentation are in :mod:`reseg.tools.demo`; this file runs it.
"""
import sys

from reseg.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
