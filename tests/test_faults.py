"""Every failure ends cleanly, through the real CLI: Ctrl-C, kill -9, a wandb server that
does not answer. Processes are found by a marker in their environment, which every child
(wandb's workers and services too) inherits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd

from tests.conftest import ROOT

# three groups (one batch each) of a few seconds each: a Ctrl-C lands while one runs or compiles
LONG = (
    "objective=logreg", "inner_solver=gd", "inner_solver.tol=null",
    "lr=0.01,0.02", "seed=0,1", "inner_solver.steps=20,40,60", "outer_steps=1000",
)  # fmt: skip


def _marked(marker: str) -> list[int]:
    """Pids of the live processes whose environment holds the marker."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"BILEVEL_TEST_MARK={marker}".encode() in (proc / "environ").read_bytes():
                if (proc / "stat").read_text().split(") ")[1][0] != "Z":  # not a zombie
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _start(out: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    marker = uuid.uuid4().hex
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "BILEVEL_TEST_MARK": marker, **(env or {})}
    cmd = [sys.executable, "-m", "src.train", "-m", *args, f"hydra.sweep.dir={out}"]
    proc = subprocess.Popen(  # its own process group, as a terminal's foreground job
        cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    return proc, marker


def _wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    assert condition(), "timed out"


def test_ctrl_c_ends_in_seconds_with_a_short_report_and_nothing_left_behind(tmp_path):
    out = tmp_path / "sweep"
    proc, marker = _start(out, *LONG, "wandb.mode=offline")
    _wait_for(lambda: list(out.glob("*/summary.json")))  # the first batch is done, the second starts
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    t = time.time()
    _, stderr = proc.communicate(timeout=60)
    took = time.time() - t
    assert proc.returncode == 130, stderr
    assert took < 10, f"{took:.1f} s"
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    assert len(stderr.strip().splitlines()) <= 12, stderr
    assert "Rerun the same command to resume" in stderr
    _wait_for(lambda: not _marked(marker), timeout=10)  # wandb's services notice their worker's end

    summary = json.loads((out / "sweep_summary.json").read_text())
    completed = {p.parent.name for p in out.glob("*/summary.json")}
    assert summary["interrupted"] is True and summary["completed"] + summary["diverged"] == len(completed)
    assert summary["not_run"] == 12 - len(completed) > 0
    for job in (p for p in out.iterdir() if p.is_dir() and p.name.isdigit()):
        runs = list(job.glob("wandb/offline-run-*"))
        if job.name not in completed:
            assert not runs, job.name  # unfinished jobs' runs are removed
        else:  # a completed job's run is whole, or (not written within the clean-up's 5 s) removed
            assert all(list(run.glob("*.wandb")) for run in runs), job.name
        if job.name in completed:  # complete files: all rows up to the last step or the divergence
            rows = json.loads((job / "summary.json").read_text())["rows"]
            assert len(pd.read_parquet(job / "metrics.parquet")) == rows
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"

    rerun = subprocess.run(
        [sys.executable, "-m", "src.train", "-m", *LONG, "wandb.mode=disabled", f"hydra.sweep.dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["resumed"] == len(completed) and summary["completed"] + summary["diverged"] == 12


def test_kill_9_leaves_no_process_behind(tmp_path):
    out = tmp_path / "sweep"
    proc, marker = _start(out, *LONG, "wandb.mode=offline")
    _wait_for(lambda: len(_marked(marker)) >= 4)  # the sweep, two wandb workers and their services
    proc.kill()
    proc.communicate(timeout=60)
    _wait_for(lambda: not _marked(marker), timeout=10)


def test_an_unreachable_wandb_server_falls_back_to_offline_once(tmp_path):
    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        for url in ("http://127.0.0.1:9", f"http://127.0.0.1:{silent.getsockname()[1]}"):
            out = tmp_path / url.rsplit(":", 1)[1]
            env = {"WANDB_BASE_URL": url, "WANDB_API_KEY": "x" * 40}
            t = time.time()
            proc, _ = _start(out, "objective=ridge", "lr=0.01,0.1", "outer_steps=5", "wandb.mode=online", env=env)
            _, stderr = proc.communicate(timeout=120)
            took = time.time() - t
            assert proc.returncode == 0 and "Traceback" not in stderr, stderr
            warnings = [line for line in stderr.splitlines() if line.lower().startswith(("warning", "wandb:"))]
            assert len(warnings) == 1 and f"the wandb server {url} does not answer" in warnings[0], stderr
            assert took < 40, f"{took:.1f} s"  # ~5 s of a sweep, plus at most ~10 s to find out
            for job in ("0", "1"):
                assert json.loads((out / job / "summary.json").read_text())["status"] == "completed"
                assert list((out / job / "wandb").glob("offline-run-*/*.wandb"))

        out = tmp_path / "interrupted"  # a Ctrl-C while the server is being asked
        env = {"WANDB_BASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}", "WANDB_API_KEY": "x" * 40}
        proc, marker = _start(out, "objective=ridge", "lr=0.01,0.1", "outer_steps=5", "wandb.mode=online", env=env)
        _wait_for(lambda: (out / "0" / ".hydra").exists(), timeout=120)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        t = time.time()
        _, stderr = proc.communicate(timeout=60)
        assert time.time() - t < 5 and proc.returncode == 130 and "Traceback" not in stderr, stderr
    finally:
        silent.close()
