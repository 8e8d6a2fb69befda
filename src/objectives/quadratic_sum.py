"""benchmark_bilevel's simulated finite-sum quadratic, with closed forms.

Each sample ``i`` of the inner sum and ``j`` of the outer sum is a quadratic in ``(z, x)``
(``z``: inner variable of ``dim_inner``, ``x``: outer variable of ``dim_outer``):

    q_i(z, x) = 1/2 z^T H_i z + 1/2 x^T K_i x + x^T C_i z + a_i^T z + b_i^T x

with ``H_i = s_i s_i^T``, ``K_i = r_i r_i^T`` and ``C_i = p_i q_i^T`` empirical
correlations of one Gaussian sample each, so that their means have the spectra of the
benchmark: the ``z``-Hessians in ``[mu, L_inner]``, the ``x``-Hessians in
``{0} u [mu, L_outer]`` and the cross terms' singular values in ``[mu, L_cross_inner]``
(inner sum) and ``[mu, L_cross_outer]`` (outer sum). Only the factors ``s, r, p, q, a, b`` are stored (one
row per sample), never ``n x d x d`` matrices. ``G`` and ``F`` are the means over the inner
and outer samples; with the means ``H, C, a`` of the inner sum,
``z*(x) = -H^{-1}(a + C^T x)`` and the value function ``h(x) = F(z*(x), x)`` is a
quadratic whose Hessian is redrawn (up to 20 tries, as the benchmark does) until it is
positive definite. ``instance_seed`` draws the instance; the job's ``seed`` drives only
the samplers, so the seeds of a study share one problem.

The start is the benchmark's: ``z_0 = 0`` and ``x_0 = theta_init`` (-2) in every coordinate.
"""

from __future__ import annotations

import functools
from typing import Annotated

import annotated_types as at
import jax.numpy as jnp
import numpy as np

from src.core import sampling
from src.objectives import Objective

INNER = ("s_in", "r_in", "p_in", "q_in", "a_in", "b_in")
OUTER = ("s_out", "r_out", "p_out", "q_out", "a_out", "b_out")


def _factors(rng, n, d_in, d_out, L_inner, L_outer, L_cross, mu):
    """Per-sample factors whose correlations have the benchmark's spectra."""

    def sqrt_cov(d, lo, hi, zero=False):
        U, _ = np.linalg.qr(rng.standard_normal((d, d)))
        spectrum = np.geomspace(np.sqrt(lo), np.sqrt(hi), d - zero)
        return (U * np.r_[[0.0] * zero, spectrum]) @ U.T

    s = rng.standard_normal((n, d_in)) @ sqrt_cov(d_in, mu, L_inner)
    r = rng.standard_normal((n, d_out)) @ sqrt_cov(d_out, mu, L_outer, zero=d_out > 1)
    U, _, Vt = np.linalg.svd(rng.standard_normal((d_out, d_in)))
    k = min(d_in, d_out)
    D = np.zeros((d_out, d_in))
    D[:k, :k] = np.diag(np.geomspace(mu, L_cross, k))
    g = rng.standard_normal((n, d_in))
    p = g @ (U @ D).T  # (U D g_i): d_out
    q = g @ Vt.T  # (V g_i): d_in  -> C_i = p_i q_i^T has mean U D V
    return s, r, p, q, rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out))


def _means(s, r, p, q, a, b):
    n = len(s)
    return s.T @ s / n, r.T @ r / n, p.T @ q / n, a.mean(0), b.mean(0)


def _value_hessian_min_eig(inner, outer) -> float:
    H, _, C, _, _ = inner
    Ho, Ko, Co, _, _ = outer
    J = -np.linalg.solve(H, C.T)  # dz*/dx
    hess = J.T @ Ho @ J + Ko + (Co @ J + (Co @ J).T)
    return float(np.linalg.eigvalsh((hess + hess.T) / 2).min())


def make(
    n_inner: Annotated[int, at.Ge(1)] = 32768,
    n_outer: Annotated[int, at.Ge(1)] = 1024,
    dim_inner: Annotated[int, at.Ge(1)] = 100,
    dim_outer: Annotated[int, at.Ge(1)] = 10,
    instance_seed: int = 2442,
) -> Objective:
    def data(
        seed: int,
        mu: Annotated[float, at.Gt(0)] = 0.1,
        L_inner: Annotated[float, at.Gt(0)] = 1.0,
        L_outer: Annotated[float, at.Gt(0)] = 1.0,
        L_cross_inner: Annotated[float, at.Gt(0)] = 0.1,
        L_cross_outer: Annotated[float, at.Gt(0)] = 0.1,
        theta_init: float = -2.0,
    ):
        del seed  # the instance is drawn from instance_seed; seed drives the samplers
        arrays = _instance(
            n_inner, n_outer, dim_inner, dim_outer, instance_seed, mu, L_inner, L_outer, L_cross_inner, L_cross_outer
        )
        inner_means = dict(zip(("H", "K", "C", "a", "b"), _means(*(arrays[k] for k in INNER)), strict=True))
        outer_means = dict(zip(("H", "K", "C", "a", "b"), _means(*(arrays[k] for k in OUTER)), strict=True))
        means = {f"{k}_in_mean": v for k, v in inner_means.items()} | {
            f"{k}_out_mean": v for k, v in outer_means.items()
        }
        return {**arrays, **means, "theta0": np.full(dim_outer, theta_init), "w0": np.zeros(dim_inner)}

    def per_sample(z, x, d, keys):
        s, r, p, q, a, b = (d[k] for k in keys)
        return 0.5 * (s @ z) ** 2 + 0.5 * (r @ x) ** 2 + (p @ x) * (q @ z) + a @ z + b @ x

    def inner_loss(z, x, d):
        return sampling.mean(per_sample(z, x, d, INNER), d, "inner")

    def outer_loss(z, x, d):
        return sampling.mean(per_sample(z, x, d, OUTER), d, "outer")

    def means(d, part):  # the full sums' matrices, stored with the data
        return tuple(d[f"{k}_{part}_mean"] for k in ("H", "K", "C", "a", "b"))

    def quadratic(z, x, d, part):
        H, K, C, a, b = means(d, part)
        return 0.5 * z @ H @ z + 0.5 * x @ K @ x + x @ C @ z + a @ z + b @ x

    def full_losses(z, x, d):  # the means of the samples' quadratics: O(d^2), not O(n d)
        return quadratic(z, x, d, "in"), quadratic(z, x, d, "out")

    def inner_solution(x, d):
        H, _, C, a, _ = means(d, "in")
        return -jnp.linalg.solve(H, a + C.T @ x)

    def outer_grads(x, d):
        Ho, Ko, Co, ao, bo = means(d, "out")
        z = inner_solution(x, d)
        return Ho @ z + Co.T @ x + ao, Ko @ x + Co @ z + bo

    def adjoint(x, d):
        return -jnp.linalg.solve(means(d, "in")[0], outer_grads(x, d)[0])

    def hypergrad(x, d):
        return outer_grads(x, d)[1] + means(d, "in")[2] @ adjoint(x, d)

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        inner_solution=inner_solution,
        hypergrad=hypergrad,
        adjoint=adjoint,
        randomness="",
        inner_samples=INNER,
        outer_samples=OUTER,
        full_losses=full_losses,
    )


@functools.lru_cache(maxsize=8)
def _instance(n_in, n_out, d_in, d_out, instance_seed, mu, L_inner, L_outer, L_cross_inner, L_cross_outer):
    rng = np.random.default_rng(instance_seed)
    for _ in range(20):
        inner = _factors(rng, n_in, d_in, d_out, L_inner, L_outer, L_cross_inner, mu)
        outer = _factors(rng, n_out, d_in, d_out, L_inner, L_outer, L_cross_outer, mu)
        if _value_hessian_min_eig(_means(*inner), _means(*outer)) >= 1e-12:
            break
    else:
        raise ValueError(f"no instance with a positive definite value-function Hessian in 20 draws (mu={mu})")
    out = dict(zip(INNER, inner, strict=True)) | dict(zip(OUTER, outer, strict=True))
    for v in out.values():
        v.setflags(write=False)
    return out
