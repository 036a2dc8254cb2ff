"""``tools/convert_checkpoint.py``: import an official checkpoint (LISA, READ, AnchorSeg, or any plugin's
method) into reseg's module names. The code lives with the converters it drives, in :mod:`reseg.convert`
(``--from NAME`` names a converter a plugin registered); this module is the tool's entry point."""
from reseg.convert import main, parse_args

__all__ = ["main", "parse_args"]
