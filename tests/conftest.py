"""Shared fixtures: compose the real config (conf/) with overrides, run jobs into tmp_path."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
SEED_CSV = ROOT / "tests" / "data" / "seed_trajectory.csv"  # copy of shared/reference/


def compose(*overrides: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


@pytest.fixture
def run_job(tmp_path):
    """Compose ``overrides``, run the job into a fresh directory, return (summary, metrics)."""
    from src.train import train

    counter = iter(range(10**6))

    def _run(*overrides: str):
        out = tmp_path / f"job{next(counter)}"
        summary = train(compose(*overrides), out, overrides)
        return summary, pd.read_parquet(out / "metrics.parquet")

    return _run


def assert_same_results(a: Path, b: Path) -> int:
    """Two job directories hold the same results bit for bit: every metric column and every
    array of params.npz; returns the number of rows."""
    ma, mb = pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet")
    assert list(ma.columns) == list(mb.columns) and len(ma) == len(mb)
    for column in ma.columns:
        np.testing.assert_array_equal(ma[column].to_numpy(), mb[column].to_numpy(), err_msg=f"{a}: {column}")
    pa, pb = np.load(a / "params.npz"), np.load(b / "params.npz")
    for key in pa.files:
        np.testing.assert_array_equal(pa[key], pb[key])
    return len(ma)


def cli(*args: str, module="src.train", cwd=ROOT, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m MODULE ARGS`` as a user would."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def signal_after_first_job(sig: int, monkeypatch) -> list:
    """Once the first job's files are written, send ``sig`` to this process from inside a
    garbage-collection callback (jax registers one), where Python drops the exception the
    signal's handler raises. The returned list gets what was dropped."""
    import src.sweep.batching

    write_job, dropped, fired = src.sweep.batching.write_job, [], []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_value))

    def callback(phase, info):
        if not fired:
            fired.append(phase)
            os.kill(os.getpid(), sig)
            for _ in range(1000):  # the handler runs here, between bytecodes
                pass

    def write_then_signal(*args, **kwargs):
        summary = write_job(*args, **kwargs)
        if not fired:
            gc.callbacks.append(callback)
            try:
                gc.collect()
            finally:
                gc.callbacks.remove(callback)
        return summary

    monkeypatch.setattr(src.sweep.batching, "write_job", write_then_signal)
    return dropped


@pytest.fixture(scope="session")
def seed_trajectory() -> pd.DataFrame:
    return pd.read_csv(SEED_CSV)


# wandb is disabled in tests that do not test it (conf/train.yaml reads WANDB_MODE);
# tests of wandb pass wandb.mode=offline explicitly.
os.environ.setdefault("WANDB_MODE", "disabled")


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort): under pytest-xdist one worker starts on the
    longest test (the README's commands) while the other takes the rest, instead of that
    test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
