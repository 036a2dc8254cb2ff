"""The plugin contract: hooks, the plugin API module, entry-point loading and `reseg plugins`.

The third-party tests install two real, separate distributions from ``tests/fixtures/`` into a
temporary target directory (never into the shared virtualenv) and run fresh interpreters with
``PYTHONPATH`` pointing at it, exactly as a user's environment with extra plugins installed:

- ``reseg-thirdparty-head`` 0.3.1: entry point ``myhead``, registers the head ``ThirdPartyHead``;
- ``reseg-broken-plugin`` 0.0.1: ``broken`` raises on import, ``halfway`` registers a dataset and
  then its hook raises.

Every scenario is a separate process (plugins load once per process); they run concurrently.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
import pytest

import reseg.hookspecs
import reseg.plugin_api
from reseg import plugins
from reseg.plugins import PluginLoadError
from reseg.registry import HEADS, REGISTRIES

FIXTURES = Path(__file__).parent / "fixtures"
THIRD_PARTY_DISTS = ("thirdparty_head", "broken_plugin")
#: How messages name the fixture plugin that raises on import.
BROKEN_ENTRY = "broken (reseg_broken_plugin.plugin, reseg-broken-plugin 0.0.1)"


# --------------------------------------------------------------------------------------------
# In-process: the hook specs and the plugin API module


def test_every_registry_kind_has_a_register_hook() -> None:
    assert set(reseg.hookspecs.REGISTER_HOOKS.values()) == set(REGISTRIES)


def test_register_hooks_are_specs_of_the_plugin_manager() -> None:
    pm = plugins.get_plugin_manager()
    for hook_name in reseg.hookspecs.REGISTER_HOOKS:
        caller = getattr(pm.hook, hook_name)
        assert caller.has_spec(), hook_name
        assert caller.spec.argnames == ("register",), hook_name
        assert caller.spec.function.__doc__, f"{hook_name} needs a docstring (it is the API doc)"


def test_plugin_api_exports_marker_version_and_registries() -> None:
    assert isinstance(reseg.plugin_api.hookimpl, pluggy.HookimplMarker)
    assert reseg.plugin_api.hookimpl.project_name == "reseg"
    assert reseg.plugin_api.PLUGIN_API_VERSION == (2, 0)  # 2: the head contract v2
    assert reseg.plugin_api.HEADS is HEADS
    for name in reseg.plugin_api.__all__:
        assert getattr(reseg.plugin_api, name) is not None, name


def test_plugin_api_exports_the_head_base_class() -> None:
    from reseg.models.head import BaseHead

    assert reseg.plugin_api.BaseHead is BaseHead


@pytest.mark.skipif(
    any(os.environ.get(v) is not None for v in (plugins.ALLOW_ENV, plugins.BLOCK_ENV)),
    reason="plugin selection overridden by the environment",
)
def test_builtin_lisa_plugin_loads_through_its_entry_point() -> None:
    lisa = {p.name: p for p in plugins.loaded_plugins()}["lisa"]
    assert lisa.dist == "reseg"
    assert lisa.version == importlib.metadata.version("reseg")
    assert lisa.module == "reseg_lisa.plugin"


def test_load_plugins_is_idempotent() -> None:
    first = plugins.loaded_plugins()
    plugins.load_plugins()
    assert plugins.loaded_plugins() == first


# --------------------------------------------------------------------------------------------
# In-process: plugins registered without an entry point (register_plugin)


class InlineHead:
    """Registered by an inline plugin in these tests."""


class InlinePlugin:
    """A plugin object: its hookimpl methods are its hooks."""

    @reseg.plugin_api.hookimpl
    def register_heads(self, register: reseg.plugin_api.RegisterFn) -> None:
        register(InlineHead, name="InlineHeadForTests")


@pytest.fixture
def inline_plugin() -> Iterator[str]:
    """Registers ``InlinePlugin`` as ``inline`` and removes it (and its types) afterwards."""
    plugins.register_plugin(InlinePlugin(), name="inline")
    yield "inline"
    plugins.unregister_plugin("inline")


def test_register_plugin_attributes_registrations(inline_plugin: str) -> None:
    record = {p.name: p for p in plugins.loaded_plugins()}[inline_plugin]
    assert record.registered == {"heads": ["InlineHeadForTests"]}
    assert plugins.registered_by("heads", "InlineHeadForTests") == inline_plugin
    assert HEADS.get("InlineHeadForTests") is InlineHead


def test_unregister_plugin_removes_its_types(inline_plugin: str) -> None:
    plugins.unregister_plugin(inline_plugin)
    assert "InlineHeadForTests" not in HEADS
    assert inline_plugin not in {p.name for p in plugins.loaded_plugins()}


def test_name_clash_between_plugins_names_the_owner(inline_plugin: str) -> None:
    with pytest.raises(PluginLoadError, match=r"already registered \(by plugin 'inline'\)"):
        plugins.register_plugin(InlinePlugin(), name="inline_again")
    plugins.unregister_plugin("inline_again")


def test_misspelled_hook_is_rejected() -> None:
    class Typo:
        @reseg.plugin_api.hookimpl
        def register_head(self, register: Any) -> None:  # missing the "s"
            raise AssertionError("must never be called")

    with pytest.raises(PluginLoadError, match=r"unknown hook.*'register_head'"):
        plugins.register_plugin(Typo(), name="typo")
    assert "typo" not in {p.name for p in plugins.loaded_plugins()}
    assert "typo" not in {f.name for f in plugins.failed_plugins()}


def test_hook_implementation_may_take_fewer_arguments_than_the_spec() -> None:
    calls = []

    class NoArgs:
        @reseg.plugin_api.hookimpl
        def register_heads(self) -> None:
            calls.append("called")

    plugins.register_plugin(NoArgs(), name="noargs")
    plugins.unregister_plugin("noargs")
    assert calls == ["called"]


# --------------------------------------------------------------------------------------------
# Separate distributions, separate processes

#: Run in a fresh interpreter with everything installed: thread-safe loading, building the
#: third-party head, the UnknownTypeError message and the text CLI. Prints one JSON line.
PROBE = textwrap.dedent(
    """
    import contextlib, io, json, threading
    from reseg import plugins

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        [p.name for p in plugins.loaded_plugins()])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    from reseg.plugin_api import HEADS, BaseHead, UnknownTypeError
    head = HEADS.build(dict(type="ThirdPartyHead", exist_weight=0.25))
    try:
        HEADS.build(dict(type="ThirdPartyHeed"))
        error = None
    except UnknownTypeError as exc:
        error = str(exc)

    from reseg.cli import main
    def cli(*argv):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    print(json.dumps(dict(
        thread_results=results,
        head_class=type(head).__module__ + "." + type(head).__name__,
        head_is_base_head=isinstance(head, BaseHead),
        exist_weight=head.exist_weight,
        error=error,
        plugins_text=cli("plugins"),
        plugins_strict=cli("plugins", "--strict"),
        list_heads=cli("list", "heads", "*party*"),
    )))
    """
)

#: Loads the plugins, looks up the head type named by its argument and prints the unknown-type
#: message (JSON null when the type is found).
UNKNOWN = textwrap.dedent(
    """
    import json, sys
    import reseg
    from reseg.plugin_api import HEADS, UnknownTypeError

    reseg.load_plugins()
    try:
        HEADS.get(sys.argv[1])
        print(json.dumps(None))
    except UnknownTypeError as exc:
        print(json.dumps(str(exc)))
    """
)

#: name -> (argv after the interpreter, extra environment)
SCENARIOS: dict[str, tuple[list[str], dict[str, str]]] = {
    "all": (["-m", "reseg.cli", "plugins", "--json"], {}),
    "probe": (["-c", PROBE], {}),
    "allow": (
        ["-m", "reseg.cli", "plugins", "--json"],
        {"RESEG_PLUGINS": "broken,halfway,not_installed"},
    ),
    "allow_none": (["-m", "reseg.cli", "plugins", "--json", "--strict"], {"RESEG_PLUGINS": ""}),
    "block": (
        ["-m", "reseg.cli", "plugins", "--json", "--strict"],
        {"RESEG_DISABLED_PLUGINS": " lisa , read , anchorseg , ras , myhead "},
    ),
    "block_wins": (
        ["-m", "reseg.cli", "plugins", "--json"],
        {"RESEG_PLUGINS": "broken", "RESEG_DISABLED_PLUGINS": "broken"},
    ),
    "unknown_not_installed": (["-c", UNKNOWN, "MeanSegHead"], {"RESEG_PLUGINS": "meanseg"}),
    "unknown_blocked": (["-c", UNKNOWN, "LISAHead"], {"RESEG_DISABLED_PLUGINS": "lisa"}),
}
#: Scenarios that print logs before their one line of JSON.
LAST_LINE_SCENARIOS = {"probe", "unknown_not_installed", "unknown_blocked"}


def _install_fixtures(root: Path) -> Path:
    """Copy the fixture distributions to ``root`` and pip-install them into ``root/site``."""
    sources = []
    for name in THIRD_PARTY_DISTS:
        shutil.copytree(FIXTURES / name, root / name)
        sources.append(str(root / name))
    site = root / "site"
    cmd = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--quiet", "--target", str(site), *sources,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=root)
    if proc.returncode != 0:
        pytest.fail(f"installing the fixture plugins failed:\n{proc.stdout}\n{proc.stderr}")
    return site


def _env(site: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESEG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Runs:
    """Results of every scenario of :data:`SCENARIOS`, and where the fixtures were installed."""

    site: Path
    procs: dict[str, subprocess.CompletedProcess]

    def json(self, name: str) -> dict[str, Any]:
        """The scenario's JSON output (the last stdout line for the probe); it must exit 0."""
        proc = self.procs[name]
        assert proc.returncode == 0, f"scenario {name} exited {proc.returncode}:\n{proc.stderr}"
        return json.loads(proc.stdout.strip().splitlines()[-1] if name in LAST_LINE_SCENARIOS else proc.stdout)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Install the fixture plugins once, then run every scenario (concurrently) once."""
    root = tmp_path_factory.mktemp("thirdparty")
    site = _install_fixtures(root)

    def run(scenario: tuple[list[str], dict[str, str]]) -> subprocess.CompletedProcess:
        argv, extra = scenario
        return subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=180,
            cwd=root, env=_env(site, extra),
        )  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        procs = dict(zip(SCENARIOS, pool.map(run, SCENARIOS.values())))
    return Runs(site=site, procs=procs)


def _by_name(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in records}


def test_thirdparty_plugin_is_listed_with_its_distribution_and_registrations(runs: Runs) -> None:
    myhead = _by_name(runs.json("all")["plugins"])["myhead"]
    assert myhead["dist"] == "reseg-thirdparty-head"
    assert myhead["version"] == "0.3.1"
    assert myhead["module"] == "reseg_thirdparty_head.plugin"
    assert myhead["registered"] == {"heads": ["ThirdPartyHead"]}
    assert Path(myhead["path"]).is_relative_to(runs.site)


def test_builtin_and_thirdparty_plugins_load_through_the_same_path(runs: Runs) -> None:
    loaded = _by_name(runs.json("all")["plugins"])
    assert loaded["lisa"]["dist"] == "reseg"
    assert loaded["lisa"]["module"] == "reseg_lisa.plugin"


def test_plugin_raising_on_import_is_reported_and_the_others_load(runs: Runs) -> None:
    report = runs.json("all")
    broken = _by_name(report["failed"])["broken"]
    assert broken["stage"] == "import"
    assert broken["value"] == "reseg_broken_plugin.plugin"
    assert broken["dist"] == "reseg-broken-plugin"
    assert broken["error"] == "ModuleNotFoundError: No module named 'reseg_missing_dependency'"
    assert {"lisa", "myhead"} <= set(_by_name(report["plugins"]))
    assert "broken" not in _by_name(report["plugins"])


def test_plugin_whose_hook_raises_is_reported_and_keeps_what_it_registered(runs: Runs) -> None:
    report = runs.json("all")
    halfway = _by_name(report["failed"])["halfway"]
    assert halfway["stage"] == "register_datasets"
    assert halfway["error"] == "RuntimeError: halfway plugin gave up after one registration"
    assert _by_name(report["plugins"])["halfway"]["registered"] == {"datasets": ["HalfwayDataset"]}


def test_plugin_failures_are_logged_with_entry_point_and_error(runs: Runs) -> None:
    stderr = runs.procs["all"].stderr
    assert "'broken' (entry point broken = reseg_broken_plugin.plugin" in stderr
    assert "ModuleNotFoundError: No module named 'reseg_missing_dependency'" in stderr


def test_loading_from_several_threads_at_once_loads_once(runs: Runs) -> None:
    results = runs.json("probe")["thread_results"]
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    assert {"lisa", "myhead", "halfway"} <= set(results[0])


def test_thirdparty_head_builds_by_name(runs: Runs) -> None:
    probe = runs.json("probe")
    assert probe["head_class"] == "reseg_thirdparty_head.head.ThirdPartyHead"
    assert probe["head_is_base_head"] is True
    assert probe["exist_weight"] == 0.25


def test_unknown_type_error_reports_closest_name_and_failed_plugin(runs: Runs) -> None:
    error = runs.json("probe")["error"]
    assert "Unknown head type 'ThirdPartyHeed'" in error
    assert "Did you mean 'ThirdPartyHead'?" in error
    assert f"{BROKEN_ENTRY} failed on import" in error
    assert "ModuleNotFoundError: No module named 'reseg_missing_dependency'" in error


def test_plugins_table_shows_plugins_and_failures_and_exits_0(runs: Runs) -> None:
    code, text = runs.json("probe")["plugins_text"]
    assert code == 0
    row = next(line for line in text.splitlines() if line.startswith("myhead "))
    assert row.split()[:4] == [
        "myhead", "reseg-thirdparty-head", "0.3.1", "reseg_thirdparty_head.plugin"
    ]
    assert row.endswith("heads: ThirdPartyHead")
    failures = text.split("FAILED plugins (2)")[1]
    assert f"{BROKEN_ENTRY} failed on import" in failures
    assert "halfway" in failures


def test_plugins_strict_exits_1_when_a_plugin_failed(runs: Runs) -> None:
    code, _ = runs.json("probe")["plugins_strict"]
    assert code == 1


def test_list_filters_names_with_a_pattern_and_shows_the_provider(runs: Runs) -> None:
    code, text = runs.json("probe")["list_heads"]
    assert code == 0
    assert text.splitlines() == ["heads (1):", "  ThirdPartyHead  plugin myhead"]


def test_allow_list_loads_only_the_named_plugins(runs: Runs) -> None:
    report = runs.json("allow")
    assert [p["name"] for p in report["plugins"]] == ["halfway"]
    assert sorted(f["name"] for f in report["failed"]) == ["broken", "halfway"]
    skipped = _by_name(report["skipped"])
    assert set(skipped) == {"lisa", "read", "anchorseg", "ras", "myhead"}  # every installed entry point not named
    assert skipped["myhead"]["reason"] == "not in RESEG_PLUGINS"


def test_allow_list_warns_about_names_that_are_not_installed(runs: Runs) -> None:
    assert "not_installed" in runs.procs["allow"].stderr


def test_empty_allow_list_loads_no_plugin(runs: Runs) -> None:
    report = runs.json("allow_none")  # run with --strict: exit 0, nothing failed
    assert report["plugins"] == [] and report["failed"] == []
    assert {"lisa", "read", "anchorseg", "ras", "myhead", "broken", "halfway"} == set(_by_name(report["skipped"]))


def test_block_list_skips_the_named_plugins(runs: Runs) -> None:
    proc = runs.procs["block"]
    assert proc.returncode == 1  # --strict, and broken/halfway still fail
    report = json.loads(proc.stdout)
    assert [p["name"] for p in report["plugins"]] == ["halfway"]
    assert sorted(f["name"] for f in report["failed"]) == ["broken", "halfway"]
    skipped = _by_name(report["skipped"])
    assert set(skipped) == {"lisa", "read", "anchorseg", "ras", "myhead"}
    assert skipped["myhead"]["reason"] == "blocked by RESEG_DISABLED_PLUGINS"


def test_block_list_wins_over_allow_list(runs: Runs) -> None:
    report = runs.json("block_wins")
    assert report["plugins"] == [] and report["failed"] == []
    assert _by_name(report["skipped"])["broken"]["reason"] == "blocked by RESEG_DISABLED_PLUGINS"


def test_unknown_type_names_the_allow_list_and_its_names_that_are_not_installed(runs: Runs) -> None:
    error = runs.json("unknown_not_installed")
    assert "Unknown head type 'MeanSegHead'" in error
    assert "Registered head types in reseg: (none)." in error
    assert ("RESEG_PLUGINS=meanseg names plugins that are not installed: meanseg (installed: anchorseg, "
            "broken, halfway, lisa, myhead, ras, read).") in error
    assert "  - lisa (reseg_lisa.plugin, reseg): not in RESEG_PLUGINS (RESEG_PLUGINS=meanseg)" in error
    assert "probably comes from" not in error  # no skipped plugin's name is part of 'MeanSegHead'


def test_unknown_type_of_a_blocked_plugin_names_the_plugin_and_the_variable(runs: Runs) -> None:
    error = runs.json("unknown_blocked")
    assert "Unknown head type 'LISAHead'" in error
    assert "(by its name, 'LISAHead' probably comes from plugin 'lisa')" in error
    assert ("  - lisa (reseg_lisa.plugin, reseg): blocked by RESEG_DISABLED_PLUGINS "
            "(RESEG_DISABLED_PLUGINS=lisa)") in error
    assert "add its name to RESEG_PLUGINS (or unset it) and take it out of RESEG_DISABLED_PLUGINS" in error
    assert "not installed" not in error


def test_reseg_console_script_runs() -> None:
    script = Path(sys.executable).with_name("reseg")
    if not script.exists():
        pytest.skip("the reseg console script is not installed next to this interpreter")
    env = {**os.environ, "RESEG_PLUGINS": ""}
    proc = subprocess.run([str(script), "list", "heads"], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("heads (")
