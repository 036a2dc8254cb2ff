"""reseg: reasoning segmentation with large multimodal models, one core and methods as plugins."""

__version__ = "0.1.0"

from reseg import moved as _moved

_moved.install()  # an import of a module moved in v2 names its new path

#: Names importable from ``reseg`` itself, loaded on first use so that ``import reseg`` stays cheap.
_LAZY = {"load_model": "reseg.api", "Segmenter": "reseg.api", "SegmentationResult": "reseg.api",
         "load_plugins": "reseg.plugins"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reseg' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
