#!/usr/bin/env python
"""Write the synthetic benchmark (REFER, ReasonSeg, gRefCOCO, FP-RefCOCO and MaskGroups formats) to a folder.

The code and its documentation are in :mod:`reseg.tools.make_synthref`; this file runs it.
"""
import sys

from reseg.tools.make_synthref import main

if __name__ == "__main__":
    sys.exit(main())
