#!/usr/bin/env python
"""Pre-train the tiny SAM and the tiny vision tower (and, optionally, the whole tiny LLaVA) on the synthetic benchmark.

The code and its documentation are in :mod:`reseg.research.pretrain_tiny`; this file runs it.
"""
import sys

from reseg.research.pretrain_tiny import main

if __name__ == "__main__":
    sys.exit(main())
