"""Entry point of the built-in READ plugin.

Registered in reseg's own ``setup.cfg`` under the ``reseg.plugins`` group, exactly as a third-party
plugin registers itself: ``read = reseg_read.plugin``.
"""
from reseg.plugin_api import hookimpl


@hookimpl
def register_heads(register):
    from .head import READHead

    register(READHead)


@hookimpl
def register_checkpoint_converters(register):
    from .convert import READConverter

    register(READConverter, name="read")
