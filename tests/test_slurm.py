"""The SLURM path against a real one-node SLURM (scripts/local_slurm.sh: Debian's slurmctld,
slurmd and munge, as root). Skipped, with the reason, only where SLURM cannot be installed
or started here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, assert_same_results, compose

SCRIPT = ROOT / "scripts" / "local_slurm.sh"
pytestmark = pytest.mark.xdist_group("slurm")  # one cluster, in one worker


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node SLURM; yields the environment that submits to it."""
    folder = tmp_path_factory.mktemp("slurm")
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"a local SLURM could not be started: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"a local SLURM could not be started: {proc.stderr.strip()[-500:]}")
    assert proc.stdout.strip() == f"export SLURM_CONF={folder / 'slurm.conf'}"
    env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=60)


def _slurm(env, *args) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60, check=True).stdout


def _train(env, *args, out: Path) -> list[str]:
    return [sys.executable, "-m", "src.train", "-m", *args, "hydra.launcher.executor=submitit_slurm",
            "hydra.launcher.partition=debug", f"hydra.sweep.dir={out}"]  # fmt: skip


def _local(tmp: Path, settings: tuple, values: list[tuple], max_batch_size: int = 1024) -> Path:
    """The same jobs run in this process, in batches of the same sizes (the reference)."""
    from src.sweep.runner import run_sweep

    entries = [(compose(*settings, *v), tmp / str(i), (*settings, *v)) for i, v in enumerate(values)]
    run_sweep(entries, sweep_dir=tmp, max_batch_size=max_batch_size)
    return tmp


def _summary(job: Path) -> dict:
    return json.loads((job / "summary.json").read_text())


def test_a_two_group_sweep_through_slurm_equals_it_run_locally(slurm, tmp_path):
    """(a) The README's "Try it on one machine" command as shown: two groups (cg, gmres), two
    batches, four jobs; the results are those of the same sweep in-process, bit for bit; a
    cluster without accounting is said once, quietly."""
    from tests.test_readme import readme_commands

    (shown,) = [c for c in readme_commands(on_a_cluster=True) if "hydra.launcher.partition=debug" in c]
    assert shown[:4] == ["python", "-m", "src.train", "-m"]
    settings = ("objective=ridge", "outer_steps=5")
    assert set(shown[4:]) == {*settings, "lr=0.01,0.1", "linear_solver=cg,gmres",
                              "hydra.launcher.executor=submitit_slurm", "hydra.launcher.partition=debug"}  # fmt: skip
    values = [(f"lr={lr}", f"linear_solver={ls}") for lr in (0.01, 0.1) for ls in ("cg", "gmres")]
    out = tmp_path / "slurm"
    proc = subprocess.run(
        [sys.executable, *shown[1:], f"hydra.sweep.dir={out}"], cwd=ROOT, env=slurm, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submitted 2 batch(es) to submitit_slurm" in proc.stderr
    assert proc.stderr.count("sacct") == 1  # said once, in one line
    assert "Bypassing" not in proc.stderr and "storage is disabled" not in proc.stderr
    local = _local(tmp_path / "local", settings, values)
    for i, (lr, ls) in enumerate(values):  # Hydra numbers jobs lr-major, as listed
        summary = _summary(out / str(i))
        assert summary["status"] == "completed" and f"{lr}" in summary["overrides"] and ls in summary["overrides"]
        assert summary["attempts"] == 1 and summary["resumed_from_step"] == 0
        assert_same_results(out / str(i), local / str(i))


# a batch of two jobs that runs for ~6 s in chunks of 50 outer steps
LONG = ("objective=logreg", "inner_solver=gd", "inner_solver.tol=null", "inner_solver.steps=1000",
        "outer_steps=500", "chunk_steps=50", "lr=0.005")  # fmt: skip


def _wait(predicate, what: str, timeout: float = 300, proc=None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended while waiting for {what}: {proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_batch_signalled_usr2_checkpoints_is_requeued_and_resumes(slurm, tmp_path):
    """(b) ``scancel -s USR2`` (what SLURM sends before a time limit and on pre-emption) in
    the middle of a batch: it checkpoints at a chunk boundary, submitit requeues it, the
    requeued job (released from SLURM's begin-time delay) resumes from the checkpoint, and
    the results equal an uninterrupted run's."""
    out = tmp_path / "slurm"
    # a periodic checkpoint tells the test that the batch is running its chunks
    # wandb offline (the default): the requeue kills its workers, which must not turn the
    # requeue into a failure of the batch
    cmd = _train(slurm, *LONG, "seed=0,1", "hydra.launcher.checkpoint_every_s=1", "wandb.mode=offline", out=out)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=slurm, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        checkpoints = out / ".checkpoints"
        _wait(lambda: list(checkpoints.glob("*.npz")) if checkpoints.exists() else False, "a checkpoint", proc=proc)
        (job_id,) = _slurm(slurm, "squeue", "-h", "-o", "%i").split()
        _slurm(slurm, "scancel", "-s", "USR2", job_id)
        _wait(lambda: _slurm(slurm, "squeue", "-h", "-j", job_id, "-o", "%T").strip() == "PENDING", "the requeue")
        (saved,) = checkpoints.glob("*.npz")
        with np.load(saved) as f:
            meta = json.loads(bytes(f["meta"]).decode())
        assert meta["reason"] == "stopped" and 0 < meta["steps"] < 500  # saved on the way out
        _slurm(slurm, "scontrol", "update", f"JobId={job_id}", "StartTime=now")  # no begin-time delay
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "failed 0" in err, err[-3000:]
    assert json.loads((out / "sweep_summary.json").read_text())["failed"] == 0
    local = _local(tmp_path / "local", LONG, [("seed=0",), ("seed=1",)])
    for i in ("0", "1"):
        summary = _summary(out / i)
        assert summary["status"] == "completed" and summary["attempts"] >= 2
        assert summary["resumed_from_step"] == meta["steps"]
        assert_same_results(out / i, local / i)
    assert not (out / ".checkpoints").exists()  # removed once the batch completed


def test_three_batches_one_at_a_time_resume_after_the_array_is_cancelled(slurm, tmp_path):
    """(c) Three batches (``max_batch_size=1``) as a SLURM array with ``array_parallelism=1``
    run one after another; ``scancel`` of the whole array once the first has finished ends
    the sweep with the others failed (not waited for forever); the same command again skips
    the completed job, resumes the rest, and every result equals a local run's."""
    out = tmp_path / "slurm"
    short = (*LONG[:3], "inner_solver.steps=300", "outer_steps=400", "chunk_steps=50")
    cmd = _train(slurm, *short, "lr=0.002,0.004,0.006", "hydra.launcher.max_batch_size=1",
                 "hydra.launcher.array_parallelism=1", out=out)  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=slurm, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    running = []
    try:

        def first_done():
            running.append(_slurm(slurm, "squeue", "-h", "-t", "RUNNING", "-o", "%i").split())
            return (out / "0" / "summary.json").exists()

        _wait(first_done, "the first batch", proc=proc)
        (array,) = {i.split("_")[0] for i in _slurm(slurm, "squeue", "-h", "-o", "%i").split()}
        _slurm(slurm, "scancel", array)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert max(len(r) for r in running) == 1  # one batch at a time
    assert "left the queue without a result" in err, err[-3000:]
    sweep = json.loads((out / "sweep_summary.json").read_text())
    assert sweep["completed"] == 1 and sweep["failed"] == 2
    again = subprocess.run(cmd, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "sweep_summary.json").read_text())["resumed"] == 1
    local = _local(tmp_path / "local", short, [(f"lr={lr}",) for lr in (0.002, 0.004, 0.006)], max_batch_size=1)
    for i in ("0", "1", "2"):
        assert _summary(out / i)["status"] == "completed"
        assert_same_results(out / i, local / i)


def test_ctrl_c_of_the_submitting_process_cancels_its_batches_and_a_rerun_resumes(slurm, tmp_path):
    """(d) Ctrl-C while the batch runs: the submitting process cancels it (its checkpoint is
    saved on SIGTERM), says so with the job id in one line, writes the sweep summary and
    exits 130; nothing is left in the queue; the same command again resumes and completes."""
    import signal as signals

    # long enough that the batch is still running when the signal arrives (a first
    # checkpoint after 1 s, then squeue, then the signal: 500 steps of 1,000 inner steps took
    # 2-3 s here); on a loaded machine the batch can still end before the signal is handled
    # (the sweep then completes, status 0): tried again in a fresh directory, up to 3 times
    for attempt in range(3):
        out = tmp_path / f"slurm{attempt}"
        cmd = _train(slurm, *LONG, "inner_solver.steps=5000", "seed=0,1", "hydra.launcher.checkpoint_every_s=1",
                     out=out)  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=slurm, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            checkpoints = out / ".checkpoints"
            _wait(lambda c=checkpoints: list(c.glob("*.npz")) if c.exists() else False, "a checkpoint", proc=proc)
            (job_id,) = _slurm(slurm, "squeue", "-h", "-o", "%i").split()
            proc.send_signal(signals.SIGINT)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        if not (proc.returncode == 0 and "completed 2" in err):
            break
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if x.startswith("Interrupted")]
    assert f"cancelled the 1 submitted batch(es) still queued or running (submitit_slurm jobs {job_id})" in line
    assert "Rerun the same command to resume" in line
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["interrupted"] is True and summary["cancelled"] == [job_id]
    _wait(lambda: not _slurm(slurm, "squeue", "-h", "-o", "%i").strip(), "the queue to empty", timeout=120)
    again = subprocess.run(cmd, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for i in ("0", "1"):
        assert _summary(out / i)["status"] == "completed"


def test_a_refused_submission_and_a_failed_batch_say_why_in_one_line(slurm, tmp_path):
    """``partition=nope``: one line from the submitting process, nothing run; a batch that
    fails on the cluster: its error's last line, as a local sweep prints it."""
    bad = [*_train(slurm, "objective=ridge", "outer_steps=2", "seed=0,1", out=tmp_path / "a")]
    bad[bad.index("hydra.launcher.partition=debug")] = "hydra.launcher.partition=nope"
    proc = subprocess.run(bad, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("Error")]
    assert "submitit_slurm refused the batches: sbatch: error: invalid partition specified: nope" in line
    assert line.endswith("Nothing was run.")

    module = tmp_path / "mod" / "broken_objective.py"
    module.parent.mkdir()
    module.write_text(
        "import numpy as np\nfrom src.objectives import Objective\n\n"
        "def make():\n"
        "    def inner(w, theta, d):\n        raise ValueError('this objective cannot be traced')\n"
        "    return Objective(data=lambda seed: {'theta0': np.zeros(()), 'w0': np.zeros(())}, inner_loss=inner,\n"
        "                     outer_loss=lambda w, theta, d: w, randomness='')\n"
    )
    env = {**slurm, "PYTHONPATH": f"{module.parent}:{ROOT}"}
    cmd = _train(slurm, "objective._target_=broken_objective.make", "~objective.theta_init", "~objective.w_init",
                 "outer_steps=2", "seed=0,1", out=tmp_path / "b")  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "failed: ValueError: this objective cannot be traced" in proc.stderr, proc.stderr[-3000:]
