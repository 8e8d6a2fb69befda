"""Linear solvers for the implicit system ``H u = v``.

A linear solver is a small frozen object (:mod:`src.core.frozen`) with one method,
``solver.solve(matvec, b, x0, blocks=1) -> (x, LinsolveInfo)``, on flat vectors: ``CG(tol,
maxiter)``, ``GMRES(tol, maxiter, restart)``, ``BiCGStab(tol, maxiter)``,
``Neumann(step_size, maxiter)``, ``Direct()``, ``Identity()``. ``H`` is only reached
through ``matvec`` (a Hessian-vector product) except by ``Direct``, which materializes
it. Tolerances and step sizes are traced leaves (they can differ inside one vmapped
batch); ``maxiter``, ``restart`` and ``warm_start`` (start from the previous outer
step's solution) are static. Their values have no defaults here: those live in
``conf/linear_solver/*.yaml``. ``symmetric_only``: the solver needs a symmetric ``H``.
``blocks``: ``H`` is block diagonal with that many equal blocks (iMAML's tasks); CG then
runs one recurrence per block (each block converges at its own rate), the other solvers
solve the whole system, which has the same solution.

The Krylov solvers are written here as ``lax.while_loop``s rather than taken from
``jax.scipy.sparse.linalg`` (which returns no iteration count) or lineax (whose
tolerance is scaled elementwise by ``|b|``, which fails on right-hand sides with exact
zeros, and whose breakdown tests stop CG early on ill-conditioned float32 systems). They
stop on the conventional ``||H x - b|| <= tol ||b||``, as jax.scipy and the seed do.

Each solver returns ``(x, iterations, converged, residual)``: the Krylov methods the
residual norm their recurrence tracks (CG and BiCGSTAB: the updated residual vector,
GMRES: the true residual after each cycle), the others ``None``, which :func:`_info`
replaces by ``||H x - b||`` at one extra matvec.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar, NamedTuple

import annotated_types as at
import jax
import jax.numpy as jnp

from src.core.frozen import frozen, static

Tol = Annotated[float, at.Ge(0)]  # the options' ranges, checked on a config by src.config.schemas
Maxiter = Annotated[int, at.Ge(1)]


class LinsolveInfo(NamedTuple):
    iterations: Any  # int32: matvec-iterations the solver took
    residual: Any  # ||H x - b||_2 (as the Krylov recurrence tracks it)
    converged: Any  # bool: the solver's own stopping test (True for direct/identity/neumann)


Matvec = Callable[[jax.Array], jax.Array]


def _div(a, b):
    """``a / b``, 0 where ``b`` is 0 (breakdown of a Krylov recurrence)."""
    safe = jnp.where(b == 0, 1, b)
    return jnp.where(b == 0, 0, a / safe)


def _cg(matvec: Matvec, b, x0, *, tol, maxiter: int, blocks: int = 1):
    """Conjugate gradients for symmetric positive definite ``H``. With ``blocks > 1``, ``H``
    is block diagonal (``blocks`` equal blocks along ``b``): one CG per block, each with its
    own step sizes and its own stopping test ``||r_i|| <= tol ||b_i||``, run side by side
    (one matvec applies every block); a block that has converged stays where it is."""
    shape = b.shape
    mv = lambda x: matvec(x.reshape(shape)).reshape(blocks, -1)
    b, x0 = b.reshape(blocks, -1), x0.reshape(blocks, -1)
    dot = lambda a, c: jnp.sum(a * c, axis=-1, keepdims=True)
    thresh = tol**2 * dot(b, b)
    r = b - mv(x0)

    def cond(c):
        k, _, _, _, rs = c
        return (k < maxiter) & jnp.any(rs > thresh)

    def body(c):
        k, x, r, p, rs = c
        Ap = mv(p)
        # p != 0 while rs > thresh >= 0; p'Hp = 0 only if H is singular (then: no step)
        alpha = jnp.where(rs > thresh, _div(rs, dot(p, Ap)), 0)
        x, r = x + alpha * p, r - alpha * Ap
        rs_new = dot(r, r)
        return k + 1, x, r, r + _div(rs_new, rs) * p, rs_new

    k, x, _, _, rs = jax.lax.while_loop(cond, body, (0, x0, r, r, dot(r, r)))
    return x.reshape(shape), k, jnp.all(rs <= thresh), jnp.sqrt(jnp.sum(rs))


def _bicgstab(matvec: Matvec, b, x0, *, tol, maxiter: int):
    """BiCGSTAB (van der Vorst) for general ``H``; two matvecs per iteration."""
    thresh = tol**2 * jnp.vdot(b, b)
    r = b - matvec(x0)
    one = jnp.ones((), b.dtype)

    def cond(c):
        return (c[0] < maxiter) & (jnp.vdot(c[2], c[2]) > thresh)

    def body(c):
        k, x, r, rhat, p, v, rho, alpha, omega = c
        rho_new = jnp.vdot(rhat, r)
        beta = _div(rho_new, rho) * _div(alpha, omega)
        p = r + beta * (p - omega * v)
        v = matvec(p)
        alpha = _div(rho_new, jnp.vdot(rhat, v))
        s = r - alpha * v
        t = matvec(s)
        omega = _div(jnp.vdot(t, s), jnp.vdot(t, t))
        return k + 1, x + alpha * p + omega * s, s - omega * t, rhat, p, v, rho_new, alpha, omega

    zero = jnp.zeros_like(b)
    init = (0, x0, r, r, zero, zero, one, one, one)
    k, x, r, *_ = jax.lax.while_loop(cond, body, init)
    return x, k, jnp.vdot(r, r) <= thresh, jnp.linalg.norm(r)


def _gmres(matvec: Matvec, b, x0, *, tol, maxiter: int, restart: int):
    """Restarted GMRES(m): ``m`` Arnoldi steps (Gram-Schmidt applied twice), then a
    least-squares solve, until ``||r|| <= tol ||b||``; ``maxiter`` caps Arnoldi steps."""
    m = min(restart, b.size)
    cycles = -(-maxiter // m)
    thresh = tol * jnp.linalg.norm(b)

    def cycle(x):
        r = b - matvec(x)
        beta = jnp.linalg.norm(r)
        V = jnp.zeros((m + 1, b.size), b.dtype).at[0].set(_div(r, beta))
        H = jnp.zeros((m + 1, m), b.dtype)

        def arnoldi(j, VH):
            V, H = VH
            w = matvec(V[j])
            h = V @ w
            w = w - V.T @ h
            h2 = V @ w
            w = w - V.T @ h2
            norm = jnp.linalg.norm(w)
            H = H.at[:, j].set(h + h2).at[j + 1, j].set(norm)
            return V.at[j + 1].set(_div(w, norm)), H

        V, H = jax.lax.fori_loop(0, m, arnoldi, (V, H))
        y = jnp.linalg.lstsq(H, jnp.zeros(m + 1, b.dtype).at[0].set(beta))[0]
        return x + V[:m].T @ y

    def cond(c):
        return (c[0] < cycles) & (c[2] > thresh)

    def body(c):
        k, x, _ = c
        x = cycle(x)
        return k + 1, x, jnp.linalg.norm(b - matvec(x))

    k, x, res = jax.lax.while_loop(cond, body, (0, x0, jnp.linalg.norm(b - matvec(x0))))
    return x, k * m, res <= thresh, res


def _neumann(matvec: Matvec, b, x0, *, maxiter: int, step_size):
    """Truncated Neumann series ``u = a sum_k (I - a H)^k b`` (Richardson iteration)."""

    def body(u, _):
        return u + step_size * (b - matvec(u)), None

    u, _ = jax.lax.scan(body, x0, None, length=maxiter)
    return u, jnp.asarray(maxiter, jnp.int32), jnp.asarray(True), None


def _identity(matvec: Matvec, b, x0):
    """Jacobian-free approximation: ``H`` replaced by the identity."""
    return b, jnp.asarray(0, jnp.int32), jnp.asarray(True), None


def _direct(matvec: Matvec, b, x0):
    """Materialize ``H`` (n matvecs) and solve it by LU; for small problems."""
    H = jax.vmap(matvec, out_axes=1)(jnp.eye(b.size, dtype=b.dtype))
    return jnp.linalg.solve(H, b), jnp.asarray(1, jnp.int32), jnp.asarray(True), None


def _info(matvec: Matvec, b, x, iterations, converged, residual) -> tuple[jax.Array, LinsolveInfo]:
    if residual is None:  # solvers that track no residual: one more matvec
        residual = jnp.linalg.norm(matvec(x) - b)
    return x, LinsolveInfo(jnp.asarray(iterations, jnp.int32), residual, jnp.asarray(converged))


@frozen
class _Krylov:
    """A solver stopped at ``||H x - b|| <= tol ||b||`` or ``maxiter`` iterations."""

    tol: Tol
    maxiter: Maxiter = static()
    warm_start: bool = static(False)
    algorithm: ClassVar[Callable]

    def solve(self, matvec: Matvec, b, x0, blocks: int = 1):
        return _info(matvec, b, *type(self).algorithm(matvec, b, x0, tol=self.tol, maxiter=self.maxiter))


@frozen
class CG(_Krylov):
    """Conjugate gradients; ``H`` symmetric positive definite."""

    symmetric_only: ClassVar[bool] = True

    def solve(self, matvec: Matvec, b, x0, blocks: int = 1):  # CG alone solves block by block
        return _info(matvec, b, *_cg(matvec, b, x0, tol=self.tol, maxiter=self.maxiter, blocks=blocks))


@frozen
class BiCGStab(_Krylov):
    """BiCGSTAB; general ``H``, two matvecs per iteration."""

    symmetric_only: ClassVar[bool] = False
    algorithm: ClassVar[Callable] = staticmethod(_bicgstab)


@frozen
class GMRES:
    """Restarted GMRES(restart); ``maxiter`` caps the Arnoldi steps."""

    tol: Tol
    maxiter: Maxiter = static()
    restart: Annotated[int, at.Ge(1)] = static()
    warm_start: bool = static(False)
    symmetric_only: ClassVar[bool] = False

    def solve(self, matvec: Matvec, b, x0, blocks: int = 1):
        return _info(matvec, b, *_gmres(matvec, b, x0, tol=self.tol, maxiter=self.maxiter, restart=self.restart))


@frozen
class Neumann:
    """``maxiter`` terms of the Neumann series with step ``step_size``."""

    step_size: Annotated[float, at.Gt(0)]
    maxiter: Maxiter = static()
    warm_start: bool = static(False)
    symmetric_only: ClassVar[bool] = False

    def solve(self, matvec: Matvec, b, x0, blocks: int = 1):
        return _info(matvec, b, *_neumann(matvec, b, x0, maxiter=self.maxiter, step_size=self.step_size))


@frozen
class Direct:
    """``H`` materialized and solved by LU; for small problems."""

    warm_start: ClassVar[bool] = False
    symmetric_only: ClassVar[bool] = False

    def solve(self, matvec: Matvec, b, x0, blocks: int = 1):
        return _info(matvec, b, *_direct(matvec, b, x0))


@frozen
class Identity(Direct):
    """``H`` replaced by the identity (the Jacobian-free approximation)."""

    def solve(self, matvec: Matvec, b, x0, blocks: int = 1):
        return _info(matvec, b, *_identity(matvec, b, x0))
