"""Linear solvers for the implicit system ``H u = v``.

Every solver has one signature, ``solve(matvec, b, x0, **opts) -> (x, LinsolveInfo)``,
on flat vectors; ``H`` is only reached through ``matvec`` (a Hessian-vector product)
except by ``direct``, which materializes it. Krylov methods are lineax's; ``neumann``,
``identity`` and ``direct`` are a few lines each. Tolerances are traced values (they
can differ inside one vmapped batch); ``maxiter`` and ``restart`` are static.

The residual ``||H x - b||`` is measured the same way for every solver (one extra
matvec), so that solvers are compared on one figure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class LinsolveInfo(NamedTuple):
    iterations: Any  # int32: matvec-iterations the solver took
    residual: Any  # ||H x - b||_2
    converged: Any  # bool: the solver's own stopping test (True for direct/identity/neumann)


Matvec = Callable[[jax.Array], jax.Array]


def _lineax(kind: str) -> Callable:
    def solve(matvec: Matvec, b, x0, *, tol, maxiter: int, restart: int = 20, **_):
        import lineax as lx

        structure = jax.ShapeDtypeStruct(b.shape, b.dtype)
        tags = (lx.symmetric_tag, lx.positive_semidefinite_tag) if kind == "cg" else ()
        op = lx.FunctionLinearOperator(matvec, structure, tags=tags)
        common = dict(rtol=tol, atol=0.0, norm=lx.internal.two_norm, max_steps=maxiter)
        if kind == "cg":
            solver = lx.CG(**common)
        elif kind == "gmres":
            solver = lx.GMRES(**common, restart=min(restart, b.size), stagnation_iters=maxiter)
        else:
            solver = lx.BiCGStab(**common)
        sol = lx.linear_solve(op, b, solver, options={"y0": x0}, throw=False)
        converged = sol.result == lx.RESULTS.successful
        return sol.value, sol.stats["num_steps"], converged

    return solve


def _neumann(matvec: Matvec, b, x0, *, maxiter: int, step_size, **_):
    """Truncated Neumann series ``u = a sum_k (I - a H)^k b`` (Richardson iteration)."""

    def body(u, _):
        return u + step_size * (b - matvec(u)), None

    u, _ = jax.lax.scan(body, x0, None, length=maxiter)
    return u, jnp.asarray(maxiter, jnp.int32), jnp.asarray(True)


def _identity(matvec: Matvec, b, x0, **_):
    """Jacobian-free approximation: ``H`` replaced by the identity."""
    return b, jnp.asarray(0, jnp.int32), jnp.asarray(True)


def _direct(matvec: Matvec, b, x0, **_):
    """Materialize ``H`` (n matvecs) and solve it by LU; for small problems."""
    H = jax.vmap(matvec, out_axes=1)(jnp.eye(b.size, dtype=b.dtype))
    return jnp.linalg.solve(H, b), jnp.asarray(1, jnp.int32), jnp.asarray(True)


SOLVERS: dict[str, Callable] = {
    "cg": _lineax("cg"),
    "gmres": _lineax("gmres"),
    "bicgstab": _lineax("bicgstab"),
    "neumann": _neumann,
    "identity": _identity,
    "direct": _direct,
}


def solve(name: str, matvec: Matvec, b, x0, **opts) -> tuple[jax.Array, LinsolveInfo]:
    """Solve ``matvec(x) = b`` from ``x0`` with the solver ``name``; diagnostics as data."""
    x, iterations, converged = SOLVERS[name](matvec, b, x0, **opts)
    residual = jnp.linalg.norm(matvec(x) - b)
    return x, LinsolveInfo(jnp.asarray(iterations, jnp.int32), residual, converged)
