"""benchmarks/quickstart.py reads README command 1; the command and the preset it names hold
what README and docs/RESULTS.md say about them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from progan.cli import main
from progan.data.create import make_synthetic_dataset

README = Path(__file__).resolve().parents[2] / "README.md"


def test_command_one_is_the_readme_quickstart_pipeline(qs):
    line = qs.command_one(README)
    steps = [shlex.split(s) for s in line.split("&&")]
    assert [s[:2] for s in steps] == [
        ["pip", "install"],
        ["progan", "dataset"],
        ["progan", "train"],
        ["progan", "generate"],
    ]
    create, train, generate = steps[1], steps[2], steps[3]
    assert create[2:4] == ["create", "synthetic:shapes"]
    # the benchmark finds the dataset and the run by these options: they must agree
    assert train[train.index("--data") + 1] == create[4]
    assert generate[2] == train[train.index("--outdir") + 1]
    data, run_dir = qs.run_paths(Path("/tree"), line)
    assert data == Path("/tree") / create[4] and run_dir == Path("/tree") / generate[2]
    assert train[train.index("--preset") + 1] == "quickstart"


def test_the_quickstart_training_is_what_the_docs_describe(qs, tmp_path, capsys):
    """12 kimg of minibatch 8 at lr 0.004 with the lazy penalty (every 4th D step), which
    --gp-every 1 turns back into the paper's."""
    train = shlex.split(qs.command_one(README).split("&&")[2])
    data = tmp_path / "shapes.zip"
    make_synthetic_dataset(data, count=20, resolution=32)
    argv = train[1:]
    argv[argv.index("--data") + 1] = str(data)
    argv[argv.index("--outdir") + 1] = str(tmp_path / "runs")
    assert main([*argv, "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    sched = cfg["schedule"]
    assert (sched["total_kimg"], sched["minibatch_default"], sched["minibatch"]) == (12.0, 8, {})
    assert sched["learning_rate_default"] == 0.004 and cfg["loss"]["gp_every"] == 4
    assert cfg["network"]["label_size"] == 5  # --cond on the five shape classes
    assert main([*argv, "--gp-every", "1", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["loss"]["gp_every"] == 1
