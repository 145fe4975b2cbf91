"""`progan train --dry-run` with the fast-step options: --gp-every, --channels-last, --compile."""

import json

import numpy as np

from progan.cli import main
from progan.data.dataset import DatasetWriter


def test_fast_step_options_reach_the_config(tmp_path, capsys):
    data = tmp_path / "d"
    with DatasetWriter(data, 32, 3, source="test", source_kind=None) as w:
        for i in range(4):
            w.add(np.full((3, 32, 32), i * 40, np.uint8))
    assert main(["train", "--data", str(data), "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["loss"]["gp_every"] == 1 and not cfg["channels_last"] and not cfg["compile"]
    argv = ["--gp-every", "4", "--channels-last", "--compile"]
    assert main(["train", "--data", str(data), *argv, "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["loss"]["gp_every"] == 4 and cfg["channels_last"] and cfg["compile"]
    assert main(["train", "--data", str(data), "--gp-every", "0", "--dry-run"]) == 2
