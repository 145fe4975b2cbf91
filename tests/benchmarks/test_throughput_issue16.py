"""benchmarks/throughput.py's issue-16 variants (explicit convolutions, the trainer's compile,
the lazy penalty) on a tiny CPU run: settings, the trainers they build, rows and profiles.
(``tp``: benchmarks/throughput.py, conftest.py.)"""

from __future__ import annotations

import json

import pytest
import torch


def test_issue16_variant_settings_and_list(tp):
    s = tp.variant_settings("explicit+bf16+channels_last")
    assert s["conv_impl"] == "explicit" and s["amp"] == "bf16" and s["channels_last"]
    assert tp.variant_settings("explicit+compile")["compile"] == "trainer"
    assert tp.variant_settings("lazy-gp4")["gp_every"] == 4
    assert tp.variant_settings("tf32")["conv_impl"] == "native"
    names = tp.expand_variants(["tf32", "issue16"])
    assert names[0] == "tf32" and names.count("tf32") == 1
    assert set(tp.ISSUE16_VARIANTS) == set(names)
    for needed in ("explicit", "explicit+bf16", "explicit+channels_last", "explicit+compile"):
        assert needed in names
    assert any("lazy-gp4" in n for n in names)
    for v in names:
        tp.variant_settings(v)  # every listed variant parses


def test_variant_settings_reach_the_trainer(tp, tmp_path):
    cfg = tp.network_config("tiny", 8)
    data = tp.make_dataset(tmp_path, 8, 4)
    settings = tp.variant_settings("explicit+lazy-gp4")
    trainer = tp.make_trainer(cfg, data, tmp_path / "run", torch.device("cpu"), settings)
    trainer.stream.close()
    assert trainer.cfg.network.conv_impl == "explicit" and trainer.cfg.loss.gp_every == 4
    assert {m.impl for m in trainer.D.modules() if hasattr(m, "impl")} == {"explicit"}
    assert trainer.compiled is None and not trainer.cfg.compile


def test_tiny_run_of_the_issue16_variants(tp, tmp_path):
    out = tmp_path / "t.json"
    argv = ["--preset", "tiny", "--resolutions", "4,8", "--steps", "6", "--warmup", "0",
            "--repeats", "1", "--variants", "tf32,explicit,explicit+bf16,explicit+lazy-gp4",
            "--profile", "3", "--profile-at", "8", "--peak-seconds", "0.05",
            "--device", "cpu", "--project-resolution", "16", "--json", str(out)]  # fmt: skip
    tp.main(argv)
    data = json.loads(out.read_text())
    assert [s["variant"] for s in data["skipped_variants"]] == ["tf32", "explicit+bf16"]
    rows = data["rows"]
    assert [(r["resolution"], r["path"], r["variant"]) for r in rows] == [
        (res, path, variant)
        for res in (4, 8)
        for path, variant in (
            ("reference", "fp32"), ("progan", "explicit"), ("progan", "explicit+lazy-gp4"),
        )
    ]  # fmt: skip
    for r in rows:
        assert r["error"] is None and r["img_per_s"] > 0 and r["flops_per_img"] > 0
        # whole cycles of the lazy penalty (one penalized D step in 4) in every timed run
        assert r["steps"] == (8 if "lazy-gp4" in r["variant"] else 6)
        assert ("profile" in r) == (r["resolution"] == 8)
    at8 = {r["variant"]: r for r in rows if r["resolution"] == 8}
    assert len(at8["explicit"]["profile"]) == 3 and at8["explicit"]["profile"][0]["self_ms"] > 0
    # the lazy penalty's FLOPs are the mean over 4 steps, one with the penalty: fewer
    lazy, full = at8["explicit+lazy-gp4"]["flops_per_img"], at8["explicit"]["flops_per_img"]
    assert 0.3 * full < lazy < 0.9 * full
    proj = data["projection"]
    assert set(proj["paths"]) == {"reference:fp32", "progan:explicit", "progan:explicit+lazy-gp4"}


def test_projection_of_a_paper_run_follows_the_preset_schedule(tp):
    """The whole `paper` run to 1024 is the preset's current schedule (19,000 kimg: official
    preset-v1-1gpu), not a number written into the benchmark."""
    from progan.presets import preset

    rows = [{"path": "progan", "variant": "tf32", "resolution": r, "batch": 16, "alpha": 1.0,
             "img_per_s": 100.0} for r in (4, 8, 16, 32, 64, 128, 256, 512, 1024)]  # fmt: skip
    p = tp.project_run(rows, "paper", 1024, None)
    assert p["total_kimg"] == preset("paper", 1024).schedule.total_kimg == 19000.0
    assert sum(ph["kimg"] for ph in p["phases"]) == pytest.approx(19000.0)
    # at 100 img/s everywhere: 19,000 kimg take 19e6 / 100 s
    assert p["paths"]["progan:tf32"]["hours"] == pytest.approx(19e6 / 100 / 3600, rel=1e-3)
