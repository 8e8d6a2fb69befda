"""The compiled run: pure, vmappable, every config option composes and runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from src.batching import Job, _stack
from src.config import validate
from src.outer import make_run
from tests.conftest import CONF, compose


def _inputs(*overrides):
    run = validate(compose(*overrides))
    dynamic, keys = _stack([Job(run, "unused")], jnp.float32)
    unbatch = lambda tree: jax.tree.map(lambda x: x[0], tree)
    return run, unbatch(dynamic), unbatch(keys)


def test_run_is_pure_and_vmap_matches_separate_calls():
    run_cfg, dyn, key = _inputs("outer_steps=20")
    run = jax.jit(make_run(run_cfg.static))
    a, b = run(dyn, key), run(dyn, key)
    jax.tree.map(np.testing.assert_array_equal, a, b)

    lrs = jnp.asarray([1e-2, 8e-2])

    def with_lr(lr):
        params = {**dyn["params"], "lr": lr, "optimizer.learning_rate": lr}
        return {**dyn, "params": params}

    batched = jax.jit(jax.vmap(lambda lr: make_run(run_cfg.static)(with_lr(lr), key)))(lrs)
    for i, lr in enumerate(lrs):
        alone = run(with_lr(lr), key)
        jax.tree.map(lambda x, y, i=i: np.testing.assert_allclose(x[i], y, rtol=1e-5, atol=1e-6), batched, alone)
    # the two learning rates really give two trajectories
    assert not np.allclose(batched.metrics["theta"][0], batched.metrics["theta"][1])


def test_dynamic_values_are_traced_not_baked_in():
    run_cfg, _, _ = _inputs()
    assert "lr" in run_cfg.dynamic and "inner_solver.lr" in run_cfg.dynamic
    assert "linear_solver.tol" in run_cfg.dynamic and "seed" in run_cfg.dynamic
    static = dict(run_cfg.static)
    assert static["outer_steps"] == 100 and static["inner_solver.steps"] == 50
    assert static["linear_solver.maxiter"] == 100 and static["precision"] == "float32"
    # two jobs that differ only in numbers share one static config (one compiled program)
    other = validate(compose("lr=0.5", "seed=3", "inner_solver.lr=0.1", "objective.theta_init=2"))
    assert other.static == run_cfg.static
    assert validate(compose("inner_solver.steps=7")).static != run_cfg.static


def test_unrolled_matches_implicit_on_converged_toy(run_job):
    common = ("inner_solver=gd", "inner_solver.lr=0.2", "inner_solver.steps=60", "outer_steps=30")
    _, implicit = run_job(*common)
    _, unrolled = run_job(*common, "hypergrad=unrolled")
    np.testing.assert_allclose(unrolled["hypergrad_norm"], implicit["hypergrad_norm"], atol=1e-4)
    np.testing.assert_allclose(unrolled["theta"], implicit["theta"], atol=1e-4)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in ("inner_solver", "linear_solver", "hypergrad", "optimizer") for o in _options(g)]
    + [f"objective={o}" for o in _options("objective")]
    + ["precision=float64", "hypergrad=unrolled hypergrad.truncate=5", "chunk_steps=1"],
)
def test_every_option_composes_and_runs_two_steps(run_job, override):
    extra = () if override.startswith("objective") else ("inner_solver.steps=5",)
    if override == "inner_solver=lbfgs":
        extra = ("inner_solver.steps=3",)
    summary, m = run_job(*override.split(), "outer_steps=2", *extra)
    assert summary["status"] == "completed"
    assert len(m) == 3 and np.isfinite(m["outer_loss"]).all()
    assert np.isfinite(m["hypergrad_norm"]).all() and (m["hypergrad_norm"] > 0).all()


def test_float64_runs_in_double_precision_and_float32_after_it(run_job):
    s64, m64 = run_job("precision=float64", "outer_steps=3")
    assert m64["theta"].dtype == np.float64 and s64["precision"] == "float64"
    _, m32 = run_job("outer_steps=3")
    assert m32["theta"].dtype == np.float32  # no process-wide switch left behind
    assert jnp.zeros(1).dtype == jnp.float32
    np.testing.assert_allclose(m32["theta"], m64["theta"], atol=1e-5)
