"""The code of reseg's command-line tools, one module per ``tools/<name>.py`` script.

Each module has ``main(argv=None) -> int`` (and its ``parse_args``); ``tools/<name>.py`` only calls
it, so ``python tools/train.py ...`` and ``reseg.tools.train.main([...])`` run the same code, and
tests and other code import a tool's functions without touching ``sys.path``. Research scripts
(``tools/research/``) have theirs in :mod:`reseg.research`.
"""
