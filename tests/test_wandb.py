"""wandb: one offline run per job, read back from its .wandb file; failures lose nothing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests import wandb_file
from tests.conftest import cli, compose


def _run_file(job_dir):
    files = list((job_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, files  # exactly one run per job directory
    return files[0]


def test_batched_sweep_logs_one_run_per_job(tmp_path):
    out = tmp_path / "sweep"
    args = (
        "-m",
        "objective=ridge",
        "lr=0.05,0.1",
        "seed=0,1",
        "outer_steps=6",
        "wandb.mode=offline",
        f"hydra.sweep.dir={out}",
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = cli(*args, env={"TMPDIR": str(temp)})
    assert proc.returncode == 0, proc.stderr
    assert not list(temp.iterdir())  # no tmp*wandb-* folder left behind by the run's processes
    jobs = sorted((p for p in out.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert len(jobs) == 4
    ids = set()
    for job in jobs:
        f = _run_file(job)
        m = pd.read_parquet(job / "metrics.parquet")
        history = wandb_file.history(f)
        assert [h["step"] for h in history] == list(m["step"])
        for col in ("outer_loss", "hypergrad_norm", "theta", "val_mse"):
            np.testing.assert_allclose([h[col] for h in history], m[col], rtol=1e-6)
        config = wandb_file.config(f)
        summary = json.loads((job / "summary.json").read_text())
        assert config["lr"] == summary["config"]["lr"] and config["seed"] == summary["seed"]
        assert config["inner_solver.steps"] == 100 and config["linear_solver.name"] == "cg"
        assert f"lr={config['lr']}" in config["overrides"]
        info = wandb_file.run_info(f)
        assert info["group"] == "sweep" and info["job_type"] == "ridge"
        ids.add(info["id"])
        final = wandb_file.summary(f)
        assert final["status"] == "completed"
        assert final["final/outer_loss"] == pytest.approx(m["outer_loss"].iloc[-1], rel=1e-6)
    assert len(ids) == 4

    # resume: a job rerun replaces its run; still exactly one per job directory
    (jobs[1] / "summary.json").unlink()
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    for job in jobs:
        _run_file(job)
    assert wandb_file.run_info(_run_file(jobs[1]))["id"] == [i for i in ids if i.endswith("-1")][0]


def test_rows_between_evaluations_log_only_what_they_have(tmp_path):
    """A stochastic run with eval_every=4: wandb gets every step's own figures, and the
    evaluated columns at rows 0, 4, 8 only (not NaN in between)."""
    out = tmp_path / "sweep"
    proc = cli(
        "-m", "objective=logreg", "method=soba", "batch_size=32", "outer_steps=8", "eval_every=4", "seed=1,2",
        "wandb.mode=offline", f"hydra.sweep.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = pd.read_parquet(out / "0" / "metrics.parquet")
    history = wandb_file.history(_run_file(out / "0"))
    assert [h["step"] for h in history] == list(range(9))
    assert [h["step"] for h in history if "outer_loss" in h] == [0, 4, 8]
    np.testing.assert_allclose([h["outer_loss"] for h in history if "outer_loss" in h], m["outer_loss"].dropna())
    np.testing.assert_allclose([h["oracle_inner"] for h in history], m["oracle_inner"])


def test_wandb_failure_keeps_local_outputs(tmp_path, monkeypatch, capsys):
    import wandb

    from src.train import train

    def broken(*args, **kwargs):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "init", broken)
    summary = train(compose("outer_steps=5", "wandb.mode=offline"), tmp_path / "job")
    assert summary["status"] == "completed"
    assert len(pd.read_parquet(tmp_path / "job" / "metrics.parquet")) == 6
    err = capsys.readouterr().err
    assert err.count("Warning: wandb failed") == 1 and "wandb is down" in err


def test_wandb_failure_in_a_batched_sweep_keeps_local_outputs(tmp_path):
    out = tmp_path / "sweep"
    (out / "1").mkdir(parents=True)
    (out / "1" / "wandb").write_text("not a directory")  # wandb cannot create its folder here
    proc = cli("-m", "lr=0.01,0.05", "outer_steps=5", "wandb.mode=offline", f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("Warning: wandb failed for 1 run(s)") == 1
    for job in ("0", "1"):
        assert json.loads((out / job / "summary.json").read_text())["status"] == "completed"
    _run_file(out / "0")


def test_runs_opened_ahead_are_written_or_discarded(tmp_path):
    """Runs are opened before their jobs finish; a job that never completes (its batch
    failed or was interrupted) leaves no wandb folder, the others a complete run."""
    from src.report.wandb_runs import WandbWriter

    writer = WandbWriter({"mode": "offline", "group": "g"}, workers=2, open_ahead=2)
    jobs = [tmp_path / str(i) for i in range(4)]
    lrs = [0.1, 0.2, 0.3, 0.4]
    writer.plan([(job, {"lr": lr}, "toy") for job, lr in zip(jobs[:3], lrs, strict=False)])
    columns = {"step": np.arange(3), "outer_loss": np.array([3.0, 2.0, 1.0]), "converged": np.ones(3, bool)}
    summary = {
        "status": "completed",
        "final": {"outer_loss": 1.0},
        "best": {"step": 2, "outer_loss": 1.0},
        "run_s": 0.1,
        "compile_s": 1.0,
    }
    for i in (0, 2, 3):  # job 2 is opened once job 0 is written; job 3 was not planned
        writer.submit(jobs[i], {"lr": lrs[i]}, columns, summary, job_type="toy")
    writer.close()
    assert not writer.errors
    assert not (jobs[1] / "wandb").exists()
    for i in (0, 2, 3):
        f = _run_file(jobs[i])
        assert [h["outer_loss"] for h in wandb_file.history(f)] == [3.0, 2.0, 1.0]
        assert [h["converged"] for h in wandb_file.history(f)] == [1, 1, 1]
        assert wandb_file.config(f)["lr"] == lrs[i] and wandb_file.summary(f)["final/outer_loss"] == 1.0


def test_a_killed_worker_is_a_wandb_failure_not_an_error(tmp_path):
    """A requeue (or the OOM killer) that kills the wandb workers: ``close`` says so in one
    warning and returns, so the sweep's own outcome (a requeue's exit) is what is reported."""
    from src.report.wandb_runs import WandbWriter

    writer = WandbWriter({"mode": "offline", "group": "g"}, workers=1)
    writer.plan([(tmp_path / "0", {"lr": 0.1}, "toy")])
    for pool in writer.pools:
        for process in list(pool._processes.values()):
            process.kill()
            process.join()
    writer.close()  # would raise BrokenProcessPool
    assert writer.errors and "BrokenProcessPool" in writer.errors[-1]
    assert writer.temp_dir is None


def test_a_wandb_error_is_reported_in_one_short_line():
    """A non-wandb HTTP server on the wandb URL answers with a page of HTML: the warning
    quotes its first line only."""
    from src.report.wandb_runs import _error

    page = "\n".join(["", "<!DOCTYPE html>", "<html>", *["<p>" + "x" * 300 + "</p>"] * 15, "</html>"])
    said = _error(RuntimeError(page))
    assert said == "RuntimeError: <!DOCTYPE html>" and "\n" not in _error(RuntimeError("a" * 500))
    assert len(_error(RuntimeError("a" * 500))) <= 230
