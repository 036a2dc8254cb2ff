"""Registry lookups: types build by name or by class, and unknown names explain themselves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

import reseg.plugins
from reseg.plugins import FailedPlugin
from reseg.registry import HEADS, REGISTRIES, SCOPE, Registry, UnknownTypeError


class RegistryProbeHead:
    """A head-like class registered by the tests of this module only."""

    def __init__(self, width: int = 1) -> None:
        self.width = width


@pytest.fixture
def probe_head() -> Iterator[type[RegistryProbeHead]]:
    """``RegistryProbeHead`` registered in ``HEADS`` for one test."""
    HEADS.register_module(module=RegistryProbeHead)
    yield RegistryProbeHead
    HEADS.module_dict.pop("RegistryProbeHead", None)


def _message(excinfo: pytest.ExceptionInfo[UnknownTypeError]) -> str:
    return str(excinfo.value)


def test_every_kind_has_a_reseg_registry() -> None:
    for kind, registry in REGISTRIES.items():
        assert isinstance(registry, Registry), kind
        assert registry.scope == SCOPE


def test_registered_class_builds_by_name(probe_head: type[RegistryProbeHead]) -> None:
    head = HEADS.build(dict(type="RegistryProbeHead", width=4))
    assert isinstance(head, probe_head)
    assert head.width == 4


def test_registered_class_builds_by_type_class(probe_head: type[RegistryProbeHead]) -> None:
    head = HEADS.build(dict(type=probe_head, width=2))
    assert isinstance(head, probe_head)
    assert head.width == 2


def test_in_is_true_for_a_registered_name(probe_head: type[RegistryProbeHead]) -> None:
    assert "RegistryProbeHead" in HEADS
    assert HEADS.get("RegistryProbeHead") is probe_head


def test_in_is_false_for_an_unknown_name() -> None:
    assert "NoSuchHead" not in HEADS


def test_a_bare_name_is_never_resolved_as_a_module() -> None:
    # mmengine's fallback would import `json` and answer with the module.
    assert "json" not in HEADS
    with pytest.raises(UnknownTypeError):
        HEADS.get("json")


def test_unknown_type_error_is_a_key_error_with_a_readable_message() -> None:
    with pytest.raises(KeyError) as excinfo:
        HEADS.build(dict(type="lisaa"))
    assert isinstance(excinfo.value, UnknownTypeError)
    assert not str(excinfo.value).startswith(("'", '"'))  # not KeyError's repr quoting


def test_unknown_type_message_names_kind_key_and_registered_names(
    probe_head: type[RegistryProbeHead],
) -> None:
    with pytest.raises(UnknownTypeError) as excinfo:
        HEADS.build(dict(type="lisaa"))
    msg = _message(excinfo)
    assert "Unknown head type 'lisaa'" in msg
    assert "reseg::head" in msg
    assert "RegistryProbeHead" in msg.split("Registered head types in reseg:")[1]


def test_unknown_type_message_suggests_the_closest_name(
    probe_head: type[RegistryProbeHead],
) -> None:
    with pytest.raises(UnknownTypeError) as excinfo:
        HEADS.build(dict(type="RegistryProbeHaed"))
    assert "Did you mean 'RegistryProbeHead'?" in _message(excinfo)


def test_closest_name_ignores_case(probe_head: type[RegistryProbeHead]) -> None:
    with pytest.raises(UnknownTypeError) as excinfo:
        HEADS.get("registryprobehead")
    assert "Did you mean 'RegistryProbeHead'?" in _message(excinfo)


def test_unknown_type_message_lists_failed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = FailedPlugin(
        name="ghost",
        value="ghost_pkg.plugin",
        dist="ghost-pkg",
        version="1.2",
        stage="import",
        error="ModuleNotFoundError: No module named 'ghost_dep'",
    )
    monkeypatch.setattr(reseg.plugins, "failed_plugins", lambda: [ghost])
    with pytest.raises(UnknownTypeError) as excinfo:
        HEADS.build(dict(type="GhostHead"))
    msg = _message(excinfo)
    assert "failed to load" in msg
    assert "ghost (ghost_pkg.plugin, ghost-pkg 1.2) failed on import" in msg
    assert "ModuleNotFoundError: No module named 'ghost_dep'" in msg
    assert "reseg plugins" in msg


def test_unknown_scoped_name_raises_unknown_type_error() -> None:
    with pytest.raises(UnknownTypeError) as excinfo:
        HEADS.get("reseg.NoSuchHead")
    assert "'reseg.NoSuchHead'" in _message(excinfo)


#: In a fresh interpreter: look ``LISAHead`` (a plugin's head) up before the plugin host is imported,
#: after it is imported but before it loaded anything, and after ``load_plugins()``.
LOOKUP_BEFORE_LOADING = textwrap.dedent(
    """
    import json, sys
    from reseg.registry import HEADS, UnknownTypeError

    def lookup():
        try:
            return HEADS.get("LISAHead").__name__
        except UnknownTypeError as exc:
            return str(exc)

    out = dict(host_imported_by_registry="reseg.plugins" in sys.modules, never_imported=lookup())
    import reseg.plugins
    out["imported_not_loaded"] = lookup()
    reseg.plugins.load_plugins()
    out["loaded"] = lookup()
    print(json.dumps(out))
    """
)


def test_a_lookup_before_plugins_are_loaded_says_so_and_what_to_call() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESEG_")}
    proc = subprocess.run([sys.executable, "-c", LOOKUP_BEFORE_LOADING], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["host_imported_by_registry"] is False  # the registry never imports reseg.plugins
    for when in ("never_imported", "imported_not_loaded"):
        assert "Unknown head type 'LISAHead'" in out[when], when
        assert "Plugins have not been loaded in this process" in out[when], when
        assert "call reseg.plugins.load_plugins() once" in out[when], when
    assert out["loaded"] == "LISAHead"
