"""The value function ``h(theta) = F(w*(theta), theta)`` at a point, accurately: the
reference that every method's iterates are measured against.

* With a closed form (``Objective.inner_solution``): ``w*`` and the hypergradient from it
  (:func:`src.core.hypergrad.exact_hypergrad`), ``v*`` from ``Objective.adjoint`` or solved.
* Otherwise, with ``newton_steps``: Newton's method from the method's current ``w`` on the
  full-batch inner problem (dense Hessian and direct solves up to ``DENSE_MAX`` unknowns,
  matrix-free conjugate gradients beyond), then ``v*`` and the hypergradient there.
* Otherwise there is no reference (``None``).

``v* = -H^{-1} d_w F`` is the sign that single-loop methods track (SOBA's ``v``);
a nested method's implicit-system solution ``u`` is ``-v``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from src.core.hypergrad import exact_hypergrad
from src.core.objective import Objective, losses

DENSE_MAX = 1000  # unknowns up to which Hessians are materialized
CG_MAXITER = 500


class Reference(NamedTuple):
    w: Any  # w*(theta)
    v: Any  # v*(theta), shaped like w
    value: Any  # h(theta)
    grad: Any  # grad h(theta), shaped like theta


def _solve(matvec, b, n: int):
    """``H x = b`` for the symmetric positive definite ``H`` of ``matvec``."""
    if n <= DENSE_MAX:
        return jnp.linalg.solve(jax.jacfwd(matvec)(jnp.zeros_like(b)), b)
    tol = 10 * jnp.finfo(b.dtype).eps
    return jax.scipy.sparse.linalg.cg(matvec, b, tol=tol, maxiter=CG_MAXITER)[0]


def reference(objective: Objective, theta, w, data, newton_steps: int | None) -> Reference | None:
    """``h``, its gradient, ``w*`` and ``v*`` at ``theta`` (``w``: where Newton starts)."""
    if objective.inner_solution is None and (not newton_steps or objective.prox is not None):
        return None  # (Newton's method does not apply to a non-smooth inner problem)
    w_flat, unravel = ravel_pytree(w)
    n = w_flat.shape[0]
    grad_w = lambda wf, th: ravel_pytree(jax.grad(objective.inner_loss)(unravel(wf), th, data))[0]

    if objective.inner_solution is not None:
        w_star = ravel_pytree(objective.inner_solution(theta, data))[0]
    else:

        def newton(wf, _):
            hvp = lambda x: jax.jvp(lambda y: grad_w(y, theta), (wf,), (x,))[1]
            return wf - _solve(hvp, grad_w(wf, theta), n), None

        w_star = jax.lax.scan(newton, w_flat, None, length=newton_steps)[0]
    w_star = jax.lax.stop_gradient(w_star)
    dF_dw, dF_dtheta = jax.grad(objective.outer_loss, argnums=(0, 1))(unravel(w_star), theta, data)
    if objective.adjoint is not None:
        v_star = ravel_pytree(objective.adjoint(theta, data))[0]
    else:
        hvp = lambda x: jax.jvp(lambda y: grad_w(y, theta), (w_star,), (x,))[1]
        v_star = -_solve(hvp, ravel_pytree(dF_dw)[0], n)
    if objective.inner_solution is not None:
        grad = exact_hypergrad(objective, theta, data)
    else:  # grad h = d_theta F + (d_theta grad_w G)^T v*
        cross = jax.vjp(lambda th: grad_w(w_star, th), theta)[1](v_star)[0]
        grad = jax.tree.map(jnp.add, dF_dtheta, cross)
    value = losses(objective, unravel(w_star), theta, data)[1]
    return Reference(unravel(w_star), unravel(v_star), value, grad)
