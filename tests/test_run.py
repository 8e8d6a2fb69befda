"""The compiled run: pure, vmappable, every config option composes and runs."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from src.config import build_method, objective_of, validate
from src.core.loop import make_run, make_stepper
from tests.conftest import CONF, compose


def _inputs(*overrides):
    """A run's objective, method object, data and key, as the Hydra layer builds them."""
    run = validate(compose(*overrides))
    objective = objective_of(run.static)
    data = jax.tree.map(jnp.asarray, objective.data(run.seed, **{"theta_init": run.tree["objective"]["theta_init"]}))
    return run, objective, build_method(run.tree), data, jax.random.key(run.seed)


def _with_lr(method, lr):
    """The method with another outer learning rate: one leaf of the object, nothing else."""
    optimizer = dataclasses.replace(method.optimizer, options={**method.optimizer.options, "learning_rate": lr})
    return dataclasses.replace(method, optimizer=optimizer)


def test_scanned_run_equals_a_host_loop_over_the_same_steps():
    """The compiled run (one lax.scan) against a second implementation: a Python loop that
    calls the method's step once per outer step."""
    run_cfg, objective, method, data, key = _inputs("outer_steps=20")
    result = jax.jit(make_run(objective, 20))(method, data, key)
    step = jax.jit(lambda state: method.step(objective, state, data))
    state, thetas, losses = method.init(objective, data, key), [], []
    for _ in range(21):
        moved, report = step(state)
        thetas.append(state.theta)
        losses.append(objective.outer_loss(report.w, state.theta, data))
        state = moved
    np.testing.assert_allclose(result.metrics["theta"], np.asarray(thetas), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.metrics["outer_loss"], np.asarray(losses), rtol=1e-5, atol=1e-7)


def test_vmap_over_method_objects_matches_separate_runs():
    _, objective, method, data, key = _inputs("outer_steps=20")
    run = jax.jit(make_run(objective, 20))
    lrs = (1e-2, 8e-2)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[_with_lr(method, lr) for lr in lrs])
    batched = jax.jit(jax.vmap(make_run(objective, 20), in_axes=(0, None, None)))(stacked, data, key)
    for i, lr in enumerate(lrs):
        alone = run(_with_lr(method, lr), data, key)
        jax.tree.map(lambda x, y, i=i: np.testing.assert_allclose(x[i], y, rtol=1e-5, atol=1e-6), batched, alone)
    # the two learning rates really give two trajectories
    assert not np.allclose(batched.metrics["theta"][0], batched.metrics["theta"][1])


def test_numbers_are_leaves_and_structure_is_static():
    run_cfg, _, method, _, _ = _inputs()
    leaves = jax.tree.leaves(method)
    assert run_cfg.tree["lr"] in leaves and run_cfg.tree["inner_solver"]["lr"] in leaves
    assert run_cfg.tree["linear_solver"]["tol"] in leaves
    assert method.inner.steps == 50 and method.hypergrad.linear_solver.maxiter == 100
    # two jobs that differ only in numbers share one structure (one compiled program) ...
    other = validate(compose("lr=0.5", "seed=3", "inner_solver.lr=0.1", "objective.theta_init=2"))
    assert other.static == run_cfg.static
    assert jax.tree.structure(build_method(other.tree)) == jax.tree.structure(method)
    # ... and a step count is structure
    fewer = validate(compose("inner_solver.steps=7"))
    assert fewer.static != run_cfg.static
    assert jax.tree.structure(build_method(fewer.tree)) != jax.tree.structure(method)


def test_chunked_steps_equal_the_single_scan():
    _, objective, method, data, key = _inputs("outer_steps=10")
    whole = jax.jit(make_run(objective, 10))(method, data, key)
    stepper = make_stepper(objective, 10)
    carry, rows = stepper.init(method, data, key), []
    for n in (4, 4, 2):
        carry, chunk = jax.jit(stepper.advance, static_argnums=3)(carry, method, data, n)
        rows.append(chunk)
    last = jax.jit(stepper.finish)(carry, method, data)
    for name, column in whole.metrics.items():  # three programs instead of one: rounding may differ
        chunked = np.concatenate([*(r[name] for r in rows), last.metrics[name]])
        np.testing.assert_allclose(chunked, column, rtol=1e-5, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(last.theta, whole.theta, rtol=1e-6)


def test_unrolled_matches_implicit_on_converged_toy(run_job):
    common = ("inner_solver=gd", "inner_solver.lr=0.2", "inner_solver.steps=60", "outer_steps=30")
    _, implicit = run_job(*common)
    _, unrolled = run_job(*common, "hypergrad=unrolled")
    np.testing.assert_allclose(unrolled["hypergrad_norm"], implicit["hypergrad_norm"], atol=1e-4)
    np.testing.assert_allclose(unrolled["theta"], implicit["theta"], atol=1e-4)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# Row 0's hypergradient error against the toy's closed form (w* = theta^2, dF/dtheta = 4
# theta), which every option below runs on: exact wherever the implicit system is solved
# (its hypergradient does not depend on how well 5 inner steps solved the inner problem);
# identity replaces H = 2 by 1 (8 instead of 4); 50 Neumann terms with step 0.1 leave
# (1 - 0.2)^50; 5 unrolled gd steps of size 0.1 from the optimum give 4 (1 - 0.8^5), and
# truncated to the last 2, 4 (1 - 0.8^2).
ROW0_ERROR = {
    "linear_solver=identity": 1.0,
    "linear_solver=neumann": 0.8**50,
    "hypergrad=unrolled inner_solver=gd": 0.8**5,
    "hypergrad=unrolled hypergrad.truncate=2 inner_solver=gd": 0.8**2,
}
# ista and fista need a composite objective (the toy's inner problem is smooth):
# tests/test_fixed_point.py runs them on the lasso and the elastic net
OPTIONS = [
    f"{g}={o}"
    for g in ("inner_solver", "linear_solver", "optimizer")
    for o in _options(g)
    if o not in ("ista", "fista")
] + [
    "hypergrad=implicit",
    "hypergrad=unrolled inner_solver=gd",
    "hypergrad=unrolled hypergrad.truncate=2 inner_solver=gd",
    "precision=float64",
    "chunk_steps=1",
]


@pytest.mark.parametrize("override", OPTIONS)
def test_every_option_runs_and_gets_the_toys_hypergradient(run_job, override):
    steps = "inner_solver.steps=3" if "lbfgs" in override else "inner_solver.steps=5"
    steps = () if "inner_solver=exact" in override else (steps,)  # the closed form takes no steps
    summary, m = run_job(*override.split(), "outer_steps=2", *steps)
    assert summary["status"] == "completed" and len(m) == 3
    expected = ROW0_ERROR.get(override, 0.0)
    assert m["hypergrad_error"][0] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert m["hypergrad_norm"][0] == pytest.approx(4 * (1 - expected if expected < 1 else 2), rel=1e-4)
    assert m["theta"][2] < m["theta"][0]  # two outer steps down the hypergradient


# Objectives with a convex inner problem or a closed form, and how many outer steps of
# their recommended settings to check (the default run's first 30: logreg's 100 gd inner
# steps of before already missed by 0.02 at step 20; data cleaning's missed by 0.28 at step
# 0, and its reference costs 0.2 s a step: 5); the others get a reference from 5
# Newton steps. imaml is checked in tests/test_imaml.py (its reference is a per-task CG).
# covtype's data are downloaded (tests/test_downloads.py runs it on a small file)
ACCURATE = {o: 30 for o in _options("objective") if o not in ("imaml", "covtype")} | {"data_cleaning": 5}
CLOSED_FORM = {"toy", "quadratic", "quadratic_sum", "ridge", "lasso", "elastic_net"}


@pytest.mark.parametrize("objective", sorted(ACCURATE))
def test_recommended_settings_learn_with_accurate_hypergradients(run_job, objective):
    """Every step of the recommended settings has hypergrad_error < 1e-2 (measured over the
    whole default run, reference_newton_steps=5 where there is no closed form: logreg 3.7e-3,
    ridge 1.0e-3, quadratic 1.7e-3, data_cleaning 1.2e-3, the others below 2e-4), and the
    outer loss goes down."""
    steps = f"outer_steps={ACCURATE[objective]}"
    reference = [] if objective in CLOSED_FORM else ["reference_newton_steps=5"]
    summary, m = run_job(f"objective={objective}", steps, *reference)
    assert summary["status"] == "completed" and len(m) == ACCURATE[objective] + 1
    assert m["outer_loss"].iloc[-1] < m["outer_loss"][0]  # its recommended settings learn
    assert m["hypergrad_error"].notna().all() and m["hypergrad_error"].max() < 1e-2


def test_a_tolerance_stops_the_inner_solver_early(run_job):
    _, m = run_job("objective=ridge", "inner_solver.tol=1.0", "inner_solver.steps=200", "outer_steps=5")
    early = m["inner_iterations"] < 200
    assert early.all() and (m["inner_iterations"][1:] < m["inner_iterations"][0]).all()  # warm starts help
    assert (m["inner_grad_norm"] <= 1.0).all()


def test_linear_solver_warm_start_and_a_solve_cut_at_maxiter(run_job):
    common = ("objective=logreg", "outer_steps=10", "precision=float64", "linear_solver.tol=1e-4",
              "inner_solver=gd", "inner_solver.steps=100", "inner_solver.lr=0.2", "inner_solver.tol=null")  # fmt: skip
    _, cold = run_job(*common)
    _, warm = run_job(*common, "linear_solver.warm_start=true")
    # measured: cold 7, 7, 8, 8, 9, 9, 9, 10, 11, 11, 13 iterations; warm 7, 6, 6, 6, 6, 7, ...
    assert warm["linsolve_iterations"][0] == cold["linsolve_iterations"][0]  # nothing to start from at row 0
    assert (warm["linsolve_iterations"][1:] <= cold["linsolve_iterations"][1:]).all()
    assert warm["linsolve_iterations"].sum() < cold["linsolve_iterations"].sum() - 10
    assert warm["linsolve_converged"].all() and cold["linsolve_converged"].all()
    np.testing.assert_allclose(warm["outer_loss"], cold["outer_loss"], rtol=1e-4)  # both solved to tol
    _, cut = run_job(*common, "linear_solver.maxiter=2")
    assert (cut["linsolve_iterations"] == 2).all() and not cut["linsolve_converged"].any()
    assert (cut["linsolve_residual"] > cold["linsolve_residual"]).all()


def test_float64_runs_in_double_precision_and_float32_after_it(run_job):
    s64, m64 = run_job("precision=float64", "outer_steps=3")
    assert m64["theta"].dtype == np.float64 and s64["precision"] == "float64"
    _, m32 = run_job("outer_steps=3")
    assert m32["theta"].dtype == np.float32  # no process-wide switch left behind
    assert jnp.zeros(1).dtype == jnp.float32
    np.testing.assert_allclose(m32["theta"], m64["theta"], atol=1e-5)
