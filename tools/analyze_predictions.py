#!/usr/bin/env python
"""How a RES model's answers depend on the query, from a ``tools/test.py --dump-predictions`` file.

The code and its documentation are in :mod:`reseg.tools.analyze_predictions`; this file runs it.
"""
import sys

from reseg.tools.analyze_predictions import main

if __name__ == "__main__":
    sys.exit(main())
