"""python -m src.aggregate on real small sweeps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from src.aggregate import load_runs, load_steps, summarize
from tests.conftest import cli


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agg")
    ridge = tmp / "ridge"
    proc = cli("-m", "objective=ridge", "lr=0.05,0.2", "seed=0,1,2", "outer_steps=5", f"hydra.sweep.dir={ridge}")
    assert proc.returncode == 0, proc.stderr
    toy = tmp / "toy"
    proc = cli("-m", "lr=0.05,1e30", "seed=0,1", "outer_steps=5", f"hydra.sweep.dir={toy}")
    assert proc.returncode == 0, proc.stderr
    return ridge, toy


def test_means_stds_counts_match_pandas(sweeps):
    ridge, _ = sweeps
    rows = []
    for s in ridge.glob("*/summary.json"):
        summary = json.loads(s.read_text())
        rows.append({"lr": summary["config"]["lr"], "outer_loss": summary["final"]["outer_loss"]})
    expected = pd.DataFrame(rows).groupby("lr")["outer_loss"].agg(["mean", "std", "count"])

    runs = load_runs(ridge)
    assert len(runs) == 6 and set(runs["seed"]) == {0, 1, 2}
    table = summarize(runs, ["outer_loss", "val_mse"]).set_index("lr")
    for lr in (0.05, 0.2):
        assert table.loc[lr, "outer_loss_mean"] == pytest.approx(expected.loc[lr, "mean"], rel=1e-12)
        assert table.loc[lr, "outer_loss_std"] == pytest.approx(expected.loc[lr, "std"], rel=1e-12)
        assert table.loc[lr, "outer_loss_count"] == 3
    assert table["outer_loss_std"].gt(0).all()  # seeds really differ
    assert list(table.index) == sorted(table.index, key=lambda lr: table.loc[lr, "outer_loss_mean"])  # best first


def test_diverged_jobs_are_counted_apart(sweeps):
    _, toy = sweeps
    runs = load_runs(toy)
    assert (runs["status"] == "diverged").sum() == 2
    everything = summarize(runs, ["outer_loss"], by=[])
    assert everything.loc[0, "jobs"] == 4 and everything.loc[0, "diverged"] == 2
    assert everything.loc[0, "outer_loss_count"] == 2
    completed = runs[runs["status"] == "completed"]["outer_loss"]
    assert everything.loc[0, "outer_loss_mean"] == pytest.approx(completed.mean())
    by_lr = summarize(runs, ["outer_loss"]).set_index("lr")
    assert by_lr.loc[1e30, "outer_loss_count"] == 0 and np.isnan(by_lr.loc[1e30, "outer_loss_mean"])
    assert by_lr.loc[1e30, "diverged"] == 2
    steps = load_steps(toy)
    for job, g in steps.groupby("job"):
        summary = json.loads((toy / job / "summary.json").read_text())
        assert len(g) == summary["rows"]  # a diverged job keeps its rows up to the divergence


def test_cli_writes_tables_and_figures(sweeps):
    ridge, _ = sweeps
    proc = cli(str(ridge), "--metric", "outer_loss", "--metric", "val_mse", "--plot", module="src.aggregate")
    assert proc.returncode == 0, proc.stderr
    assert "± " in proc.stdout and "6 jobs: 6 completed" in proc.stdout
    csv = pd.read_csv(ridge / "results.csv")
    assert {"lr", "outer_loss_mean", "outer_loss_std", "outer_loss_count", "val_mse_mean", "diverged"} <= set(csv)
    assert "\\pm" in (ridge / "results.tex").read_text()
    assert "outer_loss" in (ridge / "results.md").read_text()
    for name in ("plot_outer_loss_steps.png", "plot_outer_loss_vs_lr.png"):
        assert (ridge / name).stat().st_size > 5000


def test_cli_unknown_metric_is_a_clear_error(sweeps):
    ridge, _ = sweeps
    proc = cli(str(ridge), "--metric", "nope", module="src.aggregate")
    assert proc.returncode == 2 and "unknown --metric nope" in proc.stderr and "Traceback" not in proc.stderr
