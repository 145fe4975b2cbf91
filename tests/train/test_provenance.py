"""run.json: one record per training session (start and every resume), written by rank 0."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys

import pytest
import torch
from micro import make_micro_config

import progan
from progan.train import provenance
from progan.train.api import train


def sessions(run):
    return json.loads((run / provenance.RUN_NAME).read_text())["sessions"]


def test_a_run_records_its_session_and_a_resume_appends_one(shapes16, tmp_path, monkeypatch):
    cfg = make_micro_config(shapes16, tmp_path, phase_kimg=0.064, total_kimg=1.0, tick_kimg=0.064)
    monkeypatch.setattr(sys, "argv", ["progan", "train", "--data", str(shapes16)])
    run = train(cfg, progress=False, max_ticks=1)
    (first,) = sessions(run)
    assert first["command"] == ["progan", "train", "--data", str(shapes16)]
    assert first["world_size"] == 1 and first["resumed_from"] is None
    assert first["devices"] == [
        {
            "rank": 0,
            "host": first["hostname"],
            "device": provenance.device_name(torch.device("cpu")),
        }
    ]
    assert first["devices"][0]["device"].startswith("cpu")
    assert first["torch"] == torch.__version__ and first["progan"] == progan.__version__
    assert first["python"] == platform.python_version()
    assert first["started"].endswith("+00:00")  # UTC

    monkeypatch.setattr(sys, "argv", ["progan", "train", "--resume", str(run)])
    train(resume=run, progress=False, max_ticks=1)
    again, resumed = sessions(run)
    assert again == first  # kept as it was
    assert resumed["command"] == ["progan", "train", "--resume", str(run)]
    assert resumed["resumed_from"] == str(run / "state-000000.064.pt")
    assert resumed["started"] >= first["started"]


class FakeDist:
    """Rank ``rank`` of a 2-rank job whose other rank runs a GPU on another host."""

    world_size = 2

    def __init__(self, rank):
        self.rank = rank
        self.is_main = rank == 0
        self.gathered = []

    def all_gather_object(self, obj, what=""):
        self.gathered.append(obj)
        other = {"rank": 1 - self.rank, "host": "node-b", "device": "cuda:0 Fake GPU"}
        return [obj, other] if self.rank == 0 else [other, obj]


def test_every_rank_names_its_device_and_rank_zero_writes(tmp_path):
    cpu = torch.device("cpu")
    provenance.record_session(tmp_path, FakeDist(1), cpu, "2025-01-01T00:00:00+00:00")
    assert not (tmp_path / provenance.RUN_NAME).exists()  # rank 1 writes nothing
    provenance.record_session(tmp_path, FakeDist(0), cpu, "2025-01-01T00:00:00+00:00")
    (entry,) = sessions(tmp_path)
    assert entry["world_size"] == 2
    assert [d["rank"] for d in entry["devices"]] == [0, 1]
    assert entry["devices"][1] == {"rank": 1, "host": "node-b", "device": "cuda:0 Fake GPU"}
    assert entry["hostname"] == entry["devices"][0]["host"] != "node-b"


def test_an_unreadable_run_json_is_kept_aside(tmp_path):
    (tmp_path / provenance.RUN_NAME).write_text("{not json")
    provenance.append_session(tmp_path, {"started": "x"})
    assert sessions(tmp_path) == [{"started": "x"}]
    (aside,) = tmp_path.glob("run-unreadable-*.json")
    assert aside.read_text() == "{not json"


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_of_a_checkout_and_of_a_package_outside_one(tmp_path):
    repo = tmp_path / "repo"
    pkg = repo / "src" / "progan"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert provenance.git_state(pkg) == {"commit": head, "dirty": False}
    (pkg / "__init__.py").write_text("x = 1\n")
    assert provenance.git_state(pkg) == {"commit": head, "dirty": True}
    # a package inside a repository that does not track it (e.g. a venv in a project)
    other = repo / "venv" / "progan"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("")
    assert provenance.git_state(other) is None
    assert provenance.git_state(tmp_path) is None  # no repository at all
