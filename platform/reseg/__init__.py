"""reseg: reasoning segmentation with large multimodal models, one core and methods as plugins."""

__version__ = "0.1.0"
