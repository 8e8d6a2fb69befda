"""Hypergradients against independent oracles, in float64.

A zoo of problems with closed forms is crossed with the linear solvers (as optimistix's
tests do); problems without a closed form are checked against central finite
differences of the outer loss through an inner solution found by Newton's method.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from src.core.hypergrad import Implicit, Unrolled, exact_hypergrad
from src.core.inner import Exact, Optax, OptaxSolver
from src.core.linsolve import CG, GMRES, BiCGStab, Direct, Identity, Neumann
from src.objectives import data_cleaning, logreg, quadratic, ridge, toy

ZOO = {
    "toy": lambda: toy.make(),
    "quadratic": lambda: quadratic.make(dim_inner=12, dim_outer=4),
    "ridge": lambda: ridge.make(),
    "ridge_per_feature": lambda: ridge.make(per_feature=True),
}
# linear solver, relative tolerance on the hypergradient
SOLVERS = {
    "direct": (Direct(), 1e-8),
    "cg": (CG(tol=1e-12, maxiter=500), 1e-8),
    "gmres": (GMRES(tol=1e-12, maxiter=500, restart=20), 1e-6),
    "bicgstab": (BiCGStab(tol=1e-12, maxiter=500), 1e-6),
    "neumann": (Neumann(step_size=0.08, maxiter=2000), 1e-6),
}


def _problem(name, seed=0):
    objective = ZOO[name]() if name in ZOO else {"logreg": logreg.make, "data_cleaning": data_cleaning.make}[name]()
    data = jax.tree.map(jnp.asarray, objective.data(seed))
    theta = data["theta0"] + 0.3 * jax.random.normal(jax.random.key(seed), jnp.shape(data["theta0"]))
    return objective, data, theta


def _rel(a, b):
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("solver", list(SOLVERS))
@pytest.mark.parametrize("problem", list(ZOO))
def test_implicit_matches_closed_form(problem, solver):
    linear_solver, tol = SOLVERS[solver]
    with jax.enable_x64(True):
        objective, data, theta = _problem(problem)
        w0 = data["w0"]
        r = Implicit(linear_solver)(objective, Exact(), theta, w0, jnp.zeros(ravel_pytree(w0)[0].shape), data)
        reference = exact_hypergrad(objective, theta, data)
        assert _rel(r.grad, reference) < tol
        assert bool(r.linsolve.converged)
        if objective.hypergrad is not None:  # the closed form agrees with autodiff through w*
            auto = jax.grad(lambda th: objective.outer_loss(objective.inner_solution(th, data), th, data))(theta)
            assert _rel(auto, reference) < 1e-10


def test_identity_is_the_jacobian_free_formula():
    with jax.enable_x64(True):
        objective, data, theta = _problem("ridge_per_feature")
        w = objective.inner_solution(theta, data)
        r = Implicit(Identity())(objective, Exact(), theta, w, jnp.zeros_like(w), data)
        v = jax.grad(objective.outer_loss)(w, theta, data)
        cross = jax.jacobian(jax.grad(objective.inner_loss), argnums=1)(w, theta, data)  # d2G/dw dtheta
        expected = jax.grad(objective.outer_loss, argnums=1)(w, theta, data) - cross.T @ v
        np.testing.assert_allclose(r.grad, expected, rtol=1e-12)
        assert _rel(r.grad, exact_hypergrad(objective, theta, data)) > 1e-3  # an approximation


def _newton(objective, data, w0, iters):
    """Newton's method on the inner problem, compiled once: ``theta -> w*(theta)`` from ``w0``."""
    flat0, unravel = ravel_pytree(w0)

    @jax.jit
    def solve(theta):
        g = lambda wf: ravel_pytree(jax.grad(objective.inner_loss)(unravel(wf), theta, data))[0]
        step = lambda _, wf: wf - jnp.linalg.solve(jax.jacfwd(g)(wf), g(wf))
        return unravel(jax.lax.fori_loop(0, iters, step, flat0))

    return solve


@pytest.mark.parametrize("problem", ["logreg", "data_cleaning"])
def test_implicit_matches_finite_differences(problem):
    with jax.enable_x64(True):
        objective, data, theta = _problem(problem)
        w = _newton(objective, data, data["w0"], iters=30)(theta)
        at_w = objective._replace(inner_solution=lambda th, d: w)
        implicit = lambda th, u0: Implicit(CG(tol=1e-12, maxiter=2000))(at_w, Exact(), th, w, u0, data)
        r = jax.jit(implicit)(theta, jnp.zeros(ravel_pytree(w)[0].size))
        newton = _newton(objective, data, w, iters=8)
        F = jax.jit(lambda th: objective.outer_loss(newton(th), th, data))
        eps = 1e-5
        for i in range(3):
            direction = jax.random.normal(jax.random.key(100 + i), theta.shape)
            direction = direction / jnp.linalg.norm(direction)
            fd = (F(theta + eps * direction) - F(theta - eps * direction)) / (2 * eps)
            np.testing.assert_allclose(float(jnp.vdot(r.grad, direction)), float(fd), rtol=1e-5, atol=1e-10)


def test_unrolled_converged_agrees_with_implicit_and_truncation_approximates():
    with jax.enable_x64(True):
        objective, data, theta = _problem("quadratic")
        solver = OptaxSolver(Optax(optax.sgd, {"learning_rate": 0.15}), steps=600)
        u0 = jnp.zeros(data["w0"].size)
        exact = exact_hypergrad(objective, theta, data)
        gi = Implicit(CG(tol=1e-12, maxiter=200))(objective, solver, theta, data["w0"], u0, data).grad
        gu = Unrolled()(objective, solver, theta, data["w0"], u0, data).grad
        assert _rel(gu, gi) < 1e-8 and _rel(gi, exact) < 1e-8
        truncated = [Unrolled(k)(objective, solver, theta, data["w0"], u0, data).grad for k in (2, 10, 40)]
        errors = [_rel(g, exact) for g in truncated]
        assert errors[0] > errors[1] > errors[2] > 0
        assert errors[0] > 1e-2  # truncating to 2 steps is a real approximation


def test_jaxopt_custom_root_agrees():
    jaxopt = pytest.importorskip("jaxopt")
    with jax.enable_x64(True):
        objective, data, theta = _problem("ridge_per_feature")

        def inner_solve(init, th):
            return objective.inner_solution(th, data)

        optimality = jax.grad(objective.inner_loss)
        # jaxopt's own CG to the same tolerance as ours (its default stops at 1e-5)
        solve = functools.partial(jaxopt.linear_solve.solve_cg, tol=1e-12, maxiter=100)
        solver = jaxopt.implicit_diff.custom_root(lambda w, th: optimality(w, th, data), solve=solve)(inner_solve)
        peer = jax.grad(lambda th: objective.outer_loss(solver(data["w0"], th), th, data))(theta)
        ours = Implicit(CG(tol=1e-12, maxiter=100))(objective, Exact(), theta, data["w0"], jnp.zeros(10), data).grad
        assert _rel(ours, peer) < 1e-8


def test_block_cg_solves_each_block_to_its_own_tolerance():
    """CG with ``blocks``: on a block-diagonal system whose blocks differ in conditioning
    by 10^4 and in scale by 10^3, every block meets ||r_i|| <= tol ||b_i|| (the joint solve
    stops at the joint test, leaving the small block unsolved) and matches a dense solve."""
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 3)
        A = [jax.random.normal(k, (20, 20)) for k in keys]
        spectra = [jnp.linspace(1, 10, 20), jnp.linspace(1e-3, 10, 20), jnp.linspace(1, 2, 20)]
        Qs = [jnp.linalg.qr(a)[0] for a in A]
        H = jnp.stack([Q @ jnp.diag(s) @ Q.T for Q, s in zip(Qs, spectra, strict=True)])
        b = jnp.stack([jnp.ones(20), 1e-3 * jnp.arange(20.0), jnp.ones(20)])
        matvec = lambda x: jnp.einsum("bij,bj->bi", H, x.reshape(3, 20)).reshape(-1)
        tol = 1e-6
        x, info = CG(tol=tol, maxiter=500).solve(matvec, b.reshape(-1), jnp.zeros(60), blocks=3)
        r = (matvec(x) - b.reshape(-1)).reshape(3, 20)
        assert bool(info.converged)
        assert (jnp.linalg.norm(r, axis=1) <= tol * jnp.linalg.norm(b, axis=1)).all()
        np.testing.assert_allclose(x.reshape(3, 20), jnp.linalg.solve(H, b[..., None])[..., 0], rtol=1e-4)
        joint, _ = CG(tol=tol, maxiter=500).solve(matvec, b.reshape(-1), jnp.zeros(60))
        r_joint = (matvec(joint) - b.reshape(-1)).reshape(3, 20)
        assert jnp.linalg.norm(r_joint[1]) > tol * jnp.linalg.norm(b[1])
