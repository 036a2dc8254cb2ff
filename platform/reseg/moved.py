"""Modules that moved in reseg v2: importing an old path fails with the new one in the message.

A plain ``ModuleNotFoundError: No module named 'reseg.datasets.synthetic'`` would leave a user to
search for the new home; :class:`MovedModuleFinder` (installed on ``sys.meta_path`` by
``import reseg``) answers only for the names in :data:`MOVED_MODULES`, after every regular finder
has failed, so it never shadows a real module. The same list is in ``docs/changelog.md``.
"""
from __future__ import annotations

import importlib.abc
import sys

#: Old module -> where its code lives now.
MOVED_MODULES: dict[str, str] = {
    "reseg.datasets.synthetic": "reseg.datasets.synthref (generate_synthref, SynthRefConfig; "
                                "code in reseg.datasets.synthref.generator and .items)",
    "reseg.datasets.synth_common": "reseg.datasets.synthref.items",
    "reseg.datasets.synth_v2": "reseg.datasets.synthref.items",
    "reseg.datasets.synth_scene": "reseg.datasets.synthref.scene",
    "reseg.datasets.synth_language": "reseg.datasets.synthref.language",
    "reseg.datasets.synth_groups": "reseg.datasets.synthref.group_language",
    "reseg.datasets.synth_pool": "reseg.datasets.synthref.candidate_pools",
    "reseg.datasets.synth_writers": "reseg.datasets.synthref.writers",
    "reseg.datasets.synth_vqa": "reseg.datasets.synthref.vqa (SynthVQADataset keeps its registered name)",
}


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Raises ``ModuleNotFoundError`` naming the new module for an old one of :data:`MOVED_MODULES`."""

    def find_spec(self, fullname, path, target=None):
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        raise ModuleNotFoundError(f"{fullname} moved in reseg v2 to {new} (docs/changelog.md)", name=fullname)


def install() -> None:
    """Append the finder to ``sys.meta_path`` (last: regular modules are always found first); idempotent."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
