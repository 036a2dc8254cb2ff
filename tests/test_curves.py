"""Training curves: mmengine's scalars.json read across a resumed run, and plotted."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def write_run(work: Path, stamp: str, lines: list[dict]) -> None:
    d = work / stamp / "vis_data"
    d.mkdir(parents=True)
    (d / "scalars.json").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture()
def resumed_run(tmp_path):
    work = tmp_path / "work"
    write_run(work, "20260101_000000", [
        {"lr": 1e-3, "loss": 2.0, "loss_text": 1.0, "iter": 20, "step": 20},
        {"lr": 1e-3, "loss": 1.5, "loss_text": 0.8, "iter": 40, "step": 40},
        {"seg/gIoU": 0.10, "seg/cIoU": 0.12, "step": 40},
    ])
    write_run(work, "20260101_010000", [  # resumed from iteration 40: re-logs 40, then continues
        {"lr": 5e-4, "loss": 1.4, "loss_text": 0.7, "iter": 40, "step": 40},
        {"lr": 5e-4, "loss": 1.0, "loss_text": 0.5, "iter": 60, "step": 60},
        {"seg/gIoU": 0.30, "seg/cIoU": 0.25, "step": 60},
    ])
    return work


def test_a_resumed_run_reads_as_one_curve(resumed_run):
    from reseg.engine.curves import find_scalars, read_scalars, select_keys

    files = find_scalars(str(resumed_run))
    assert [Path(f).parts[-3] for f in files] == ["20260101_000000", "20260101_010000"]
    s = read_scalars(files)
    assert s["loss"] == [(20, 2.0), (40, 1.4), (60, 1.0)]  # the later run's value at step 40 wins
    assert s["seg/gIoU"] == [(40, 0.10), (60, 0.30)]
    assert select_keys(list(s), ["loss", "seg/gIoU"]) == ["loss", "loss_text", "seg/gIoU"]


def test_plot_curves_cli_writes_a_png_with_one_panel_per_curve(resumed_run, capsys):
    import cv2

    from reseg.tools import plot_curves

    assert plot_curves.main([str(resumed_run)]) == 0
    assert "(4 curves from 2 log file(s))" in capsys.readouterr().out
    png = cv2.imread(str(resumed_run / "curves.png"))
    assert png is not None and png.shape[1] > png.shape[0]  # 3 columns x 2 rows of panels
    out = resumed_run / "one.png"
    assert plot_curves.main([str(resumed_run), "--keys", "seg/gIoU", "--out", str(out)]) == 0
    one = cv2.imread(str(out))
    assert one.shape[1] < png.shape[1]  # a single panel is narrower than the grid


def test_plot_curves_errors_name_what_is_wrong(tmp_path, resumed_run, capsys):
    from reseg.engine.curves import read_scalars
    from reseg.tools import plot_curves

    assert plot_curves.main([str(tmp_path / "nowhere")]) == 1
    assert "not a work dir or scalars.json" in capsys.readouterr().err
    assert plot_curves.main([str(resumed_run), "--keys", "acc"]) == 1
    assert "no logged key matches ['acc']" in capsys.readouterr().err
    bad = tmp_path / "scalars.json"
    bad.write_text('{"loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"scalars.json, line 1: no integer 'step'"):
        read_scalars([str(bad)])
