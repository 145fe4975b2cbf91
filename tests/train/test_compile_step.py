"""TrainConfig.compile: torch.compile of G's forward and of the G step's D gives the eager
step's weights; where torch.compile cannot work the step runs eagerly after one warning."""

import warnings

import pytest
import torch
from micro import make_micro_config

from progan.train import compiled as compiled_module
from progan.train.trainer import Trainer


def _trained(data, outdir, compile_on):
    cfg = make_micro_config(data, outdir, phase_kimg=0.032, total_kimg=1.0, tick_kimg=0.064)
    cfg.compile = compile_on
    cfg.network.conv_impl = "explicit"  # the compiled D then runs F.conv2d (same values)
    trainer = Trainer(cfg, outdir, progress=False)
    trainer._open_stream_at(0)
    st = trainer.schedule.at(48)  # a fade-in step towards 8x8: alpha goes in as a tensor
    assert st.depth == 1 and 0 < st.alpha < 1
    for _ in range(2):
        trainer.train_step(st)
    trainer.stream.close()
    nets = (trainer.G, trainer.D, trainer.G_ema)
    return trainer, [[p.detach().clone() for p in m.parameters()] for m in nets]


@pytest.mark.slow  # compiling the three graphs with inductor takes minutes on a 2-core CPU
def test_compiled_step_trains_like_the_eager_step(shapes8, tmp_path):
    reason = compiled_module.probe(torch.device("cpu"))
    if reason is not None:
        pytest.skip(f"torch.compile does not work on this CPU: {reason}")
    _, eager = _trained(shapes8, tmp_path / "e", False)
    from torch._dynamo.utils import counters

    counters.clear()
    trainer, compiled = _trained(shapes8, tmp_path / "c", True)
    assert trainer.compiled is not None
    assert trainer.compiled.generator.compiled is not None  # did not fall back
    assert trainer.compiled.discriminator_g_step.compiled is not None
    # the trainer's probe, G without and with grad, the G step's D; the second step (a new
    # alpha) reuses them
    assert counters["stats"]["unique_graphs"] == 4
    for net_e, net_c in zip(eager, compiled, strict=True):
        for a, b in zip(net_e, net_c, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()


def test_compile_falls_back_to_eager_with_one_warning(shapes8, tmp_path, monkeypatch):
    monkeypatch.setattr(compiled_module, "probe", lambda device: "no compiler (test)")
    monkeypatch.setattr(compiled_module, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, weights = _trained(shapes8, tmp_path / "c", True)
        _trained(shapes8, tmp_path / "c2", True)
    assert trainer.compiled is None
    msgs = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert len(msgs) == 1 and "no compiler (test)" in msgs[0] and "eagerly" in msgs[0]
    _, eager = _trained(shapes8, tmp_path / "e", False)
    for a, b in zip(eager[1], weights[1], strict=True):
        assert torch.equal(a, b)


def test_a_compiled_call_that_fails_runs_eagerly(monkeypatch):
    monkeypatch.setattr(compiled_module, "_warned", False)
    module = torch.nn.Linear(3, 2)
    call = compiled_module._Fallback(module)

    def broken(*args):
        raise RuntimeError("inductor failed")

    call.compiled = broken
    x = torch.randn(4, 3)
    with pytest.warns(RuntimeWarning, match="inductor failed"):
        y = call(x)
    assert torch.equal(y, module(x)) and call.compiled is None
