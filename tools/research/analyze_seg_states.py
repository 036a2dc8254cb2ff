#!/usr/bin/env python
"""Diagnose a [SEG]-family model: do its mask-token states depend on the query? Is its SAM good?

The code and its documentation are in :mod:`reseg.research.analyze_seg_states`; this file runs it.
"""
import sys

from reseg.research.analyze_seg_states import main

if __name__ == "__main__":
    sys.exit(main())
