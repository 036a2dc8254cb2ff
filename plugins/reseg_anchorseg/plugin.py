"""Entry point of the built-in AnchorSeg plugin.

Registered in reseg's own ``setup.cfg`` under the ``reseg.plugins`` group, exactly as a third-party
plugin registers itself: ``anchorseg = reseg_anchorseg.plugin``.
"""
from reseg.plugin_api import hookimpl


@hookimpl
def register_heads(register):
    from .head import AnchorSegHead

    register(AnchorSegHead)


@hookimpl
def register_checkpoint_converters(register):
    from .convert import AnchorSegConverter

    register(AnchorSegConverter, name="anchorseg")
