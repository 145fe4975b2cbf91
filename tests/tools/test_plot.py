"""``progan plot``: a run's log drawn as a PNG of the right size, from a hand-written log."""

import json

import numpy as np
import pytest
from PIL import Image

from progan.cli import main
from progan.errors import ProganError
from progan.tools.plot import DPI, PANEL_SIZE, metric_families, plot_run, read_log


def write_log(run, ticks=12, metrics=True):
    run.mkdir(parents=True, exist_ok=True)
    lines = []
    for t in range(1, ticks + 1):
        rec = {
            "kimg": 0.5 * t,
            "tick": t,
            "resolution": 8 if t < 6 else 16,
            "D/loss": 1.0 / t,
            "G/loss": -0.5 + 0.01 * t,
            "images_per_sec": 900.0 - 30 * t,
            "seconds": 4.0 * t,
        }
        if metrics and t % 3 == 0:
            rec.update(
                {
                    "metric/swd/16": 50.0 / t,
                    "metric/swd/8": 20.0 / t,
                    "metric/swd/avg": 35.0 / t,
                    "metric/fid": 300.0 / t,
                    "metric/seconds": 1.2,
                }
            )
        lines.append(json.dumps(rec))
    lines.insert(3, '{"kimg": 1.7, "tick"')  # a line torn by a crash is skipped
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_read_log_and_metric_families(tmp_path):
    run = write_log(tmp_path / "run")
    records = read_log(run)
    assert len(records) == 12 and records[0]["tick"] == 1
    assert metric_families(records) == {
        "swd": ["metric/swd/16", "metric/swd/8", "metric/swd/avg"],
        "fid": ["metric/fid"],
    }
    # the raw generator's values (issue 24) join their family after the EMA generator's
    records[-1].update(
        {"metric-raw/swd/avg": 2.0, "metric-raw/swd/16": 2.5, "metric-raw/seconds": 1}
    )
    assert metric_families(records)["swd"] == [
        "metric/swd/16", "metric/swd/8", "metric/swd/avg",
        "metric-raw/swd/16", "metric-raw/swd/avg",
    ]  # fmt: skip


@pytest.mark.parametrize("metrics, columns", [(True, 4), (False, 2)])
def test_plot_run_size(tmp_path, metrics, columns):
    run = write_log(tmp_path / "run", metrics=metrics)
    out = plot_run(run, tmp_path / "plot.png")
    img = Image.open(out)
    w, h = PANEL_SIZE
    # losses, images/s, then one column per metric family; rows: kimg and minutes
    assert img.size == (round(w * DPI * columns), round(h * DPI * 2))
    assert np.asarray(img.convert("L")).std() > 5


def test_plot_command(tmp_path, capsys):
    run = write_log(tmp_path / "run")
    assert main(["plot", str(run), "--out", str(tmp_path / "p.png")]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert Image.open(tmp_path / "p.png").size == (1600, 600)
    assert main(["plot", str(run)]) == 0  # default: RUN/plot.png
    assert (run / "plot.png").is_file()


def test_plot_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "log.jsonl").write_text("")
    with pytest.raises(ProganError, match="no ticks"):
        plot_run(tmp_path / "empty", tmp_path / "x.png")
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "cannot read the training log" in capsys.readouterr().err
