"""Hypergradients ``dF(w*(theta), theta)/dtheta``.

Both methods share one signature, ``method(theta, w_init, u0, data) -> Hypergrad``: they
solve the inner problem from ``w_init`` themselves (``unrolled`` has to differentiate
through that solve) and return the inner solution with the hypergradient.

* ``implicit``: with ``v = d_w F`` solve ``H^T u = v`` (``H = d2_ww G``, its products
  by reverse mode through ``grad_w G``, symmetric for gradient-based inner problems) and take
  ``dF/dtheta = d_theta F - (d2_theta,w G)^T u`` as one VJP.
* ``unrolled``: reverse mode through the inner ``lax.scan``; ``truncate=K``
  differentiates only the last ``K`` inner steps.

:func:`exact_hypergrad` is the reference where the objective has a closed form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from src import inner as inner_lib
from src import linsolve
from src.objectives import Objective


class Hypergrad(NamedTuple):
    w: Any  # inner solution at theta
    grad: Any  # hypergradient, shaped like theta
    u: Any  # flat solution of the implicit system (zeros for unrolled)
    inner: inner_lib.InnerInfo
    linsolve: linsolve.LinsolveInfo


def make_implicit(objective: Objective, solver: inner_lib.InnerSolver, lin_cfg: dict) -> Callable:
    G, F = objective.inner_loss, objective.outer_loss
    name = lin_cfg["name"]
    opts = {k: v for k, v in lin_cfg.items() if k not in ("name", "warm_start")}
    warm = bool(lin_cfg.get("warm_start", False))

    def method(theta, w_init, u0, data) -> Hypergrad:
        w, iterations = inner_lib.solve(solver, objective, w_init, theta, data)
        w = jax.lax.stop_gradient(w)
        w_flat, unravel = ravel_pytree(w)
        grad_w = lambda wf, th: ravel_pytree(jax.grad(G)(unravel(wf), th, data))[0]
        dF_dw, dF_dtheta = jax.grad(F, argnums=(0, 1))(w, theta, data)
        v = ravel_pytree(dF_dw)[0]
        # H^T u by reverse mode (= H u for the symmetric Hessians of gradient-based inner
        # problems); its primal output is grad_w G at w, the inner stationarity, for free.
        # One linearization serves both: the solve uses its w-part, the last VJP its theta-part.
        g, vjp = jax.vjp(grad_w, w_flat, theta)
        x0 = u0 if warm else jnp.zeros_like(v)
        u, lin_info = linsolve.solve(name, lambda x: vjp(x)[0], v, x0, **opts)
        hg = jax.tree.map(jnp.subtract, dF_dtheta, vjp(u)[1])
        inner_info = inner_lib.InnerInfo(iterations, jnp.linalg.norm(g))
        return Hypergrad(w, hg, u, inner_info, lin_info)

    return method


def make_unrolled(objective: Objective, solver: inner_lib.InnerSolver, truncate: int | None) -> Callable:
    F = objective.outer_loss
    steps = solver.steps
    detached = 0 if truncate is None else max(steps - truncate, 0)

    def method(theta, w_init, u0, data) -> Hypergrad:
        def outer_of(th):
            if solver.exact is not None:
                w = solver.exact(th, data)
            else:
                state = solver.init(w_init, th, data)
                state = inner_lib.run_steps(solver, state, th, data, detached)
                state = jax.lax.stop_gradient(state) if detached else state
                w = solver.params(inner_lib.run_steps(solver, state, th, data, steps - detached))
            return F(w, th, data), w

        (_, w), hg = jax.value_and_grad(outer_of, has_aux=True)(theta)
        w = jax.lax.stop_gradient(w)
        grad_norm = optax.tree.norm(jax.grad(objective.inner_loss)(w, theta, data))
        iterations = jnp.asarray(0 if solver.exact is not None else steps, jnp.int32)
        nan = jnp.asarray(jnp.nan, grad_norm.dtype)
        lin_info = linsolve.LinsolveInfo(jnp.asarray(0, jnp.int32), nan, jnp.asarray(True))
        return Hypergrad(w, hg, u0, inner_lib.InnerInfo(iterations, grad_norm), lin_info)

    return method


def make_hypergrad(cfg: dict, objective: Objective, solver: inner_lib.InnerSolver) -> Callable:
    """The hypergradient method of a merged config (``hypergrad`` and ``linear_solver``)."""
    if cfg["hypergrad"]["name"] == "unrolled":
        return make_unrolled(objective, solver, cfg["hypergrad"].get("truncate"))
    return make_implicit(objective, solver, cfg["linear_solver"])


def newton_reference(objective: Objective, theta, w, data, steps: int):
    """Reference hypergradient where no closed form exists: ``steps`` Newton steps from ``w``
    (dense Hessian, direct solves) to an exactly solved inner problem, then a direct solve of
    the implicit system there."""
    w_flat, unravel = ravel_pytree(w)
    grad_w = lambda wf, th: ravel_pytree(jax.grad(objective.inner_loss)(unravel(wf), th, data))[0]

    def newton(wf, _):
        return wf - jnp.linalg.solve(jax.jacfwd(grad_w)(wf, theta), grad_w(wf, theta)), None

    w_star = jax.lax.scan(newton, w_flat, None, length=steps)[0]
    exact = objective._replace(inner_solution=lambda th, d: unravel(w_star))
    method = make_implicit(exact, inner_lib.make_inner_solver({"name": "exact", "steps": 1}, exact), {"name": "direct"})
    return method(theta, unravel(w_star), jnp.zeros_like(w_flat), data).grad


def exact_hypergrad(objective: Objective, theta, data):
    """Closed-form hypergradient, or autodiff through the closed-form inner solution."""
    if objective.hypergrad is not None:
        return objective.hypergrad(theta, data)
    w_star = objective.inner_solution
    return jax.grad(lambda th: objective.outer_loss(w_star(th, data), th, data))(theta)
