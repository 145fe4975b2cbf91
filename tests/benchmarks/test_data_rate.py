"""benchmarks/data_rate.py and the projection at min(step rate, data rate)."""

from __future__ import annotations

import json

import pytest


def _row(res, ips):
    return {"path": "progan", "variant": "fp32", "resolution": res, "batch": 16, "alpha": 1.0,
            "img_per_s": ips}  # fmt: skip


def test_projection_takes_the_slower_of_step_and_data(tp, tmp_path):
    """tiny preset to 8x8: 2 kimg stable at 4, 2 kimg fading in 8, 4 kimg stable at 8; the
    stream keeps up at 4x4 (data 9 > step 5 img/s) but not at 8x8 (data 2.5 < step 10)."""
    rows = [_row(4, 5.0), _row(8, 10.0)]
    p = tp.project_run(rows, "tiny", 8, None, {4: 9.0, 8: 2.5})
    path = p["paths"]["progan:fp32"]
    assert path["hours"] == pytest.approx((2000 / 5 + 6000 / 2.5) / 3600, abs=1e-3)
    assert path["bound_by_resolution"] == {"4": "step", "8": "data"}
    unbounded = tp.project_run(rows, "tiny", 8, None)["paths"]["progan:fp32"]
    assert unbounded["hours"] == pytest.approx((2000 / 5 + 6000 / 10) / 3600, abs=1e-3)
    assert set(unbounded["bound_by_resolution"].values()) == {"step"}
    p = tp.project_run(rows, "tiny", 8, None, {4: 1.0})
    assert p["paths"]["progan:fp32"]["bound_by_resolution"] == {"4": "data", "8": "step"}
    assert any("no data rate at [8]" in n for n in p["notes"])
    # data_rate.py's JSON: the best worker count after preparation
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"streams": [
        {"prepared": True, "resolution": 4, "workers": 0, "img_per_s": 300.0},
        {"prepared": True, "resolution": 4, "workers": 2, "img_per_s": 700.0},
        {"prepared": False, "resolution": 4, "workers": 2, "img_per_s": 40.0},
    ]}))  # fmt: skip
    assert tp.data_rates_from_json(f) == {4: 700.0}
    assert tp.data_rates_from_json(f, prepared=False) == {4: 40.0}


@pytest.mark.slow
def test_small_data_rate_run_writes_json(dr, tmp_path):
    out = tmp_path / "r.json"
    result = dr.main(["--count", "8", "--resolution", "16", "--resolutions", "4,16",
                      "--workers", "0,1", "--seconds", "0.05", "--train-steps", "1",
                      "--work", str(tmp_path / "w"), "--json", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    assert data["schema"] == "progan-data-rate-1" and data["versions"]["torch"]
    streams = {(r["prepared"], r["resolution"], r["workers"]): r for r in data["streams"]}
    assert len(streams) == 8 and all(r["img_per_s"] > 0 for r in streams.values())
    assert streams[(True, 4, 0)]["source"] == "level"
    assert streams[(False, 4, 0)]["source"] == "decode"
    assert streams[(True, 16, 1)]["source"] == "png"
    assert [r["workers"] for r in data["preparation"]] == [0, dr.usable_cores()]
    assert [r["resolution"] for r in data["training"]] == [4, 8, 16, 32][: len(data["training"])]
    table = dr.markdown(data)
    assert "| 4 | " in table and "| 16 | " in table and "| level |" in table
