"""Runner glue: hooks, checkpoint handling, visualisation."""
from .checkpoint import PlainCheckpointHook, SafeCheckpointHook, latest_checkpoint, load_checkpoint_file
from .determinism import StepSeedHook, write_run_report
from .visualization import SegVisualizationHook, overlay_panel

__all__ = [
    "PlainCheckpointHook",
    "SafeCheckpointHook",
    "SegVisualizationHook",
    "StepSeedHook",
    "latest_checkpoint",
    "load_checkpoint_file",
    "overlay_panel",
    "write_run_report",
]
