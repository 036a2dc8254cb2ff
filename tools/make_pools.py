#!/usr/bin/env python
"""Precompute candidate pools for a dataset: one proposer run per image, written as a pool file.

The code and its documentation are in :mod:`reseg.tools.make_pools`; this file runs it.
"""
import sys

from reseg.tools.make_pools import main

if __name__ == "__main__":
    sys.exit(main())
