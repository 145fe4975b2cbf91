"""benchmarks/throughput.py: the reference step computes what progan's step computes, FLOP
counting matches a hand count, the projection's arithmetic, and the JSON of a tiny run."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from progan.config import NetworkConfig
from progan.nn import Discriminator
from progan.nn.resample import real_images_for_phase
from progan.schedule import PhaseState


class _Recorder:
    """Wraps a RealImageStream and keeps every batch it hands out."""

    def __init__(self, stream):
        self.stream, self.batches = stream, []

    def next(self, n):
        images, labels = self.stream.next(n)
        self.batches.append(images.clone())
        return images, labels

    def close(self):
        self.stream.close()


def test_reference_step_updates_weights_like_progan_train_step(tp, tmp_path):
    """Same initial weights, same random numbers, same reals: after a fade-in step (alpha 0.5)
    and a stable step, G, D and the EMA generator agree between the benchmark's reference step
    and Trainer.train_step."""
    cfg = tp.network_config("tiny", 8)
    cfg.ema_rampup = None  # the reference uses a fixed EMA decay
    cfg.ema_beta = tp.REFERENCE_EMA_BETA
    data = tp.make_dataset(tmp_path, 8, 4)
    trainer = tp.make_trainer(cfg, data, tmp_path / "run", torch.device("cpu"), {"tf32": False})
    alphas = (0.5, 1.0)
    try:
        G0, D0 = copy.deepcopy(trainer.G), copy.deepcopy(trainer.D)
        rng = torch.Generator().manual_seed(0)
        rng.set_state(trainer.rng.get_state())
        trainer.stream = _Recorder(trainer.stream)
        trainer._enter_phase(PhaseState(1, 1.0, 4, tp.REFERENCE_LR))
        for alpha in alphas:
            trainer.train_step(PhaseState(1, alpha, 4, tp.REFERENCE_LR))
        ref = tp.ReferenceStep(cfg.network, 1, 1.0, "cpu", G=G0, D=D0, generator=rng)
        losses = []
        for alpha, batch in zip(alphas, trainer.stream.batches, strict=True):
            ref.alpha = alpha
            losses.append(ref(real_images_for_phase(batch, 8, alpha)))
    finally:
        trainer.stream.close()
    assert all(math.isfinite(v) for pair in losses for v in pair)
    moved = 0.0
    for mine, theirs, start in [
        (trainer.G, ref.G, G0),
        (trainer.D, ref.D, D0),
        (trainer.G_ema, ref.G_ema, G0),
    ]:
        for (name, a), b, a0 in zip(
            mine.named_parameters(), theirs.parameters(), start.parameters(), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6, msg=name)
            moved = max(moved, (a - a0).abs().max().item())
    assert moved > 1e-4  # the steps did change the weights


def _conv(n, res, cin, cout, k):
    return 2 * n * res * res * cin * cout * k * k


def test_flop_count_of_discriminator_forward_matches_hand_count(tp):
    net = NetworkConfig(resolution=16, fmap_base=256, fmap_max=32, latent_size=32)
    nf = net.num_features
    D = Discriminator(net)
    n = 4
    x = torch.randn(n, 3, 16, 16)
    total, by_op = tp.count_flops(lambda: D(x, 2, 1.0))
    expected = (
        _conv(n, 16, 3, nf(2), 1)  # fromRGB at 16x16
        + _conv(n, 16, nf(2), nf(2), 3)
        + _conv(n, 16, nf(2), nf(1), 3)  # block at 16x16
        + _conv(n, 8, nf(1), nf(1), 3)
        + _conv(n, 8, nf(1), nf(0), 3)  # block at 8x8
        + _conv(n, 4, nf(0) + 1, nf(0), 3)  # head conv after minibatch stddev
        + 2 * n * (16 * nf(0)) * nf(0)
        + 2 * n * nf(0) * 1  # the two dense layers
    )
    assert total == expected
    assert set(by_op) == {"aten.convolution", "aten.addmm"}


def test_flop_count_covers_double_backward_and_meta_matches_cpu(tp):
    """A whole reference step counts the penalty's convolution double backward, and counting on
    the meta device (used for extrapolation) gives the same number as counting a real step."""
    cfg = tp.network_config("tiny", 8)
    ref = tp.ReferenceStep(cfg.network, 1, 1.0, "cpu")
    reals = torch.rand(4, 3, 8, 8) * 2 - 1
    total, by_op = tp.count_flops(lambda: ref(reals))
    D = Discriminator(cfg.network)
    d_forward, _ = tp.count_flops(lambda: D(reals, 1, 1.0))
    # 4 D forwards (reals, fakes, mixed, G step) plus backward passes of about twice that
    assert total > 8 * d_forward
    assert by_op["aten.convolution_backward"] > by_op["aten.convolution"]
    assert tp.reference_flops_per_image(cfg.network, 8, 4) == total / 4


def test_variant_settings(tp):
    assert tp.variant_settings("fp32") == {
        "tf32": False,
        "amp": "none",
        "channels_last": False,
        "compile": None,
        "conv_impl": "native",
        "gp_every": 1,
    }
    s = tp.variant_settings("bf16+channels_last")
    assert s["tf32"] and s["amp"] == "bf16" and s["channels_last"]
    assert tp.variant_settings("compile_g")["compile"] == "G"
    with pytest.raises(ValueError):
        tp.variant_settings("fp16")


def test_projection_arithmetic(tp):
    """tiny preset to 8x8: 2 kimg stable at 4, 2 kimg fading in 8, 4 kimg stable at 8."""

    def row(res, alpha, ips):
        return {"path": "progan", "variant": "fp32", "resolution": res, "batch": 16,
                "alpha": alpha, "img_per_s": ips}  # fmt: skip

    p = tp.project_run([row(4, 1.0, 500.0), row(8, 1.0, 1000.0)], "tiny", 8, None)
    hours = p["paths"]["progan:fp32"]
    assert hours["hours"] == pytest.approx((2000 / 500 + 6000 / 1000) / 3600, abs=1e-3)
    assert p["extrapolated_resolutions"] == []
    assert any("fade" in note for note in p["notes"])
    p = tp.project_run(
        [row(4, 1.0, 500.0), row(8, 1.0, 1000.0), row(8, 0.5, 800.0)], "tiny", 8, None
    )
    expected = (2000 / 500 + 2000 / 800 + 4000 / 1000) / 3600
    assert p["paths"]["progan:fp32"]["hours"] == pytest.approx(expected, abs=1e-3)
    # 16x16 not measured: extrapolated from 8x8 by the ratio of FLOPs per image
    p = tp.project_run([row(8, 1.0, 1000.0)], "tiny", 16, None)
    assert p["extrapolated_resolutions"] == [4, 16]
    by_res = p["paths"]["progan:fp32"]["hours_by_resolution"]
    assert by_res["16"] > by_res["8"] * 6000 / 4000  # 16x16 costs more per image than 8x8


def test_tiny_run_writes_json(tp, tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["--preset", "tiny", "--resolutions", "4,8", "--steps", "2", "--warmup", "0",
            "--repeats", "1", "--variants", "fp32,bf16", "--peak-seconds", "0.05",
            "--device", "cpu", "--project-resolution", "16", "--json", str(out)]  # fmt: skip
    result = tp.main(argv)
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    assert data["schema"] == "progan-throughput/1"
    for key in ("date_utc", "command", "device_name", "torch", "python", "peak_tflops", "rows"):
        assert data[key], key
    assert data["command"].endswith(" ".join(argv))
    assert data["device"] == "cpu" and set(data["peak_tflops"]) == {"fp32"}
    assert data["skipped_variants"][0]["variant"] == "bf16"
    rows = data["rows"]
    assert [(r["resolution"], r["path"], r["variant"]) for r in rows] == [
        (4, "reference", "fp32"),
        (4, "progan", "fp32"),
        (8, "reference", "fp32"),
        (8, "progan", "fp32"),
    ]
    for r in rows:
        assert r["error"] is None
        assert r["batch"] == 16 and r["steps"] == 2
        assert r["img_per_s"] > 0 and r["ms_per_step"] > 0 and r["peak_mem_gib"] > 0
        assert r["flops_per_img"] > 0 and r["tflops"] > 0 and r["fraction_of_peak"] > 0
        assert r["img_per_s"] == pytest.approx(16 * 1000 / r["ms_per_step"], rel=1e-3)
    for r in rows[1::2]:
        assert r["speedup_vs_reference"] > 0
    # progan's G step freezes D, so it counts fewer FLOPs than the reference
    assert rows[3]["flops_per_img"] < rows[2]["flops_per_img"]
    proj = data["projection"]
    assert proj["resolution"] == 16 and proj["extrapolated_resolutions"] == [16]
    assert set(proj["paths"]) == {"reference:fp32", "progan:fp32"}
    assert all(p["hours"] > 0 for p in proj["paths"].values())
    assert "img/s" in capsys.readouterr().out
