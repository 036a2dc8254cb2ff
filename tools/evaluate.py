#!/usr/bin/env python
"""Re-score a prediction dump offline: ``python tools/evaluate.py preds.jsonl --config CONFIG``.

The code and its documentation are in :mod:`reseg.tools.evaluate`; this file runs it.
"""
import sys

from reseg.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
