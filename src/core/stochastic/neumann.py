"""Stochastic Neumann series for ``H^{-1} b`` (benchmark_bilevel's ``hessian_approximation``).

* :func:`shia` (Ji, Yang & Liang 2021): ``rho sum_{k=0}^{n} prod_{j<k} (I - rho H_{B_j}) b``,
  ``n`` Hessian-vector products on fresh minibatches; the same minibatches serve every
  point of a joint call (MRBO and VRBO solve at the current and the previous iterate).
* :func:`hia` (Ghadimi & Wang 2018): one term of the series, chosen at random,
  ``n rho prod_{j<p} (I - rho H_{B_j}) b`` with ``p`` uniform in ``{0, ..., n-1}``: unbiased
  for the truncated series. The loop runs ``n`` times with the steps after ``p`` masked
  (the sampler does not advance on them), so that a batch of jobs is one program.

Both return the approximation of ``+H^{-1} b`` (the benchmark's sign); a method negates it
where it stores ``v`` with SOBA's sign. ``points`` is a tuple of ``(z, x, b)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from src.core.sampling import SamplerState
from src.core.stochastic.base import Oracles, add, axpy, scale, tmap


def shia(o: Oracles, points, rho, n: int, sampler: SamplerState):
    """``(estimates, sampler)``: the truncated series at each point, sharing minibatches."""

    def term(carry, _):
        ps, totals, sampler = carry
        b, sampler = o.inner.next(sampler)
        ps = tuple(axpy(rho, o.hvp(z, x, p, b), p) for (z, x, _), p in zip(points, ps, strict=True))
        return (ps, tuple(add(t, p) for t, p in zip(totals, ps, strict=True)), sampler), None

    rhs = tuple(b for _, _, b in points)
    (_, totals, sampler), _ = jax.lax.scan(term, (rhs, rhs, sampler), None, length=n)
    return tuple(scale(rho, t) for t in totals), sampler


def shia_full(o: Oracles, z, x, b, rho, n: int):
    """:func:`shia` with full-batch Hessian-vector products (VRBO's periodic pass)."""

    def term(carry, _):
        p, total = carry
        p = axpy(rho, o.full_hvp(z, x, p), p)
        return (p, add(total, p)), None

    (_, total), _ = jax.lax.scan(term, (b, b), None, length=n)
    return scale(rho, total)


def truncation(key, n: int):
    """``(p, next key)``: the random number of terms of :func:`hia`, uniform in ``{0, ..., n-1}``."""
    p = jax.random.randint(key, (1,), 0, n)[0]
    return p, jax.random.split(key, 1)[0]


def hia(o: Oracles, points, rho, n: int, sampler: SamplerState, p):
    """``(estimates, sampler)``: ``n rho (I - rho H)^p b`` at each point, sharing minibatches."""

    def term(carry, k):
        ps, sampler = carry
        b, moved = o.inner.next(sampler)
        on = k < p
        new = tuple(axpy(rho, o.hvp(z, x, q, b), q) for (z, x, _), q in zip(points, ps, strict=True))
        ps = tmap(lambda a, c: jnp.where(on, a, c), new, ps)
        sampler = tmap(lambda a, c: jnp.where(on, a, c), moved, sampler)
        return (ps, sampler), None

    rhs = tuple(b for _, _, b in points)
    (ps, sampler), _ = jax.lax.scan(term, (rhs, sampler), jnp.arange(n))
    return tuple(scale(n * rho, q) for q in ps), sampler
