"""Entry point of the built-in LISA plugin.

Registered in reseg's own ``setup.cfg`` under the ``reseg.plugins`` group, exactly as a third-party
plugin registers itself: ``lisa = reseg_lisa.plugin``.
"""
from reseg.plugin_api import hookimpl


@hookimpl
def register_heads(register):
    from .head import LISAHead

    register(LISAHead)


@hookimpl
def register_checkpoint_converters(register):
    from .convert import LISAConverter

    register(LISAConverter, name="lisa")
