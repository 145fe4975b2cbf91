"""benchmarks/double_backward.py: a tiny CPU run's JSON, FLOPs and profile evidence (``db``:
the script, conftest.py)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_run(db, tmp_path_factory):
    path = tmp_path_factory.mktemp("db") / "out.json"
    argv = ["--cases", "tiny:8:4", "--steps", "1", "--warmup", "0", "--repeats", "1"]
    assert db.main([*argv, "--top", "60", "--threads", "1", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_json_has_device_torch_date_and_rows(tiny_run):
    assert tiny_run["device"] == "cpu" and tiny_run["torch"] and tiny_run["date_utc"]
    assert "double_backward.py" in tiny_run["command"]
    (res,) = tiny_run["results"]
    assert [r["variant"] for r in res["rows"]] == ["baseline", "native", "explicit"]
    for r in res["rows"]:
        assert r["ms_per_step_best"] > 0 and r["img_per_s"] > 0 and r["cpu_ms_per_step_best"] > 0
        assert r["loss_abs_diff"] < 1e-5 and r["grad_rel_l2"] < 1e-4


def test_same_flops_different_autograd_nodes(tiny_run):
    rows = {r["variant"]: r for r in tiny_run["results"][0]["rows"]}
    flops = {v: r["flops_per_step"] for v, r in rows.items()}
    assert flops["baseline"] > 0
    assert flops["explicit"] == pytest.approx(flops["baseline"], rel=1e-3)
    nodes = {v: set(r["profile"]["autograd_nodes"]) for v, r in rows.items()}
    assert {"ConvolutionBackwardBackward0", "AvgPool2DBackward0"} <= nodes["baseline"]
    assert "AvgPool2DBackward0" not in nodes["native"]
    assert "ConvolutionBackwardBackward0" in nodes["native"]
    assert not any(n.startswith("Convolution") for n in nodes["explicit"])
    assert "_Conv2dInputGradBackward" in nodes["explicit"]


def test_variant_context_restores_the_network(db):
    import torch

    from progan.nn import discriminator as disc_module

    case = db.Case("tiny:8:2", torch.device("cpu"))
    saved = disc_module.downsample2x
    with db.variant_context(case.D, "baseline"):
        assert disc_module.downsample2x is db._avg_pool_downsample
    with db.variant_context(case.D, "explicit"):
        assert case.D.from_rgb[0].impl == "explicit"
    assert disc_module.downsample2x is saved and case.D.from_rgb[0].impl == "native"
