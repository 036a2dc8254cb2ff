"""Runner glue: hooks, checkpoint handling, visualisation."""
from .checkpoint import PlainCheckpointHook, load_checkpoint_file
from .visualization import SegVisualizationHook, overlay_panel

__all__ = ["PlainCheckpointHook", "SegVisualizationHook", "load_checkpoint_file", "overlay_panel"]
