"""The Table 1 ablation: the row table's switches, the results table's layout, and a tiny
end-to-end run through the command line (two rows on 16x16 synthetic shapes)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from progan.cli import main
from progan.config import to_dict
from progan.data.create import make_synthetic_dataset
from progan.errors import ConfigError
from progan.experiments.ablation import (
    ABLATION_CONFIGS,
    AblationRow,
    build_config,
    default_phase_kimg,
    parse_config_keys,
    table_columns,
    write_tables,
)
from progan.presets import preset
from progan.schedule import Schedule

# --------------------------------------------------------------------------------------------
# the row table


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("minibatch", "learning_rate"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _built(key: str, kimg: float = 10.0):
    base = preset("paper", resolution=32, channels=3)
    base.outdir = "DIR"
    return build_config(base, ABLATION_CONFIGS[key], kimg)


# What each row changes relative to the row it builds on (the paper's cumulative table;
# (e*) and (e) both build on (d), (f) on (e)).
EXPECTED_CHANGES = {
    ("a", "b"): {"schedule.growing"},
    ("b", "c"): {"schedule.minibatch_default"},
    ("c", "d"): {
        "d_steps",
        "schedule.learning_rate_default",
        "adam_betas",
        "loss.drift",
        "network.latent_size",
        "network.batchnorm_g",
        "network.layernorm_d",
    },
    ("d", "e*"): {"network.mbdisc_kernels"},
    ("d", "e"): {"network.mbstd_group_size"},
    ("e", "f"): {"network.equalized_lr"},
    ("f", "g"): {"network.pixelnorm", "network.normalize_latents"},
    ("g", "h"): {"network.fmap_base", "schedule.total_kimg"},
}


@pytest.mark.parametrize("parent, child", list(EXPECTED_CHANGES))
def test_each_row_switches_exactly_its_contribution(parent, child):
    a, b = _flat(to_dict(_built(parent))), _flat(to_dict(_built(child)))
    changed = {k for k in a if a[k] != b[k]} - {"outdir"}
    assert changed == EXPECTED_CHANGES[(parent, child)]


def test_rows_in_the_paper_order_and_their_switch_values():
    assert list(ABLATION_CONFIGS) == ["a", "b", "c", "d", "e*", "e", "f", "g", "h"]
    cfg = {k: _built(k) for k in ABLATION_CONFIGS}
    net = {k: c.network for k, c in cfg.items()}
    # (a): the WGAN-GP baseline of Gulrajani et al. as the paper set it up (Appendix A.2)
    a = cfg["a"]
    assert not a.schedule.growing and a.schedule.minibatch_default == 64
    assert net["a"].batchnorm_g and net["a"].layernorm_d
    assert not net["a"].equalized_lr and not net["a"].pixelnorm
    assert net["a"].mbstd_group_size == 0 and net["a"].mbdisc_kernels == 0
    assert a.schedule.learning_rate_default == 1e-4 and a.adam_betas == (0.0, 0.9)
    assert a.loss.drift == 0.0 and a.loss.name == "wgan-gp"
    assert [cfg[k].d_steps for k in ABLATION_CONFIGS] == [5] * 3 + [1] * 6  # n_critic
    assert net["a"].latent_size == 128  # a quarter of the paper's 512
    # progressive growing from (b) on, minibatch 16 from (c) on
    assert [cfg[k].schedule.growing for k in ABLATION_CONFIGS] == [False] + [True] * 8
    assert [cfg[k].schedule.minibatch_default for k in ABLATION_CONFIGS] == [64, 64] + [16] * 7
    # batch/layer norm only in (a)-(c)
    assert [net[k].batchnorm_g for k in ABLATION_CONFIGS] == [True] * 3 + [False] * 6
    assert [net[k].layernorm_d for k in ABLATION_CONFIGS] == [True] * 3 + [False] * 6
    # minibatch discrimination only in (e*); minibatch stddev from (e) on
    assert [net[k].mbdisc_kernels > 0 for k in ABLATION_CONFIGS] == [
        k == "e*" for k in ABLATION_CONFIGS
    ]
    assert [net[k].mbstd_group_size for k in ABLATION_CONFIGS] == [0] * 5 + [4] * 4
    # equalized learning rate from (f) on, pixel norm from (g) on
    assert [net[k].equalized_lr for k in ABLATION_CONFIGS] == [False] * 6 + [True] * 3
    assert [net[k].pixelnorm for k in ABLATION_CONFIGS] == [False] * 7 + [True] * 2
    # (d) on: the paper's training parameters
    for k in ("d", "e*", "e", "f", "g", "h"):
        assert cfg[k].schedule.learning_rate_default == 1e-3
        assert cfg[k].adam_betas == (0.0, 0.99) and cfg[k].loss.drift == 1e-3
        assert net[k].latent_size == 512
    # the lower-capacity network in (a)-(g) (paper A.2: 512, 512, 256, 128 at 4..32), (h) full
    assert [net["g"].num_features(d) for d in range(4)] == [512, 512, 256, 128]
    assert [net["h"].num_features(d) for d in range(4)] == [512, 512, 512, 512]
    # equal budget, (h) twice as long; one run folder per row
    assert {cfg[k].schedule.total_kimg for k in "abcdefg"} | {cfg["e*"].schedule.total_kimg} == {
        10.0
    }
    assert cfg["h"].schedule.total_kimg == 20.0
    assert cfg["e*"].outdir == str(Path("DIR") / "e-star") and cfg["a"].outdir == "DIR/a"


def test_growing_rows_reach_the_target_and_stabilize_one_phase():
    # a budget too short for the paper's share: kimg / (2L - 1), 4, 8, 16: 5 phases
    assert default_phase_kimg(50.0, 16, 4) == pytest.approx(min(3.0, 10.0))
    assert default_phase_kimg(5.0, 1024) == pytest.approx(5.0 / 17)  # capped
    cfg = _built("g", kimg=5.0)
    assert cfg.schedule.stabilize_kimg == pytest.approx(0.3)  # the paper's share, 6%
    sched = Schedule(cfg.schedule, 32)
    segs = sched.segments()
    assert [(s.resolution, s.fading) for s in segs][-2:] == [(32, True), (32, False)]
    assert segs[-1].start_kimg == pytest.approx(6 * 0.3)  # 4x4 + 3 fade/stabilize pairs
    assert segs[-1].end_kimg == pytest.approx(5.0)


def test_paper_budget_section_6_1():
    """Section 6.1: each row until D has seen 10M real images; 600k per phase to 128x128
    (6,600 kimg), then stable at 128x128 until 10,000 kimg."""
    from progan.cli import build_parser
    from progan.experiments.ablation import PAPER_KIMG, PAPER_PHASE_KIMG

    assert (PAPER_KIMG, PAPER_PHASE_KIMG) == (10_000, 600)
    args = build_parser().parse_args(["experiment", "ablation", "--data", "x", "--outdir", "o"])
    assert args.kimg == 10_000 and args.phase_kimg is None
    assert default_phase_kimg(args.kimg, 128) == 600
    base = preset("paper", resolution=128, channels=3)
    cfg = build_config(base, ABLATION_CONFIGS["g"], args.kimg)
    segs = Schedule(cfg.schedule, 128).segments()
    assert cfg.schedule.total_kimg == 10_000 and cfg.schedule.stabilize_kimg == 600
    assert (segs[-1].resolution, segs[-1].fading) == (128, False)
    # 4x4, then 5 fade-ins and stabilizations (11 phases of 600 = 6,600 kimg, the last one
    # the start of 128x128's stable phase, which begins at 6,000) and stable until 10,000
    assert len(segs) == 11 and all(s.kimg == 600 for s in segs[:-1])
    assert (segs[-1].start_kimg, segs[-1].end_kimg) == (6_000, 10_000)
    assert build_config(base, ABLATION_CONFIGS["h"], args.kimg).schedule.total_kimg == 20_000


def test_parse_config_keys():
    assert [c.key for c in parse_config_keys("h, a,e*")] == ["a", "e*", "h"]
    assert [c.key for c in parse_config_keys("e-star,(b)")] == ["b", "e*"]
    assert len(parse_config_keys("all")) == len(parse_config_keys(None)) == 9
    with pytest.raises(ConfigError, match="unknown ablation configuration 'z'"):
        parse_config_keys("a,z")


def test_table_layout_levels_highest_resolution_first(tmp_path):
    rows = [
        AblationRow(
            ABLATION_CONFIGS[k],
            {"16": 3.0 + i, "64": 1.5, "32": 2.25, "avg": 2.5},
            0.25,
            10.0,
            1.5,
            "run",
        )
        for i, k in enumerate(("a", "e*"))
    ]
    csv_path, md_path = write_tables(rows, tmp_path, notes=["a note"])
    assert table_columns(rows) == [
        "config",
        "description",
        "swd_64",
        "swd_32",
        "swd_16",
        "swd_avg",
        "ms_ssim",
        "kimg",
        "train_minutes",
    ]
    table = list(csv.DictReader(csv_path.open()))
    assert [r["config"] for r in table] == ["a", "e*"]
    assert table[1]["description"] == "(e*) + Minibatch discrimination"
    assert float(table[1]["swd_16"]) == 4.0 and float(table[0]["ms_ssim"]) == 0.25
    md = md_path.read_text().splitlines()
    header = next(line for line in md if line.startswith("| Training configuration"))
    assert header.split(" | ")[1:4] == ["SWD 64", "SWD 32", "SWD 16"]
    assert "| (a) Gulrajani et al. (2017) | 1.50 | 2.25 | 3.00 | 2.50 | 0.2500 |" in md[-4]
    assert md[-1] == "- a note"


# --------------------------------------------------------------------------------------------
# a tiny run through the command line


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    data = root / "shapes16.zip"
    make_synthetic_dataset(data, count=96, resolution=16, seed=5)
    out = root / "out"
    argv = [
        "experiment",
        "ablation",
        "--data",
        str(data),
        "--outdir",
        str(out),
        "--kimg",
        "0.1",
        "--configs",
        "a,h",
        "--preset",
        "tiny",
        "--fmap-base",
        "64",
        "--fmap-max",
        "16",
        "--latent",
        "8",
        "--tick-kimg",
        "0.05",
        "--workers",
        "0",
        "--num",
        "64",
        "--grid",
        "16",
    ]
    assert main(argv) == 0
    return out


def test_ablation_writes_the_table(ablation_dir):
    table = list(csv.DictReader((ablation_dir / "ablation.csv").open()))
    assert [r["config"] for r in table] == ["a", "h"]
    assert list(table[0]) == [
        "config",
        "description",
        "swd_16",
        "swd_avg",
        "ms_ssim",
        "kimg",
        "train_minutes",
    ]
    for r in table:
        assert 0 < float(r["swd_16"]) == pytest.approx(float(r["swd_avg"]))  # one level: avg
        assert 0 <= float(r["ms_ssim"]) <= 1
        assert float(r["train_minutes"]) >= 0
    assert [float(r["kimg"]) for r in table] == [0.1, 0.2]  # (h) trains twice as long
    md = (ablation_dir / "ablation.md").read_text()
    assert "| (a) Gulrajani et al. (2017) |" in md and "| (h) Converged |" in md
    assert "MS-SSIM of the training images themselves" in md
    results = json.loads((ablation_dir / "ablation.json").read_text())
    assert [r["config"] for r in results] == ["a", "h"]


def test_ablation_run_folders_samples_and_metrics(ablation_dir):
    from progan.generate import load_generator

    for key, kimg in (("a", 0.1), ("h", 0.2)):
        runs = sorted((ablation_dir / key).glob("0*"))
        assert len(runs) == 1
        log = [json.loads(line) for line in (runs[0] / "log.jsonl").read_text().splitlines()]
        assert log[-1]["kimg"] >= kimg
        metrics = json.loads((ablation_dir / key / "metrics.json").read_text())
        assert metrics["config"] == key and set(metrics["swd"]) == {"16", "avg"}
        img = np.asarray(Image.open(ablation_dir / f"{key}-samples.png"))
        assert img.shape == (64, 64, 3)  # 16 samples of 16x16 in a 4x4 grid
    G = load_generator(ablation_dir / "a")
    assert G.cfg.batchnorm_g and G.cfg.latent_size == 2 and not G.cfg.equalized_lr
    assert load_generator(ablation_dir / "h").cfg.fmap_base == 64


def test_ablation_rerun_continues_finished_runs(ablation_dir):
    """Running the same study again reuses the finished run (no new folder, same numbers)."""
    from progan.experiments.ablation import run_ablation
    from progan.train.api import configure

    before = json.loads((ablation_dir / "a" / "metrics.json").read_text())
    cfg = json.loads(next((ablation_dir / "a").glob("0*/config.json")).read_text())
    base = configure(cfg["data"], ablation_dir, "tiny", num_workers=0, tick_kimg=0.05)
    base.network.fmap_base, base.network.fmap_max, base.network.latent_size = 64, 16, 8
    rows = run_ablation(
        base, parse_config_keys("a"), 0.1, num=64, grid_size=4, reference=False, log=lambda s: None
    )
    assert len(list((ablation_dir / "a").glob("0*"))) == 1
    assert rows[0].swd == pytest.approx(before["swd"])
    assert rows[0].run_dir == before["run_dir"]


def test_ablation_command_rejects_unknown_rows(tmp_path, capsys):
    argv = [
        "experiment",
        "ablation",
        "--data",
        str(tmp_path),
        "--outdir",
        str(tmp_path),
        "--kimg",
        "1",
        "--configs",
        "a,q",
    ]
    assert main(argv) == 2
    assert "unknown ablation configuration 'q'" in capsys.readouterr().err
