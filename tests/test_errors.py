"""Bad input, divergence, interruption and determinism, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, cli, compose, signal_after_first_job

BAD = [
    (["lr=abc"], "lr='abc'", "a finite number > 0"),
    (["lr=0"], "lr=0", "a finite number > 0"),
    (["lr=inf"], "lr=inf", "a finite number > 0"),
    (["lr=1e-50"], "lr=1e-50", "it becomes 0.0 in float32, precision=float32"),
    (["objective.theta_init=1e39"], "objective.theta_init=1e+39", "it becomes inf in float32"),
    (["seed=4294967296"], "seed=4294967296", "an integer in [0, 4294967295]"),
    (["seed=1e20"], "seed=1e+20", "an integer in [0, 4294967295]"),
    (["seed=-1"], "seed=-1", "an integer in [0, 4294967295]"),
    (["+foo=1"], "foo=1", "unknown key; allowed top-level keys"),
    (["+inner_solver.bogus=3"], "inner_solver.bogus=3", "unknown key; allowed: _target_, b1"),
    (["inner_solver.steps=0"], "inner_solver.steps=0", "an integer >= 1"),
    (["inner_solver.steps=2.5"], "inner_solver.steps=2.5", "an integer >= 1"),
    (["linear_solver.tol=-1"], "linear_solver.tol=-1", "a finite number >= 0"),
    (["precision=float16"], "precision='float16'", "one of float32, float64"),
    (["objective=data_cleaning", "objective.corruption=1.5"], "objective.corruption=1.5", "in [0, 1]"),
    (["outer_steps=-3"], "outer_steps=-3", "an integer >= 1"),
    (["wandb.mode=sometimes"], "wandb.mode='sometimes'", "one of offline, online, disabled"),
    (["objective=logreg", "inner_solver=exact"], "inner_solver='exact'", "no closed-form inner solution"),
    (["hypergrad=unrolled", "inner_solver=lbfgs"], "inner_solver='lbfgs'", "reverse mode cannot differentiate"),
    (["hypergrad=unrolled", "inner_solver.tol=1e-3"], "inner_solver.tol=0.001", "tolerance-stopped"),
    (["inner_solver._target_=optax.nothing"], "inner_solver._target_='optax.nothing'", "an importable callable"),
    (["objective._target_=numpy.zeros"], "objective._target_='numpy.zeros'", "calling it failed: TypeError"),
    (["objective._target_=src.objectives.Objective"], "objective._target_=", "returning src.objectives.Objective"),
    (["hypergrad=unrolled", "hypergrad.truncate=0"], "hypergrad.truncate=0", "an integer >= 1"),
    (["~linear_solver.tol"], "linear_solver.tol=null", "a value is required (a finite number >= 0)"),
    # null for an option that has a default is refused, never run as something else
    (["inner_solver.steps=null"], "inner_solver.steps=null", "an integer >= 1; null is not a value"),
    (["~inner_solver.steps"], "inner_solver.steps=null", "a value is required (an integer >= 1)"),
    (["objective.theta_init=null"], "objective.theta_init=null", "a finite number; null is not a value"),
    (["objective=ridge", "objective.theta_init=null"], "objective.theta_init=null", "null is not a value"),
    (["+optimizer.b1=null"], "optimizer.b1=null", "null is not a value"),
    (["inner_solver.eps_root=null"], "inner_solver.eps_root=null", "null is not a value"),
    (["inner_solver.warm_start=null"], "inner_solver.warm_start=null", "true or false; null is not a value"),
    (["objective=quadratic", "objective.cond=null"], "objective.cond=null", "a finite number >= 1; null"),
    (["wandb.mode=null"], "wandb.mode=null", "one of offline, online, disabled"),
    (["objective=lasso", "method=soba"], "method='soba'", "a nested method with inner_solver=ista|fista"),
    (["inner_solver.warm_start=1"], "inner_solver.warm_start=1", "true or false"),
    (["objective._target_=math.pi"], "objective._target_='math.pi'", "an importable callable (it is a float)"),
]


@pytest.mark.parametrize("args, named, allowed", BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_is_one_clear_message(args, named, allowed):
    from src.config import ConfigError, validate

    with pytest.raises(ConfigError) as err:
        validate(compose(*args))
    message = str(err.value)
    assert message.startswith(f"invalid config: {named}") and allowed in message, message


@pytest.mark.parametrize(
    "args, says",
    [
        (["lr=1e-50"], "invalid config: lr=1e-50: a value that float32 can hold"),
        (["objective._target_=numpy.zeros"], "invalid config: objective._target_='numpy.zeros': an objective factory"),
        (["objective=data_cleaning", "objective.n_train=5000"], "its data cannot be built: ValueError"),
        (["batch_size=64"], "batch_size=64: null (full batch): objective 'toy' is not a finite sum"),
        (["objective=quadratic_sum", "method=soba", "batch_size=100000"], "batch_size=100000: at most 32768"),
        (["objective=quadratic_sum", "method=soba", "batch_size=2147483648"], "an integer in [1, 2147483647]"),
    ],
)
def test_bad_input_through_the_cli_exits_2_with_one_line(args, says, tmp_path):
    proc = cli(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].endswith("Nothing was run."), proc.stderr
    assert not (tmp_path / "run").exists()  # a refused run leaves no directory (no .hydra/, no train.log)


def test_a_run_writes_no_empty_log(tmp_path):
    proc = cli("outer_steps=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "summary.json").exists() and not list((tmp_path / "run").glob("*.log"))


def test_unknown_group_option_lists_the_options(tmp_path):
    proc = cli("linear_solver=nope", f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "Available options in 'linear_solver'" in proc.stderr
    for option in ("cg", "gmres", "bicgstab", "neumann", "direct", "identity"):
        assert option in proc.stderr


def test_one_bad_job_stops_the_sweep_before_any_work(tmp_path):
    out = tmp_path / "sweep"
    proc = cli("-m", "lr=0.1,0.2,-1", f"hydra.sweep.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "job 2 (lr=-1)" in proc.stderr and "lr=-1: a finite number > 0" in proc.stderr
    assert "Nothing was run." in proc.stderr
    assert not [p for p in out.iterdir() if p.is_dir()]  # no job directory was made


@pytest.mark.parametrize(
    "sweep, says",
    [
        (
            ["seed=0,4294967296"],
            "job 1 (seed=4294967296 outer_steps=2): invalid config: seed=4294967296: an integer in [0, 4294967295]",
        ),
        (
            ["objective=data_cleaning", "objective.n_train=600,5000"],
            "job 1 (objective=data_cleaning objective.n_train=5000 outer_steps=2): its data cannot be built",
        ),
        (
            ["inner_solver.steps=10,null"],
            "job 1 (inner_solver.steps=null outer_steps=2): invalid config: inner_solver.steps=null",
        ),
    ],
)
def test_a_job_whose_seed_or_data_is_invalid_stops_the_sweep_before_any_work(sweep, says, tmp_path):
    out = tmp_path / "sweep"
    proc = cli("-m", *sweep, "outer_steps=2", f"hydra.sweep.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert says in proc.stderr and proc.stderr.strip().endswith("Nothing was run.")
    assert not [p for p in out.iterdir() if p.is_dir()]  # the valid job did not run either


@pytest.mark.parametrize(
    "option, says",
    [
        ("hydra.launcher.max_batch_size=-1", "hydra.launcher.max_batch_size=-1: an integer >= 1"),
        ("hydra.launcher.max_batch_size=0", "hydra.launcher.max_batch_size=0: an integer >= 1"),
        ("hydra.launcher.array_parallelism=0", "hydra.launcher.array_parallelism=0: an integer >= 1"),
    ],
)
def test_launcher_options_are_validated(option, says, tmp_path):
    out = tmp_path / "sweep"
    proc = cli("-m", "lr=0.1,0.2", option, f"hydra.sweep.dir={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    conf = tmp_path / "myconf" / "objective"
    conf.mkdir(parents=True)
    (conf / "broken.yaml").write_text("# @package _global_\nobjective:\n  name: broken\n  _target_: [unclosed\n")
    proc = cli("--config-dir", str(tmp_path / "myconf"), "objective=broken", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"YAML syntax error in {conf / 'broken.yaml'}, line 5, column 1" in lines[0]


@pytest.mark.parametrize("mode", ["-m", "run"])
def test_an_output_directory_that_is_a_file_is_one_line(mode, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a directory")
    key = "hydra.sweep.dir" if mode == "-m" else "hydra.run.dir"
    args = ["-m", "lr=0.1,0.2"] if mode == "-m" else []
    proc = cli(*args, f"{key}={path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{key}='{path}': a directory; that path is a file" in lines[0], proc.stderr
    assert path.read_text() == "not a directory"


def test_divergence_inside_a_batch_leaves_the_others_unaffected(tmp_path, run_job):
    out = tmp_path / "sweep"
    proc = cli("-m", "lr=0.05,1e30", "outer_steps=8", f"hydra.sweep.dir={out}")
    assert proc.returncode == 0, proc.stderr
    good, bad = (json.loads((out / j / "summary.json").read_text()) for j in ("0", "1"))
    assert bad["status"] == "diverged" and bad["diverged_step"] == 1  # theta^2 overflows at step 1
    assert bad["batch"]["size"] == good["batch"]["size"] == 2
    m_bad = pd.read_parquet(out / "1" / "metrics.parquet")
    assert list(m_bad["step"]) == [0, 1] and not np.isfinite(m_bad["outer_loss"].iloc[-1])
    assert good["status"] == "completed"
    _, alone = run_job("lr=0.05", "outer_steps=8")
    batched = pd.read_parquet(out / "0" / "metrics.parquet")
    for col in ("theta", "outer_loss", "hypergrad_norm"):
        np.testing.assert_allclose(batched[col], alone[col], rtol=1e-5, atol=1e-7)
    assert "diverged 1" in proc.stderr and "diverged: job 1" in proc.stderr


def test_same_config_and_seed_give_bit_identical_metrics(tmp_path):
    frames = []
    for i in range(2):
        proc = cli("objective=logreg", "outer_steps=5", f"hydra.run.dir={tmp_path / str(i)}")
        assert proc.returncode == 0, proc.stderr
        frames.append(pd.read_parquet(tmp_path / str(i) / "metrics.parquet"))
    pd.testing.assert_frame_equal(frames[0], frames[1], check_exact=True)


def test_a_job_gives_the_same_numbers_alone_and_in_batches_of_any_size(tmp_path):
    from src.config import validate
    from src.sweep.batching import run_batch
    from src.sweep.plan import Job

    runs = [
        validate(compose("objective=quadratic", "precision=float64", "outer_steps=10", f"lr={lr}"))
        for lr in (0.02, 0.05, 0.1, 0.2, 0.3)
    ]
    (alone,) = run_batch([Job(runs[0], tmp_path / "alone")])
    for size in (2, 5):
        run_batch([Job(r, tmp_path / f"b{size}-{i}") for i, r in enumerate(runs[:size])])
        a = pd.read_parquet(tmp_path / "alone" / "metrics.parquet")
        b = pd.read_parquet(tmp_path / f"b{size}-0" / "metrics.parquet")
        for col in a.columns:  # a converged solve's residual and error sit at the rounding floor
            floor = {"linsolve_residual": 1e-12, "hypergrad_error": 1e-12, "inner_grad_norm": 1e-12}.get(col, 1e-14)
            np.testing.assert_allclose(b[col].astype(float), a[col].astype(float), rtol=1e-10, atol=floor, err_msg=col)


def test_an_interrupt_that_comes_back_as_another_exception_still_stops_the_sweep(tmp_path, monkeypatch):
    """Ctrl-C stops the sweep even when a library turns the KeyboardInterrupt into another
    exception; the next batch never starts, and the process's own handler comes back."""
    import src.sweep.runner

    calls = []

    def run_batch(jobs, **kwargs):
        calls.append([j.name for j in jobs])
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt as exc:
            raise RuntimeError("a library wrapped the interrupt") from exc

    monkeypatch.setattr(src.sweep.runner, "run_batch", run_batch)
    solvers = ["linear_solver=cg", "linear_solver=gmres"]
    entries = [(compose(ov), tmp_path / str(i), (ov,)) for i, ov in enumerate(solvers)]
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        src.sweep.runner.run_sweep(entries, sweep_dir=tmp_path)
    assert calls == [["0"]]  # two groups, two batches: the second never ran
    assert signal.getsignal(signal.SIGINT) is before


def test_a_stop_whose_exception_python_drops_still_stops_the_sweep(tmp_path, monkeypatch):
    """SIGTERM whose handler runs inside a gc callback: Python drops its KeyboardInterrupt.
    The sweep still stops before the next job's files: the job written stays complete, the
    rest of its batch and the next batch leave nothing."""
    import src.sweep.runner

    dropped = signal_after_first_job(signal.SIGTERM, monkeypatch)
    overrides = [("linear_solver=cg", "lr=0.05"), ("linear_solver=cg", "lr=0.2"), ("linear_solver=gmres", "lr=0.05")]
    entries = [
        (compose("objective=ridge", "outer_steps=5", *ov), tmp_path / str(i), ov) for i, ov in enumerate(overrides)
    ]
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        src.sweep.runner.run_sweep(entries, sweep_dir=tmp_path)
    assert [type(e) for e in dropped] == [KeyboardInterrupt]  # Python dropped it where it was raised
    assert json.loads((tmp_path / "0" / "summary.json").read_text())["status"] == "completed"
    assert not (tmp_path / "1").exists() or not any((tmp_path / "1").iterdir())
    assert not (tmp_path / "2").exists() or not any((tmp_path / "2").iterdir())
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_wrapped_handler_that_returns_does_not_stop_the_sweep():
    """A kept handler that returns (submitit's, on a task that is not rank 0) leaves nothing
    to raise; one that raises is raised again by check, after the block nothing is left."""
    from src.sweep import interrupts

    calls = []

    def returns(signum, frame):
        calls.append(signum)

    def raises(signum, frame):
        raise SystemExit(5)

    previous = signal.signal(signal.SIGUSR1, returns)
    try:
        with interrupts.recorded_signals(stop=(), wrap=(signal.SIGUSR1,)) as stops:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            stops.check()  # nothing to raise
            assert calls == [signal.SIGUSR1] and signal.getsignal(signal.SIGUSR1) is not returns
        assert signal.getsignal(signal.SIGUSR1) is returns
        signal.signal(signal.SIGUSR1, raises)
        with pytest.raises(SystemExit), interrupts.recorded_signals(stop=(), wrap=(signal.SIGUSR1,)) as stops:
            try:
                os.kill(os.getpid(), signal.SIGUSR1)
                time.sleep(0.01)
            except SystemExit:
                pass  # what a library that swallows it does
            stops.check()
        with interrupts.recorded_signals(stop=(), wrap=(signal.SIGUSR1,)) as fresh:
            fresh.check()  # a new sweep's record: nothing is left pending from the last
        assert signal.getsignal(signal.SIGUSR1) is raises
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_key_of_a_swept_group_works_as_written(tmp_path):
    """``method=soba,saba method.step_size=0.01``: each job gets the value (Hydra alone
    refuses it: its primary config has no method yet)."""
    import json

    out = tmp_path / "sweep"
    proc = cli("-m", "objective=quadratic_sum", "objective.n_inner=1000", "method=soba,saba",
               "method.step_size=0.01", "batch_size=64", "outer_steps=2", f"hydra.sweep.dir={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job, name in (("0", "soba"), ("1", "saba")):
        method = json.loads((out / job / "summary.json").read_text())["config"]["method"]
        assert method["name"] == name and method["step_size"] == 0.01


def test_the_hint_for_a_key_of_a_group_chosen_per_job_is_quoted(tmp_path):
    from src.train import per_job_overrides

    assert per_job_overrides(["method.step_size=0.1"]) == ["method.step_size=0.1"]  # no -m: unchanged
    assert per_job_overrides(["-m", "method=soba", "method.step_size=0.1"])[-1] == "method.step_size=0.1"
    proc = cli("-m", "study=benchmark", "method.step_size=0.01", f"hydra.sweep.dir={tmp_path / 's'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "++method.step_size=VALUE, or as a sweep of one value, 'method.step_size=choice(VALUE)'" in proc.stderr


OOM_OBJECTIVE = """import jax
import numpy as np
from src.objectives import Objective


def make():
    def inner(w, theta, d):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 99999999999 bytes.")

    data = lambda seed: {"theta0": np.zeros(()), "w0": np.zeros(())}
    return Objective(data=data, inner_loss=inner, outer_loss=lambda w, theta, d: w, randomness="")
"""


@pytest.mark.parametrize("multirun", [False, True], ids=["single", "multirun"])
def test_a_run_out_of_memory_is_one_line(multirun, tmp_path):
    (tmp_path / "oom_objective.py").write_text(OOM_OBJECTIVE)
    args = ["objective._target_=oom_objective.make", "~objective.theta_init", "~objective.w_init", "outer_steps=2"]
    where = ["-m", f"hydra.sweep.dir={tmp_path / 's'}", "seed=0"] if multirun else [f"hydra.run.dir={tmp_path / 'r'}"]
    proc = cli(*where, *args, env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "RESOURCE_EXHAUSTED: Out of memory" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "RESOURCE_EXHAUSTED" in line]) == 1


def test_what_a_single_loop_method_does_not_use_is_neither_checked_nor_stored():
    from src.config import validate

    run = validate(compose("objective=quadratic_sum", "method=soba", "lr=0", "inner_solver.steps=0"))
    assert "lr" not in run.tree and "inner_solver" not in run.tree and run.tree["method"]["name"] == "soba"
