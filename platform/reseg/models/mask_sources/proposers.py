"""Deprecated: moved to :mod:`reseg.models.mask_sources.pool.proposers` (see docs/changelog.md, "Moved in v2")."""
import warnings

from reseg.models.mask_sources.pool.proposers import *  # noqa: F403
from reseg.models.mask_sources.pool.proposers import __all__  # noqa: F401

warnings.warn("reseg.models.mask_sources.proposers moved to reseg.models.mask_sources.pool.proposers; "
              "import from there (or BaseProposer / Proposals from reseg.plugin_api)",
              DeprecationWarning, stacklevel=2)
