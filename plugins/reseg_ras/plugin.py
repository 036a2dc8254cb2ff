"""Entry point of the built-in RAS plugin.

Registered in reseg's own ``setup.cfg`` under the ``reseg.plugins`` group, exactly as a third-party
plugin registers itself: ``ras = reseg_ras.plugin``.
"""
from reseg.plugin_api import hookimpl


@hookimpl
def register_heads(register):
    from .head import RASARHead, RASHead

    register(RASHead)
    register(RASARHead)
