"""benchmarks/scaling.py: a tiny 1- and 2-rank run on the CPU writes the table's JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"
TEARDOWN_ABORT = "terminate called without an active exception"


@pytest.mark.skipif(
    not torch.distributed.is_available() or sys.platform == "win32",
    reason="needs torch.distributed with gloo on POSIX",
)
def test_one_and_two_ranks_on_the_cpu(tmp_path):
    out = tmp_path / "scaling.json"
    cmd = [
        sys.executable, str(SCRIPT), "--ranks", "1,2", "--preset", "tiny", "--resolutions",
        "8,16", "--batch", "8", "--warmup", "1", "--steps", "2", "--metrics", "swd,ms-ssim",
        "--metrics-num", "32", "--device", "cpu", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and TEARDOWN_ABORT in proc.stderr:
        # Seen once (2026-12-02, clean-clone CI run under load): a rank aborted in C++ thread
        # teardown at exit, after its work. Known open flake (docs/RELIABILITY.md); one retry,
        # and a second failure of any kind still fails the test.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["schema"] == "progan-scaling/1" and result["backend"] == "gloo"
    assert result["torch"] == torch.__version__
    rows = result["rows"]
    assert [(r["ranks"], r["resolution"]) for r in rows] == [(1, 8), (1, 16), (2, 8), (2, 16)]
    assert all(r["global_batch"] == 8 and r["img_per_s"] > 0 for r in rows)
    assert [r["speedup_vs_first"] for r in rows[:2]] == [1.0, 1.0]
    # SWD from 8x8, MS-SSIM from 16x16: both rows time the metrics, with 1 and 2 ranks
    assert all(r["metrics_s"] > 0 and r["metrics_first_s"] > 0 for r in rows)
    assert "ranks" in proc.stdout and "img/s" in proc.stdout  # the table
