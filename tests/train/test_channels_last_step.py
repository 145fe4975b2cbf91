"""TrainConfig.channels_last: the training step runs NHWC end to end (reals, G's output, D's
input, every convolution's input) and trains what the NCHW step trains. It acts on CUDA only;
the test adds the CPU to trainer.CHANNELS_LAST_DEVICES to run the NHWC step here."""

import pytest
import torch
from micro import make_micro_config

from progan.nn.layers import EqualizedConv2d
from progan.nn.sampling import is_channels_last
from progan.train import trainer as trainer_module
from progan.train.trainer import Trainer


def _trained(data, outdir, channels_last, seen=None, conv_impl="native"):
    cfg = make_micro_config(data, outdir, phase_kimg=0.032, total_kimg=1.0, tick_kimg=0.064)
    cfg.channels_last = channels_last
    cfg.network.conv_impl = conv_impl
    trainer = Trainer(cfg, outdir, progress=False)
    if seen is not None:
        for net in ("G", "D"):
            for name, m in getattr(trainer, net).named_modules():
                if isinstance(m, EqualizedConv2d):
                    m.register_forward_hook(
                        lambda mod, inp, out, key=f"{net}.{name}": seen.append(
                            (key, is_channels_last(inp[0]), is_channels_last(out))
                        )
                    )
    trainer._open_stream_at(0)
    phases = []
    for images in (0, 48, 64):  # stable at 4x4, then fade-in steps towards 8x8
        st = trainer.schedule.at(images)
        phases.append((st.depth, st.alpha))
        trainer.train_step(st)
    trainer.stream.close()
    nets = [trainer.G, trainer.D, trainer.G_ema]
    return trainer, phases, [[p.detach().clone() for p in m.parameters()] for m in nets]


@pytest.mark.parametrize("conv_impl", ["native", "explicit"])
def test_channels_last_step_is_nhwc_throughout_and_trains_like_nchw(
    shapes8, tmp_path, monkeypatch, conv_impl
):
    _, phases, nchw = _trained(shapes8, tmp_path / "nchw", False)
    monkeypatch.setattr(trainer_module, "CHANNELS_LAST_DEVICES", ("cuda", "cpu"))
    seen = []
    trainer, phases_cl, nhwc = _trained(shapes8, tmp_path / "nhwc", True, seen, conv_impl)
    assert phases == phases_cl and phases[1][0] == 1 and 0 < phases[1][1] < 1
    assert trainer.channels_last
    # parameters converted once, and still NHWC after the optimizer and EMA updates
    for m in (trainer.G, trainer.D, trainer.G_ema):
        convs = [p for p in m.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1]
        assert convs and all(is_channels_last(p) for p in convs)
    # every convolution of G and D (penalty included) saw and gave NHWC tensors
    names = {k for k, _, _ in seen}
    assert {"G.blocks.0.conv1", "D.blocks.0.conv", "D.from_rgb.1", "D.from_rgb.0"} <= names
    not_nhwc = sorted({k for k, i, o in seen if not (i and o)})
    assert not not_nhwc, not_nhwc
    for net_a, net_b in zip(nchw, nhwc, strict=True):
        for a, b in zip(net_a, net_b, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_channels_last_is_cuda_only_by_default(shapes8, tmp_path):
    trainer, _, _ = _trained(shapes8, tmp_path, True)
    assert not trainer.channels_last
    assert all(p.is_contiguous() for p in trainer.D.parameters())
