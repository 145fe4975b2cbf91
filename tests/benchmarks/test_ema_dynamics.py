"""benchmarks/ema_dynamics.py (issue 24's diagnostic): its EMA variants decay as the trainer's
EMA does, and its statistics mean what its docstring says (``ema_dyn``: the script)."""

from __future__ import annotations

import pytest
import torch

from progan.presets import preset
from progan.train.step import StepMixin


class _Clock(StepMixin):
    def __init__(self, cfg, images):
        self.cfg, self.images = cfg, images


@pytest.mark.parametrize("images", [0, 1000, 43_900, 10**8])
def test_rampup_variant_decays_as_the_trainer(ema_dyn, images):
    cfg = preset("cpu", 32)
    cfg.ema_rampup = 0.05
    expect = _Clock(cfg, images).ema_beta(32)
    assert ema_dyn.ema_decay(images, 32, cfg.ema_beta, rampup=0.05) == pytest.approx(expect)
    assert ema_dyn.ema_decay(images, 32, cfg.ema_beta, steps=3) == pytest.approx(0.5 ** (1 / 3))


def test_variants_and_statistics(ema_dyn):
    assert ema_dyn.parse_variants("r05, hl3") == {"r05": {"rampup": 0.05}, "hl3": {"steps": 3.0}}
    # digits after "r" are the decimals: r005 = 0.005 (not 0.05, which is r05)
    assert ema_dyn.parse_variants("r005,r0025") == {
        "r005": {"rampup": 0.005},
        "r0025": {"rampup": 0.0025},
    }
    for bad in ("x1", "r", "r0.5"):
        with pytest.raises(SystemExit):
            ema_dyn.parse_variants(bad)
    # two images: one all -1 (uint8 0), one half -1 / half +1 (uint8 0 and 255)
    a = -torch.ones(2, 3, 2, 2)
    a[1, :, 0] = 1.0
    mean, std = ema_dyn.image_stats(a)
    assert mean == [63.8] * 3  # (6 x 0 + 2 x 255) / 8 = 63.75, to one decimal
    assert std == [pytest.approx(73.6, abs=0.1)] * 3  # (0 + sample std of 0,0,255,255) / 2
    b = torch.randn(4, 3, 8, 8)
    assert ema_dyn.correlation(b, b) == pytest.approx(1.0)
    assert ema_dyn.correlation(b, -b) == pytest.approx(-1.0)
    assert ema_dyn.correlation(b, 2 * b + 5) == pytest.approx(1.0)  # centred, scale-free


def test_ema_fid_reads_the_saved_instants_in_kimg_order(ema_fid, tmp_path):
    for name in ("at-047.0", "at-044.0", "at-045.5"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes").mkdir()
    assert [k for k, _ in ema_fid.instants(tmp_path)] == ["44.0", "45.5", "47.0"]
    (tmp_path / "final.json").write_text('{"kimg": 50.016}')
    found = ema_fid.instants(tmp_path)
    assert [k for k, _ in found] == ["44.0", "45.5", "47.0", "50.0"]  # the end last
    assert found[0][1] == tmp_path / "at-044.0" and found[-1][1] == tmp_path
