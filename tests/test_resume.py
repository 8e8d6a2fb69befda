"""A sweep's results belong to their job: resume trusts only complete results of the same
config, a sweep directory is used by one sweep at a time, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd

from tests.conftest import ROOT, cli

BASE = ("objective=ridge", "outer_steps=5", "inner_solver.steps=20")


def _state(sweep):
    """Every file of a sweep directory and its bytes (but the lock, which names its holder)."""
    return {
        p.relative_to(sweep): p.read_bytes()
        for p in sorted(sweep.rglob("*"))
        if p.is_file() and p.name != ".sweep.lock"
    }


def test_results_of_other_settings_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "sweep"
    first = cli("-m", *BASE, "lr=0.01,0.1", f"hydra.sweep.dir={out}")
    assert first.returncode == 0, first.stderr
    before = _state(out)
    for other in (["lr=0.5,1.0"], ["lr=0.1,0.01"], ["lr=0.01,0.1", "outer_steps=6"]):
        proc = cli("-m", *BASE, *other, f"hydra.sweep.dir={out}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{out} holds results of other settings" in proc.stderr
        assert "hydra.sweep.dir" in proc.stderr and "hydra.launcher.overwrite=true" in proc.stderr
        assert _state(out) == before, other  # .hydra/, results and multirun.yaml untouched
    proc = cli("-m", *BASE, "lr=0.5,1.0", f"hydra.sweep.dir={out}")
    assert "job 0: lr 0.01 (stored) vs 0.5" in proc.stderr and "job 1: lr 0.1 (stored) vs 1.0" in proc.stderr

    # the explicit way out: the two jobs run again with the new values
    again = cli("-m", *BASE, "lr=0.5,1.0", "hydra.launcher.overwrite=true", f"hydra.sweep.dir={out}")
    assert again.returncode == 0, again.stderr
    for job, lr in (("0", 0.5), ("1", 1.0)):
        summary = json.loads((out / job / "summary.json").read_text())
        assert summary["config"]["lr"] == lr and f"lr={lr}" in summary["overrides"]
        assert len(summary["config_fingerprint"]) == 64
    assert json.loads((out / "sweep_summary.json").read_text())["resumed"] == 0
    # and the same command again resumes them: same config, same fingerprint
    resumed = cli("-m", *BASE, "lr=0.5,1.0", f"hydra.sweep.dir={out}")
    assert resumed.returncode == 0 and json.loads((out / "sweep_summary.json").read_text())["resumed"] == 2


def test_an_interrupted_batch_of_other_settings_is_not_taken_over(tmp_path):
    """A chunked batch stopped mid-run leaves job directories without results and its
    progress in .checkpoints/; a sweep of other values into that directory would take the
    directories and orphan the progress: refused, nothing touched, and the interrupted
    sweep's own command still runs there."""
    out = tmp_path / "sweep"
    assert cli("-m", *BASE, "lr=0.01,0.1", f"hydra.sweep.dir={out}").returncode == 0
    for job in ("0", "1"):  # what the interrupted batch leaves: no results, its checkpoint
        for name in ("summary.json", "metrics.parquet", "params.npz"):
            (out / job / name).unlink()
    (out / ".checkpoints").mkdir()
    (out / ".checkpoints" / "batch-0123456789abcdef.npz").write_bytes(b"progress")
    before = _state(out)
    proc = cli("-m", *BASE, "lr=0.5,1.0", f"hydra.sweep.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{out} holds an interrupted batch of other settings" in proc.stderr and "lr=0.01" in proc.stderr
    assert "hydra.launcher.overwrite=true" in proc.stderr and _state(out) == before
    own = cli("-m", *BASE, "lr=0.01,0.1", f"hydra.sweep.dir={out}")
    assert own.returncode == 0 and json.loads((out / "sweep_summary.json").read_text())["completed"] == 2


def test_two_jobs_in_one_directory_are_refused(tmp_path):
    out = tmp_path / "sweep"
    proc = cli("-m", *BASE, "lr=0.01,0.1", "hydra.sweep.subdir=same", f"hydra.sweep.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "jobs #0 (" in proc.stderr and "#1 (" in proc.stderr and f"same directory {out / 'same'}" in proc.stderr
    assert not (out / "same").exists()


def test_incomplete_or_corrupt_job_directories_are_run_again(tmp_path):
    out = tmp_path / "sweep"
    args = ("-m", *BASE, "lr=0.01,0.05,0.1,0.2", f"hydra.sweep.dir={out}")
    assert cli(*args).returncode == 0
    original = {j: pd.read_parquet(out / j / "metrics.parquet") for j in "0123"}
    summary = json.loads((out / "0" / "summary.json").read_text())
    del summary["final"]
    (out / "0" / "summary.json").write_text(json.dumps(summary))  # a summary without final
    metrics = (out / "1" / "metrics.parquet").read_bytes()
    (out / "1" / "metrics.parquet").write_bytes(metrics[: len(metrics) // 2])  # truncated
    (out / "2" / "params.npz").unlink()  # missing next to an intact summary
    (out / "2" / ".metrics.parquet.x1y2.tmp").write_bytes(b"left by a killed writer")
    untouched = (out / "3" / "summary.json").stat().st_mtime_ns

    proc = cli(*args)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    sweep = json.loads((out / "sweep_summary.json").read_text())
    assert sweep["resumed"] == 1 and sweep["batches"][0]["jobs"] == ["0", "1", "2"]
    assert (out / "3" / "summary.json").stat().st_mtime_ns == untouched
    assert not list(out.rglob("*.tmp"))
    for j in "0123":
        pd.testing.assert_frame_equal(pd.read_parquet(out / j / "metrics.parquet"), original[j], check_exact=True)


def _start(out, *extra):
    cmd = [sys.executable, "-m", "src.train", "-m", *BASE, "lr=0.01,0.1", *extra, f"hydra.sweep.dir={out}"]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_sweep_directory_in_use_is_refused_and_freed_by_any_exit(tmp_path):
    out = tmp_path / "sweep"
    first = _start(out, "outer_steps=20000")  # long enough to be running while the others start
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "multirun.yaml").exists():
        time.sleep(0.05)
    multirun = (out / "multirun.yaml").read_bytes()
    second = cli("-m", *BASE, "lr=0.5,1.0", f"hydra.sweep.dir={out}")
    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
    assert f"hydra.sweep.dir='{out}' is in use by another sweep (pid {first.pid})" in second.stderr
    assert (out / "multirun.yaml").read_bytes() == multirun  # the second one wrote nothing
    first.kill()  # kill -9: the kernel releases the lock
    first.communicate(timeout=60)
    third = cli("-m", *BASE, "lr=0.01,0.1", f"hydra.sweep.dir={out}")
    assert third.returncode == 0, third.stderr
    assert json.loads((out / "sweep_summary.json").read_text())["completed"] == 2
    assert first.returncode == -signal.SIGKILL
