#!/usr/bin/env python
"""Can the tiny LLM of a config learn to read the question? A copy probe (docs/benchmarks.md).

The code and its documentation are in :mod:`reseg.research.probe_tiny_llm`; this file runs it.
"""
import sys

from reseg.research.probe_tiny_llm import main

if __name__ == "__main__":
    sys.exit(main())
