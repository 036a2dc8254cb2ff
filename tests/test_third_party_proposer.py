"""A proposer from a separate distribution: entry point -> ``register_proposers`` -> ``PROPOSERS``.

``tests/fixtures/thirdparty_proposer`` (distribution ``reseg-thirdparty-proposer`` 0.2.0, entry point
``stripes = reseg_thirdparty_proposer.plugin``) is copied to a temporary directory and installed with
pip into a temporary target directory (never into the shared virtualenv), as in
``tests/test_plugins.py``; fresh interpreters see it through ``PYTHONPATH``, as a user's environment
with the plugin installed would.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "thirdparty_proposer"

#: Builds the plugin's proposer by name in a fresh interpreter and runs it on a 10 x 7 image.
PROBE = textwrap.dedent(
    """
    import json
    import numpy as np
    from reseg.plugin_api import PROPOSERS
    from reseg.plugins import load_plugins, registered_by

    load_plugins()
    proposer = PROPOSERS.build(dict(type="StripeProposer", stripes=3, min_area=0))
    props = proposer.propose(np.zeros((10, 7, 3), np.uint8), {"image_id": 1})
    capped = PROPOSERS.build(dict(type="StripeProposer", stripes=5, max_candidates=2, min_area=0))
    print(json.dumps(dict(
        cls=type(proposer).__module__ + "." + type(proposer).__name__,
        provider=registered_by("proposers", "StripeProposer"),
        shape=list(props.masks.shape),
        dtype=str(props.masks.dtype),
        areas=props.masks.reshape(len(props), -1).sum(1).tolist(),
        rows=[np.flatnonzero(m.any(1)).tolist() for m in props.masks],
        scores=props.scores.tolist(),
        describe=proposer.describe(),
        capped=len(capped.propose(np.zeros((10, 7, 3), np.uint8))),
    )))
    """
)


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESEG_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env


def install_fixture(root: Path) -> Path:
    """Copy the fixture distribution under ``root`` and pip-install it into ``root/site``; returns the site dir."""
    shutil.copytree(FIXTURE, root / "src")
    site = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(site), str(root / "src")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=root)
    if proc.returncode != 0:
        pytest.fail(f"installing the fixture plugin failed:\n{proc.stdout}\n{proc.stderr}")
    return site


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess]:
    """Install the fixture once; run ``reseg plugins --json`` and the probe (concurrently)."""
    root = tmp_path_factory.mktemp("thirdparty_proposer")
    site = install_fixture(root)
    scenarios = {"plugins": ["-m", "reseg.cli", "plugins", "--json"], "probe": ["-c", PROBE]}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=180, cwd=root,
                              env=_env(site))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(scenarios, pool.map(run, scenarios.values())))


def _json(runs: dict[str, subprocess.CompletedProcess], name: str) -> dict:
    proc = runs[name]
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1] if name == "probe" else proc.stdout)


def test_reseg_plugins_lists_the_proposer_plugin_and_what_it_registered(runs) -> None:
    plugins = {p["name"]: p for p in _json(runs, "plugins")["plugins"]}
    stripes = plugins["stripes"]
    assert (stripes["dist"], stripes["version"], stripes["module"]) == (
        "reseg-thirdparty-proposer", "0.2.0", "reseg_thirdparty_proposer.plugin")
    assert stripes["registered"] == {"proposers": ["StripeProposer"]}


def test_the_plugin_proposer_builds_from_a_config_dict_and_returns_masks(runs) -> None:
    probe = _json(runs, "probe")
    assert probe["cls"] == "reseg_thirdparty_proposer.proposer.StripeProposer"
    assert probe["provider"] == "stripes"
    assert probe["shape"] == [3, 10, 7] and probe["dtype"] == "bool"
    # edges round(linspace(0, 10, 4)) = 0, 3, 7, 10: bands of 3, 4 and 3 rows of 7 pixels
    assert probe["rows"] == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert probe["areas"] == [21, 28, 21]
    assert probe["scores"] == pytest.approx([1.0, 1 / 2, 1 / 3])
    assert probe["describe"] == {"type": "StripeProposer", "stripes": 3, "postprocess": {
        "min_area": 0, "nms_iou": 0.8, "max_candidates": 100, "order": "score"}}
    assert probe["capped"] == 2
