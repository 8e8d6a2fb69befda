"""Beyond one process: batches as submitit jobs, pre-emption and requeue, the optuna sweeper."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import cli, compose, signal_after_first_job
from tests.test_launcher import _compare_metrics, _jobs, _multirun

SWEEP = ("objective=ridge", "lr=0.05,0.2", "seed=0,1", "outer_steps=8", "inner_solver.steps=20")


def test_submitit_local_equals_in_process(tmp_path):
    record = tmp_path / "returns.jsonl"
    callback = (
        "+hydra.callbacks.record._target_=tests.callbacks.RecordReturns",
        f"+hydra.callbacks.record.path={record}",
    )
    submitit = ("hydra.launcher.executor=submitit_local", "hydra.launcher.max_batch_size=2")
    sub, proc = _multirun(tmp_path, "submitit", *SWEEP, *submitit, *callback)
    local, _ = _multirun(tmp_path, "local", *SWEEP, "hydra.launcher.max_batch_size=2")
    summary = json.loads((sub / "sweep_summary.json").read_text())
    assert summary["executor"] == "submitit_local" and summary["completed"] == 4
    # ridge's data depend on the seed: a batch takes both learning rates of one seed (they
    # share its data and its key) rather than one job of each seed
    assert [b["jobs"] for b in summary["batches"]] == [["0", "2"], ["1", "3"]]
    for batch in summary["batches"]:  # each batch ran as its own submitit job
        assert list((sub / ".submitit" / batch["submitit_job_id"]).glob("*_result.pkl"))
    for a, b in zip(_jobs(sub), _jobs(local), strict=True):
        _compare_metrics(a, b, rtol=1e-6)
        for f in ("config.yaml", "overrides.yaml"):
            assert (a / ".hydra" / f).read_bytes() == (b / ".hydra" / f).read_bytes()
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert sa["status"] == sb["status"] == "completed" and sa["batch"]["size"] == 2
        np.testing.assert_array_equal(np.load(a / "params.npz")["theta"], np.load(b / "params.npz")["theta"])
    rows = sorted((json.loads(line) for line in record.read_text().splitlines()), key=lambda r: int(r["num"]))
    assert [r["status"] for r in rows] == ["COMPLETED"] * 4
    for r in rows:
        assert r["return_value"] == json.loads((sub / r["num"] / "summary.json").read_text())["final"]["outer_loss"]


def _entries(tmp_path, n=4):
    lrs = (0.05, 0.1, 0.15, 0.2)[:n]
    return [
        (compose(*ovs), tmp_path / str(i), ovs)
        for i, ovs in enumerate(("objective=ridge", f"lr={lr}", "outer_steps=6") for lr in lrs)
    ]


def test_interrupted_batch_leaves_no_partial_results_and_resumes(tmp_path, monkeypatch):
    """A batch interrupted while writing (pre-emption) leaves complete jobs and jobs with no
    result files; the rerun skips the complete ones and ends where an uninterrupted run does."""
    import src.sweep.record
    from src.sweep.runner import run_sweep

    entries = _entries(tmp_path / "killed")
    reference = _entries(tmp_path / "reference")
    run_sweep(reference, sweep_dir=tmp_path / "reference")
    calls = {"n": 0}
    write_params = src.sweep.record.write_params

    def killed_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("pre-empted")  # what SIGTERM becomes in-process
        return write_params(*args, **kwargs)

    monkeypatch.setattr(src.sweep.record, "write_params", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(entries, sweep_dir=tmp_path / "killed")
    names = ("metrics.parquet", "params.npz", "summary.json")
    for i in (0, 1):
        assert all((tmp_path / "killed" / str(i) / n).exists() for n in names)
    for i in (2, 3):  # job 2 was interrupted between its metrics and its params
        assert not any((tmp_path / "killed" / str(i) / n).exists() for n in names)

    monkeypatch.setattr(src.sweep.record, "write_params", write_params)
    mtime = (tmp_path / "killed" / "0" / "metrics.parquet").stat().st_mtime_ns
    run_sweep(entries, sweep_dir=tmp_path / "killed")
    summary = json.loads((tmp_path / "killed" / "sweep_summary.json").read_text())
    assert summary["resumed"] == 2 and summary["batches"][0]["jobs"] == ["2", "3"]
    assert (tmp_path / "killed" / "0" / "metrics.parquet").stat().st_mtime_ns == mtime
    for i in range(4):
        _compare_metrics(tmp_path / "killed" / str(i), tmp_path / "reference" / str(i), rtol=1e-6)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_preempted_submitit_batch_is_requeued_and_completes(tmp_path):
    """USR2 (what SLURM sends before a time limit or on pre-emption) makes submitit call the
    batch's checkpoint and requeue it; the requeued batch completes every job."""
    from hydra.core.singleton import Singleton

    from src.sweep.executors import BatchTask, make_executor
    from src.sweep.runner import run_sweep

    options = {"submitit_folder": str(tmp_path / ".submitit" / "%j"), "max_num_timeout": 2, "timeout_min": 10}
    executor = make_executor("submitit_local", options)
    entries = _entries(tmp_path / "sweep")
    job = executor.submit(BatchTask(run_sweep, entries, tmp_path / "sweep", Singleton.get_state()))
    deadline = time.time() + 120
    while "batch of 4 jobs" not in (job.stdout() or ""):  # printed once submitit handles signals
        assert time.time() < deadline, "the submitit job did not start"
        time.sleep(0.05)
    (task,) = _children(int(job.job_id))  # the controller's one task: the batch's process
    os.kill(task, signal.SIGUSR2)  # what SLURM sends before a time limit or on pre-emption
    results = job.result()
    log = job.stdout()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log and log.count("batch of 4 jobs") == 2
    reference = _entries(tmp_path / "reference")
    expected = run_sweep(reference, sweep_dir=tmp_path / "reference")
    np.testing.assert_allclose(results, expected, rtol=1e-6)
    for i in range(4):
        assert json.loads((tmp_path / "sweep" / str(i) / "summary.json").read_text())["status"] == "completed"
        _compare_metrics(tmp_path / "sweep" / str(i), tmp_path / "reference" / str(i), rtol=1e-6)


def test_a_requeue_exit_that_python_drops_still_ends_the_batch(tmp_path, monkeypatch):
    """submitit's USR2 handler checkpoints, requeues and exits (SystemExit); when it runs
    inside a gc callback Python drops that exit, and the batch would finish instead of
    being requeued. The batch keeps the handler but records it: the exit comes back before
    the next job's files are written, and the handler is restored after."""
    from hydra.core.singleton import Singleton

    from src.sweep.executors import BatchTask
    from src.sweep.runner import run_sweep

    def requeue(signum, frame):  # what submitit's local requeue does once checkpointed
        raise SystemExit(3)

    previous = signal.signal(signal.SIGUSR2, requeue)
    dropped = signal_after_first_job(signal.SIGUSR2, monkeypatch)
    try:
        with pytest.raises(SystemExit) as exit_info:
            BatchTask(run_sweep, _entries(tmp_path), tmp_path, Singleton.get_state())()
        assert signal.getsignal(signal.SIGUSR2) is requeue
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert exit_info.value.code == 3 and [type(e) for e in dropped] == [SystemExit]
    assert json.loads((tmp_path / "0" / "summary.json").read_text())["status"] == "completed"
    for i in (1, 2, 3):  # the requeued batch runs these
        assert not (tmp_path / str(i) / "summary.json").exists()


def test_slurm_options_reach_the_sbatch_script(tmp_path, monkeypatch):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from src.sweep.executors import make_executor
    from tests.conftest import CONF

    overrides = [
        "hydra.launcher.executor=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=240",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.cpus_per_task=16",
        "hydra.launcher.mem_gb=64",
        "hydra.launcher.array_parallelism=8",
        "hydra.launcher.account=lab",
        "hydra.launcher.setup=[module load cuda]",
        f"hydra.sweep.dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["executor"].value == "submitit_slurm"
    options = {k: v for k, v in launcher.items() if k not in ("_target_", "max_batch_size", "resume", "executor")}
    fake = tmp_path / "bin"  # submitit's SLURM executor wants srun on the PATH; nothing runs it
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    executor = make_executor("submitit_slurm", options)
    script = executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=240",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=64GB",
        "#SBATCH --account=lab",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --nodes=1",
        "#SBATCH --signal=USR2@120",
        "module load cuda",
    ):
        assert line in script, line
    assert executor._executor.parameters["array_parallelism"] == 8
    assert executor._executor.max_num_timeout == 3


def test_executor_needs_a_batch_aware_task():
    from hydra_plugins.bilevel_launcher.batched_launcher import BatchedLauncher

    launcher = BatchedLauncher(executor="submitit_slurm")
    launcher.setup(hydra_context=None, task_function=lambda cfg: 0.0, config=None)
    with pytest.raises(ValueError, match="executor=submitit_slurm runs batches of a batch-aware task"):
        launcher.launch([["lr=0.1"]], 0)


def test_bad_executor_is_an_error_listing_the_choices(tmp_path):
    proc = cli("-m", "lr=0.1", "hydra.launcher.executor=slurm", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode != 0
    assert "hydra.launcher.executor" in proc.stderr and "submitit_slurm" in proc.stderr


def test_the_optuna_study_as_it_comes_finishes_with_diverged_trials_told_as_failed(tmp_path):
    """study=optuna_logreg exactly as shipped (48 trials, 16 per round): trials whose run
    diverged are told to optuna as failed, once; the study goes on and reports the best of
    the completed trials; each round is one vmapped program."""
    probe = tmp_path / "told.jsonl"
    out = tmp_path / "optuna"
    proc = cli(
        "-m",
        "study=optuna_logreg",
        f"hydra.sweep.dir={out}",
        module="tests.optuna_probe",
        env={"OPTUNA_PROBE": str(probe)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    told = [json.loads(line) for line in probe.read_text().splitlines()]
    assert sorted(row["number"] for row in told) == list(range(48))  # each trial told once
    best = None
    for row in told:
        job = out / str(row["number"])  # trials are asked, and jobs numbered, in the same order
        summary = json.loads((job / "summary.json").read_text())
        assert summary["config"]["lr"] == row["params"]["lr"]
        assert summary["config"]["inner_solver"]["lr"] == row["params"]["inner_solver.lr"]
        assert summary["batch"]["size"] == 16  # each round of n_jobs trials: one vmapped program
        if summary["status"] == "diverged":
            assert row["state"] == "TrialState.FAIL" and row["values"] is None
        else:
            assert row["state"] == "TrialState.COMPLETE"
            assert row["values"] == [summary["final"]["outer_loss"]]
            assert row["values"][0] == pd.read_parquet(job / "metrics.parquet")["outer_loss"].iloc[-1]
            best = min(best or row, row, key=lambda r: r["values"][0])
    sweep = json.loads((out / "sweep_summary.json").read_text())
    assert sweep["launches"] == 3 and sweep["jobs"] == 48 and sweep["compiled_programs"] == 1
    assert sweep["diverged"] > 0 and sweep["completed"] + sweep["diverged"] == 48  # measured: diverged trials
    results = yaml.safe_load((out / "optimization_results.yaml").read_text())
    assert results["best_value"] == best["values"][0] and results["best_params"] == best["params"]
