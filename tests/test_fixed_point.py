"""Fixed-point implicit differentiation (composite inner problems, src/core/hypergrad.py
``optimality``): the lasso and the elastic net against finite differences of the solved
problem, jaxopt's ProximalGradient with implicit differentiation, unrolled FISTA, and the
active-set closed form."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from src.config import ConfigError, build_method, objective_of, validate
from src.sweep.plan import job_data
from tests.conftest import compose


def _setup(*overrides):
    run = validate(compose(*overrides, "precision=float64"))
    objective = objective_of(run.static)
    data = {k: jnp.asarray(v) for k, v in job_data(run).items()}
    return run, objective, data


def _hypergrad(run, objective, data, theta):
    method = build_method(run.tree)
    u0 = jnp.zeros_like(data["w0"])
    return method.hypergrad(objective, method.inner, theta, data["w0"], u0, data)


def _solved_value(objective, data, theta, steps=20000):
    """F at the lasso / elastic-net solution, by many FISTA steps (for finite differences)."""
    from src.core.inner import ProxGradient

    w, _ = ProxGradient(steps, accelerated=True).solve(objective, data["w0"], theta, data)
    return objective.outer_loss(w, theta, data)


CASES = [("lasso", 0.5), ("elastic_net", [0.5, -1.0])]


@pytest.mark.parametrize("name, theta", CASES)
def test_hypergradient_against_finite_differences_and_jaxopt(name, theta):
    import jaxopt
    from jaxopt.prox import prox_lasso

    with jax.enable_x64(True):
        theta = jnp.asarray(theta, jnp.float64)
        run, objective, data = _setup(
            f"objective={name}", "inner_solver.steps=5000", "linear_solver=direct", "inner_solver.tol=1e-13"
        )
        r = _hypergrad(run, objective, data, theta)
        # finite differences of the solved problem
        flat = jnp.atleast_1d(theta)
        fd = []
        for i in range(flat.shape[0]):
            e = jnp.zeros_like(flat).at[i].set(1e-5).reshape(jnp.shape(theta))
            fd.append((_solved_value(objective, data, theta + e) - _solved_value(objective, data, theta - e)) / 2e-5)
        np.testing.assert_allclose(jnp.atleast_1d(r.grad), np.asarray(fd), rtol=1e-5)

        # jaxopt: f(w; l2) with prox_lasso at l1, implicit differentiation through its fixed
        # point. With its defaults (line search, normal-CG implicit solve at 1e-5) it agrees
        # only to 1e-5; a fixed step 1/L and an LU solve make it exact.
        def smooth(w, l2):
            return 0.5 * jnp.mean((data["Xtr"] @ w - data["ytr"]) ** 2) + 0.5 * l2 * jnp.sum(w**2)

        step = 1.0 / float(objective.lipschitz(theta, data))
        solver = jaxopt.ProximalGradient(
            fun=smooth,
            prox=prox_lasso,
            stepsize=step,
            tol=1e-12,
            maxiter=20000,
            implicit_diff=True,
            implicit_diff_solve=jaxopt.linear_solve.solve_lu,
        )

        def outer(th):
            l1, l2 = (jnp.exp(th), 0.0) if th.ndim == 0 else (jnp.exp(th[0]), jnp.exp(th[1]))
            w = solver.run(data["w0"], l1, l2).params
            return jnp.mean((data["Xva"] @ w - data["yva"]) ** 2)

        np.testing.assert_allclose(r.grad, jax.grad(outer)(theta), rtol=1e-6)
        # and the active-set closed form
        np.testing.assert_allclose(r.grad, objective.hypergrad_at(r.w, theta, data), rtol=1e-8)
        assert 0 < int(jnp.sum(r.w != 0)) < r.w.shape[0]  # a sparse solution: the test means something


def test_implicit_equals_converged_unrolled():
    with jax.enable_x64(True):
        run_i, objective, data = _setup("objective=lasso", "inner_solver.steps=3000")
        run_u, _, _ = _setup("objective=lasso", "inner_solver.steps=3000", "hypergrad=unrolled")
        theta = jnp.asarray(0.5)
        implicit = _hypergrad(run_i, objective, data, theta).grad
        unrolled = _hypergrad(run_u, objective, data, theta).grad
        np.testing.assert_allclose(unrolled, implicit, rtol=1e-6)


def test_ista_and_fista_reach_the_same_solution():
    from src.core.inner import ProxGradient

    with jax.enable_x64(True):
        _, objective, data = _setup("objective=elastic_net")
        theta = jnp.asarray([0.0, -1.0])
        ista = ProxGradient(20000).solve(objective, data["w0"], theta, data)[0]
        fista, iterations = ProxGradient(20000, tol=1e-10, accelerated=True).solve(objective, data["w0"], theta, data)
        np.testing.assert_allclose(fista, ista, atol=1e-8)
        assert int(iterations) < 20000  # stopped at its tolerance


def test_lasso_run_lowers_the_validation_error(run_job):
    summary, m = run_job("objective=lasso", "objective.theta_init=0.0")
    assert m["val_mse"].iloc[-1] < m["val_mse"].iloc[0]
    assert summary["final"]["hypergrad_error"] < 1e-3  # against the active-set closed form, float32
    assert (m["nonzeros"] < 10).any()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["objective=lasso", "linear_solver=cg"], "linear_solver='cg': gmres, bicgstab, neumann or direct.*symmetric"),
        (["objective=lasso", "inner_solver=gd"], "inner_solver='gd': ista or fista"),
        (["objective=ridge", "inner_solver=ista"], "inner_solver='ista': a smooth solver.*no non-smooth part"),
    ],
)
def test_wrong_solvers_for_composite_problems_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(*overrides))
