"""The real training step (Trainer.train_step, unchanged) with D's explicit convolutions: the
same G, D and EMA weights as with native ones, to float rounding, on a fade-in and a stable
step."""

import torch
from micro import make_micro_config

from progan.train.loop import Trainer


def _trained(data, outdir, conv_impl):
    cfg = make_micro_config(data, outdir, phase_kimg=0.032, total_kimg=1.0, tick_kimg=0.064)
    cfg.network.conv_impl = conv_impl
    trainer = Trainer(cfg, outdir, progress=False)
    trainer._open_stream_at(0)
    phases = []
    for images in (0, 48):  # stable at 4x4, then the first fade-in step towards 8x8
        st = trainer.schedule.at(images)
        phases.append((st.depth, st.alpha))
        trainer.train_step(st)
    trainer.stream.close()
    return phases, [
        [p.detach().clone() for p in m.parameters()] for m in (trainer.G, trainer.D, trainer.G_ema)
    ]


def test_explicit_convolutions_train_like_native_ones(shapes8, tmp_path):
    phases, native = _trained(shapes8, tmp_path / "n", "native")
    phases_e, explicit = _trained(shapes8, tmp_path / "e", "explicit")
    assert phases == phases_e and phases[1][0] == 1 and 0 < phases[1][1] < 1
    for net_n, net_e in zip(native, explicit, strict=True):
        for a, b in zip(net_n, net_e, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
