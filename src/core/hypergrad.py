"""Hypergradients ``dF(w*(theta), theta)/dtheta``: how to differentiate, separate from how
to solve (as optimistix's adjoints are).

A hypergradient method is a small frozen object with one method,
``method(objective, inner, theta, w_init, u0, data) -> Hypergrad``: it solves the inner
problem from ``w_init`` with the inner solver ``inner`` itself (``Unrolled`` has to
differentiate through that solve) and returns the inner solution with the hypergradient.

* ``Implicit(linear_solver)``: with ``v = d_w F`` solve ``H^T u = v`` (``H = d2_ww G``, its
  products by reverse mode through ``grad_w G``, symmetric for gradient-based inner
  problems) and take ``dF/dtheta = d_theta F - (d2_theta,w G)^T u`` as one VJP. For a
  composite inner problem (``Objective.prox``) the condition is the fixed point
  ``w = T(w, theta)``: ``(I - d_w T)^T u = v`` and ``dF/dtheta = d_theta F + (d_theta T)^T u``
  (:func:`optimality`).
* ``Unrolled(truncate)``: reverse mode through the inner ``lax.scan``; ``truncate=K``
  differentiates only the last ``K`` inner steps.

:func:`exact_hypergrad` is the reference where the objective has a closed form
(:mod:`src.core.reference` computes it otherwise).
"""

from __future__ import annotations

from typing import Annotated, Any, NamedTuple

import annotated_types as at
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from src.core.frozen import frozen, static
from src.core.inner import InnerInfo
from src.core.linsolve import LinsolveInfo
from src.core.objective import Objective
from src.core.protocol import LinearSolver


class Hypergrad(NamedTuple):
    w: Any  # inner solution at theta
    grad: Any  # hypergradient, shaped like theta
    u: Any  # flat solution of the implicit system (zeros for unrolled)
    inner: InnerInfo
    linsolve: LinsolveInfo


def optimality(objective: Objective, unravel, data):
    """The inner solution's optimality condition ``r(w_flat, theta) = 0``: ``grad_w G`` for a
    smooth inner problem (its Jacobian, the Hessian, is symmetric), ``w - T(w, theta)`` for a
    composite one, ``T`` the proximal gradient map at step ``1 / L`` (not symmetric)."""
    if objective.prox is None:
        return lambda wf, th: ravel_pytree(jax.grad(objective.inner_loss)(unravel(wf), th, data))[0]

    def residual(wf, th):
        from src.core.inner import prox_step

        step = jax.lax.stop_gradient(1.0 / objective.lipschitz(th, data))
        return wf - ravel_pytree(prox_step(objective, unravel(wf), th, data, step))[0]

    return residual


@frozen
class Implicit:
    """Implicit differentiation: the implicit system solved by ``linear_solver``."""

    linear_solver: LinearSolver

    def __call__(self, objective: Objective, inner, theta, w_init, u0, data) -> Hypergrad:
        F = objective.outer_loss
        w, iterations = inner.solve(objective, w_init, theta, data)
        w = jax.lax.stop_gradient(w)
        w_flat, unravel = ravel_pytree(w)
        grad_w = optimality(objective, unravel, data)
        dF_dw, dF_dtheta = jax.grad(F, argnums=(0, 1))(w, theta, data)
        v = ravel_pytree(dF_dw)[0]
        # H^T u by reverse mode (= H u for the symmetric Hessians of gradient-based inner
        # problems); its primal output is grad_w G at w, the inner stationarity, for free.
        # One linearization serves both: the solve uses its w-part, the last VJP its theta-part.
        g, vjp = jax.vjp(grad_w, w_flat, theta)
        x0 = u0 if self.linear_solver.warm_start else jnp.zeros_like(v)
        blocks = w.shape[0] if objective.blocks else 1
        u, lin_info = self.linear_solver.solve(lambda x: vjp(x)[0], v, x0, blocks)
        hg = jax.tree.map(jnp.subtract, dF_dtheta, vjp(u)[1])
        return Hypergrad(w, hg, u, InnerInfo(iterations, jnp.linalg.norm(g)), lin_info)


@frozen
class Unrolled:
    """Reverse mode through the inner solver's steps (the last ``truncate`` of them)."""

    truncate: Annotated[int, at.Ge(1)] | None = static(None)

    def __call__(self, objective: Objective, inner, theta, w_init, u0, data) -> Hypergrad:
        def outer_of(th):
            w = inner.unrolled(objective, w_init, th, data, self.truncate)
            return objective.outer_loss(w, th, data), w

        (_, w), hg = jax.value_and_grad(outer_of, has_aux=True)(theta)
        w = jax.lax.stop_gradient(w)
        grad_norm = optax.tree.norm(jax.grad(objective.inner_loss)(w, theta, data))
        nan = jnp.asarray(jnp.nan, grad_norm.dtype)
        lin_info = LinsolveInfo(jnp.asarray(0, jnp.int32), nan, jnp.asarray(True))
        return Hypergrad(w, hg, u0, InnerInfo(jnp.asarray(inner.steps, jnp.int32), grad_norm), lin_info)


def exact_hypergrad(objective: Objective, theta, data):
    """Closed-form hypergradient, or autodiff through the closed-form inner solution."""
    if objective.hypergrad is not None:
        return objective.hypergrad(theta, data)
    w_star = objective.inner_solution
    return jax.grad(lambda th: objective.outer_loss(w_star(th, data), th, data))(theta)
