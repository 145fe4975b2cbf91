"""Shared fixtures of the benchmark tests: the scripts in benchmarks/ loaded by path."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(script: str, name: str) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def tp():
    """benchmarks/throughput.py as a module (its parts import from benchmarks/)."""
    yield from _load("throughput.py", "progan_bench_throughput")


@pytest.fixture(scope="module")
def db():
    """benchmarks/double_backward.py as a module."""
    yield from _load("double_backward.py", "progan_bench_double_backward")


@pytest.fixture(scope="module")
def qs():
    """benchmarks/quickstart.py as a module."""
    yield from _load("quickstart.py", "progan_bench_quickstart")


@pytest.fixture(scope="module")
def dr():
    """benchmarks/data_rate.py as a module."""
    yield from _load("data_rate.py", "progan_bench_data_rate")


@pytest.fixture(scope="module")
def ema_dyn():
    """benchmarks/ema_dynamics.py as a module."""
    yield from _load("ema_dynamics.py", "progan_bench_ema_dynamics")


@pytest.fixture(scope="module")
def ema_fid():
    """benchmarks/ema_fid.py as a module."""
    yield from _load("ema_fid.py", "progan_bench_ema_fid")
