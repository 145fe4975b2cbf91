"""The Figure 4 convergence study: two arms on a training-time budget, SWD per level at
intervals, the CSV and the two plots (a tiny run through the command line)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from progan.cli import main
from progan.data.create import make_synthetic_dataset
from progan.experiments.convergence import (
    CONVERGENCE_FIGSIZE,
    THROUGHPUT_FIGSIZE,
    ConvergencePoint,
    arm_config,
    plot_convergence,
    write_csv,
)
from progan.tools.plot import DPI

SECONDS_PER_ARM = 3.0


@pytest.fixture(scope="module")
def convergence_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("convergence")
    data = root / "shapes16.zip"
    make_synthetic_dataset(data, count=96, resolution=16, seed=6)
    out = root / "out"
    argv = [
        "experiment",
        "convergence",
        "--data",
        str(data),
        "--outdir",
        str(out),
        "--minutes",
        str(SECONDS_PER_ARM / 60),
        "--evals",
        "2",
        "--phase-kimg",
        "0.05",
        "--preset",
        "tiny",
        "--fmap-base",
        "64",
        "--fmap-max",
        "16",
        "--latent",
        "8",
        "--tick-kimg",
        "0.016",
        "--workers",
        "0",
        "--num",
        "32",
    ]
    assert main(argv) == 0
    return out


def test_convergence_csv(convergence_dir):
    rows = list(csv.DictReader((convergence_dir / "convergence.csv").open()))
    assert list(rows[0]) == [
        "arm",
        "minutes",
        "kimg",
        "resolution",
        "alpha",
        "swd_16",
        "swd_avg",
    ]
    for arm in ("growing", "no-growing"):
        pts = [r for r in rows if r["arm"] == arm]
        minutes = [float(r["minutes"]) for r in pts]
        # the initial snapshot, then one point per chunk (fewer chunks when one overshoots:
        # chunks end on tick boundaries, and this shared CPU can be slow)
        assert 2 <= len(pts) <= 3 and minutes[0] == 0.0
        assert minutes == sorted(minutes) and len(set(minutes)) == len(minutes)
        # the arm trained for its budget, give or take the last tick
        assert SECONDS_PER_ARM / 60 * 0.9 <= minutes[-1] <= SECONDS_PER_ARM / 60 + 0.5
        assert all(float(r["swd_16"]) > 0 for r in pts)
        assert [float(r["kimg"]) for r in pts] == sorted(float(r["kimg"]) for r in pts)
    growing = [int(r["resolution"]) for r in rows if r["arm"] == "growing"]
    assert growing[0] == 4 and growing == sorted(growing)
    assert {int(r["resolution"]) for r in rows if r["arm"] == "no-growing"} == {16}
    saved = json.loads((convergence_dir / "convergence.json").read_text())
    assert set(saved["runs"]) == {"growing", "no-growing"} and saved["config"] == "g"


def test_convergence_plots_decode_at_their_sizes(convergence_dir):
    for name, (w, h) in (
        ("convergence.png", CONVERGENCE_FIGSIZE),
        ("throughput.png", THROUGHPUT_FIGSIZE),
    ):
        img = Image.open(convergence_dir / name)
        img.load()
        assert img.format == "PNG" and img.size == (round(w * DPI), round(h * DPI))
        assert np.asarray(img.convert("L")).std() > 5  # not blank


def test_arms_share_everything_but_growing(tmp_path):
    from progan.config import to_dict
    from progan.presets import preset

    base = preset("tiny", resolution=16, channels=3)
    base.outdir = str(tmp_path)
    g, n = (arm_config(base, arm, 0.5) for arm in ("growing", "no-growing"))
    dg, dn = to_dict(g), to_dict(n)
    assert dg["schedule"].pop("growing") and not dn["schedule"].pop("growing")
    dg.pop("outdir"), dn.pop("outdir")
    assert dg == dn
    assert g.network.pixelnorm and g.network.equalized_lr and g.network.mbstd_group_size == 4
    assert g.schedule.stabilize_kimg == g.schedule.fade_kimg == 0.5
    with pytest.raises(ValueError):
        arm_config(base, "sideways", 0.5)


def test_csv_and_plot_from_points(tmp_path):
    points = [
        ConvergencePoint(arm, t, t * 2, res, 1.0, {"32": 40 / (1 + t), "16": 20.0, "avg": 30.0})
        for arm, res in (("growing", 8), ("no-growing", 32))
        for t in (0.0, 30.0, 60.0)
    ]
    rows = list(csv.reader(write_csv(points, tmp_path / "c.csv").open()))
    assert rows[0][-3:] == ["swd_32", "swd_16", "swd_avg"] and len(rows) == 7
    assert rows[2][:2] == ["growing", "0.500"]
    png = plot_convergence(points, tmp_path / "c.png")
    assert Image.open(png).size == (800, 500)


def test_merge_combines_arms_run_separately(tmp_path):
    import json

    from progan.errors import ProganError
    from progan.experiments.convergence import merge_convergence

    def arm_folder(arm: str, swd: float):
        folder = tmp_path / arm
        run = folder / arm / "00000-run"
        run.mkdir(parents=True)
        lines = [
            {"seconds": 30.0 * i, "images_per_sec": 100.0 + i, "resolution": 8} for i in (1, 2)
        ]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        point = {"arm": arm, "seconds": 60.0, "kimg": 3.0, "resolution": 16, "alpha": 1.0,
                 "swd": {"16": swd, "8": swd / 2, "avg": swd * 0.75}}  # fmt: skip
        (folder / "convergence.json").write_text(
            json.dumps({"runs": {arm: str(run)}, "points": [point]})
        )
        return folder

    a, b = arm_folder("growing", 10.0), arm_folder("no-growing", 20.0)
    out = merge_convergence([a, b], tmp_path / "both")
    rows = (tmp_path / "both" / "convergence.csv").read_text().splitlines()
    assert rows[0] == "arm,minutes,kimg,resolution,alpha,swd_16,swd_8,swd_avg"
    assert rows[1:] == [
        "growing,1.000,3.000,16,1.000,10.000,5.000,7.500",
        "no-growing,1.000,3.000,16,1.000,20.000,10.000,15.000",
    ]
    assert out["convergence_png"].stat().st_size > 0 and set(out["runs"]) == {
        "growing",
        "no-growing",
    }
    with pytest.raises(ProganError, match="already in"):
        merge_convergence([a, a], tmp_path / "twice")
