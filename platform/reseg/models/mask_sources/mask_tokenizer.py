"""Deprecated: moved to :mod:`reseg.models.mask_sources.pool.tokenizer` (see docs/changelog.md, "Moved in v2")."""
import warnings

from reseg.models.mask_sources.pool.tokenizer import *  # noqa: F403
from reseg.models.mask_sources.pool.tokenizer import __all__  # noqa: F401

warnings.warn("reseg.models.mask_sources.mask_tokenizer moved to reseg.models.mask_sources.pool.tokenizer; "
              "import from there (or MaskEncoder from reseg.plugin_api)", DeprecationWarning, stacklevel=2)
