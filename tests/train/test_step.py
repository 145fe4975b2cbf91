"""The bookkeeping of one training step (progan.train.step): D steps per G step (n_critic)."""

import pytest
import torch
from micro import make_micro_config

from progan.errors import ConfigError
from progan.train import checkpoint as ckpt
from progan.train.api import train
from progan.train.trainer import Trainer


def _config(data, outdir, **kw):
    return make_micro_config(data, outdir, phase_kimg=1.0, total_kimg=2.0, tick_kimg=0.064, **kw)


def test_d_steps_take_fresh_reals_and_count_them(shapes8, tmp_path):
    cfg = _config(shapes8, tmp_path, d_steps=3)
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer._open_stream_at(0)
    st = trainer.schedule.at(0)
    D_before = [p.detach().clone() for p in trainer.D.parameters()]
    trainer.train_step(st)
    trainer.stream.close()
    # three real minibatches read, three Adam steps on D, one on G
    assert trainer.stream.position == 3 * st.batch_size
    d_steps = {int(s["step"]) for s in trainer.opt_D.state.values()}
    g_steps = {int(s["step"]) for s in trainer.opt_G.state.values()}
    assert d_steps == {3} and g_steps == {1}
    assert any(not torch.equal(a, b) for a, b in zip(D_before, trainer.D.parameters(), strict=True))


def test_kimg_counts_every_real_image_shown_to_d(shapes8, tmp_path):
    run = train(_config(shapes8, tmp_path, d_steps=2), progress=False, max_ticks=2)
    _entry, state = ckpt.newest_valid_checkpoint(run)
    # 16 images per D step, 2 D steps per training step: a tick of 64 images is 2 steps
    assert state["images"] == 128 and state["steps"] == 4
    assert state["data_position"] == 128


def test_d_steps_must_be_positive(shapes8, tmp_path):
    with pytest.raises(ConfigError, match="d_steps"):
        _config(shapes8, tmp_path, d_steps=0)
