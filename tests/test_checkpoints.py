"""Mid-batch checkpoints (src/sweep/checkpoints.py): a batch run in chunks and stopped part-way
goes on from its last chunk boundary, and ends bit for bit where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT, assert_same_results, compose

# two jobs, one batch, 4 chunks of 10 steps; gd with fixed steps
SETTINGS = ("objective=logreg", "inner_solver=gd", "inner_solver.tol=null", "inner_solver.steps=20",
            "outer_steps=40", "chunk_steps=10")  # fmt: skip


SLOW = (*SETTINGS[:3], "inner_solver.steps=2000", *SETTINGS[4:])  # ~0.4 s a chunk: time to kill it


def _entries(folder, settings=SETTINGS, lrs=(0.05, 0.1)):
    return [(compose(*settings, f"lr={lr}"), folder / str(i), (*settings, f"lr={lr}")) for i, lr in enumerate(lrs)]


def _same(a, b):
    """Bit for bit, and all 41 rows."""
    assert assert_same_results(a, b) == 41


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from src.sweep.runner import run_sweep

    out = tmp_path_factory.mktemp("reference")
    run_sweep(_entries(out), sweep_dir=out)
    return out


def _stopped_in_chunk(k: int, out, monkeypatch):
    """Run the sweep into ``out`` with a Ctrl-C while chunk ``k`` runs; returns the checkpoint."""
    import src.sweep.batching
    from src.sweep.runner import run_sweep

    waits, wait_ready = [], src.sweep.batching.wait_ready

    def stopped(tree):
        waits.append(1)
        if len(waits) == k:
            raise KeyboardInterrupt("Ctrl-C")
        return wait_ready(tree)

    with monkeypatch.context() as patch:
        patch.setattr(src.sweep.batching, "wait_ready", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_sweep(_entries(out), sweep_dir=out)
    (saved,) = (out / ".checkpoints").glob("*.npz")
    return saved


def test_a_batch_stopped_mid_run_resumes_from_its_checkpoint_bit_for_bit(tmp_path, reference, monkeypatch):
    """Ctrl-C (or SIGTERM) during the third chunk: the state after two chunks is saved, no
    job has result files; the rerun loads it, runs the last two chunks only, and every
    metric and parameter equals the uninterrupted run's; the checkpoint is then removed."""
    import src.sweep.batching
    from src.sweep.runner import run_sweep

    out = tmp_path / "sweep"
    saved = _stopped_in_chunk(3, out, monkeypatch)
    assert not (out / "0" / "summary.json").exists() and not (out / "1" / "metrics.parquet").exists()
    with np.load(saved) as f:
        meta = json.loads(bytes(f["meta"]).decode())
    assert meta == {"chunks": 2, "steps": 20, "rows": 2, "attempts": 1, "reason": "stopped"}

    waits, wait_ready = [], src.sweep.batching.wait_ready
    monkeypatch.setattr(src.sweep.batching, "wait_ready", lambda tree: (waits.append(1), wait_ready(tree))[1])
    run_sweep(_entries(out), sweep_dir=out)
    assert len(waits) == 3  # the last two chunks and the result, not the first two
    for i in ("0", "1"):
        summary = json.loads((out / i / "summary.json").read_text())
        assert summary["status"] == "completed"
        assert summary["attempts"] == 2 and summary["resumed_from_step"] == 20
        _same(out / i, reference / i)
        assert json.loads((reference / i / "summary.json").read_text())["attempts"] == 1
    assert not (out / ".checkpoints").exists()


def test_a_corrupt_checkpoint_is_set_aside_and_the_batch_starts_over(tmp_path, reference, monkeypatch):
    from src.sweep.runner import run_sweep

    out = tmp_path / "sweep"
    saved = _stopped_in_chunk(2, out, monkeypatch)
    saved.write_bytes(saved.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=f"could not be used .*moved to {saved.name}.unreadable"):
        run_sweep(_entries(out), sweep_dir=out)
    for i in ("0", "1"):
        summary = json.loads((out / i / "summary.json").read_text())
        assert summary["attempts"] == 2 and summary["resumed_from_step"] == 0
        _same(out / i, reference / i)
    assert not (out / ".checkpoints").exists()  # set aside, then removed with the rest


def test_periodic_checkpoints_bound_what_kill_9_loses(tmp_path):
    """``hydra.launcher.checkpoint_every_s``: a sweep killed with SIGKILL (no clean-up at
    all) after its first periodic checkpoint resumes from that step when run again."""
    from src.sweep.runner import run_sweep

    reference = tmp_path / "reference"
    run_sweep(_entries(reference, SLOW), sweep_dir=reference)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "src.train", "-m", *SLOW, "lr=0.05,0.1", "hydra.launcher.checkpoint_every_s=0.001",
           "wandb.mode=disabled", f"hydra.sweep.dir={out}"]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list((out / ".checkpoints").glob("*.npz")):
        assert proc.poll() is None and time.time() < deadline, (
            proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        )
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for i in ("0", "1"):
        summary = json.loads((out / i / "summary.json").read_text())
        assert summary["attempts"] == 2 and summary["resumed_from_step"] in (10, 20, 30)
        _same(out / i, reference / i)


def test_a_checkpoint_of_other_settings_is_not_used_and_is_cleaned_up(tmp_path, monkeypatch):
    """Stopped mid-batch, then run again into the same directory with other values (no job
    had results, so nothing is refused): the new jobs start from step 0 (the checkpoint
    belongs to other fingerprints), and once they all have results the stale one is gone."""
    from src.sweep.runner import run_sweep

    out = tmp_path / "sweep"
    _stopped_in_chunk(2, out, monkeypatch)
    other = _entries(out, lrs=(0.02, 0.03))
    run_sweep(other, sweep_dir=out)
    for i in ("0", "1"):
        summary = json.loads((out / i / "summary.json").read_text())
        assert summary["attempts"] == 1 and summary["resumed_from_step"] == 0
    assert not (out / ".checkpoints").exists()


@pytest.mark.parametrize("fresh", ["hydra.launcher.resume=false", "hydra.launcher.overwrite=true"])
def test_a_fresh_start_discards_checkpoints(fresh, tmp_path, monkeypatch):
    """``resume=false`` and ``overwrite=true`` start every batch from step 0, never from a
    checkpoint that an earlier run of the same settings left."""
    from tests.conftest import cli

    out = tmp_path / "sweep"
    _stopped_in_chunk(2, out, monkeypatch)
    proc = cli("-m", *SETTINGS, "lr=0.05,0.1", fresh, f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for i in ("0", "1"):
        summary = json.loads((out / i / "summary.json").read_text())
        assert summary["attempts"] == 1 and summary["resumed_from_step"] == 0


def test_a_checkpoints_identity_includes_the_objectives_code(tmp_path, monkeypatch):
    """Changing the objective module's source changes the identity, so a batch never resumes
    state that the old code computed."""
    from src.sweep import checkpoints

    module = tmp_path / "my_objective_mod.py"
    module.write_text("def make():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = checkpoints.code_identity(("my_objective_mod.make",))
    assert before == checkpoints.code_identity(("my_objective_mod.make",))
    module.write_text("def make():\n    return 2\n")
    checkpoints._digest.cache_clear()  # a process sees its own code: the cache keys on files
    assert checkpoints.code_identity(("my_objective_mod.make",)) != before
    assert checkpoints.code_identity(("src.objectives.toy.make",)) != before


def test_a_checkpoint_whose_metadata_disagree_with_its_arrays_is_set_aside(tmp_path, reference, monkeypatch):
    from src.sweep.runner import run_sweep

    out = tmp_path / "sweep"
    saved = _stopped_in_chunk(3, out, monkeypatch)
    with np.load(saved) as f:
        arrays = dict(f)
    meta = json.loads(bytes(arrays["meta"]).decode())
    arrays["meta"] = np.frombuffer(json.dumps({**meta, "chunks": 3, "steps": 30}).encode(), np.uint8)
    np.savez(saved, **arrays)
    with pytest.warns(UserWarning, match="do not fit this batch"):
        run_sweep(_entries(out), sweep_dir=out)
    for i in ("0", "1"):
        assert json.loads((out / i / "summary.json").read_text())["resumed_from_step"] == 0
        _same(out / i, reference / i)


def test_an_interrupted_write_leaves_no_file_and_no_temporary(tmp_path):
    """Ctrl-C inside a write (a checkpoint's attempts file, in the CI run that found it)
    leaves neither the target nor a ``.tmp``; a killed writer's ``.tmp`` is swept by the
    batch's next start."""
    from src.sweep.checkpoints import BatchCheckpoint
    from src.sweep.files import atomic_write

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.json", interrupted, sync=True)
    assert list(tmp_path.iterdir()) == []

    checkpoint = BatchCheckpoint(tmp_path / ".checkpoints", "batch-0123")
    (tmp_path / ".checkpoints").mkdir()
    left = tmp_path / ".checkpoints" / ".batch-0123.npz.99999.tmp"  # kill -9 during a save
    left.write_bytes(b"half")
    other = tmp_path / ".checkpoints" / ".batch-4567.npz.1.tmp"  # another batch's: not touched
    other.write_bytes(b"half")
    checkpoint.start()
    assert not left.exists() and other.exists()
    assert json.loads(checkpoint.attempts_path.read_text()) == {"attempts": 1}
