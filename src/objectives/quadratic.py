"""Synthetic strongly convex bilevel quadratic with closed forms.

``G(w, theta) = 1/2 w^T A w - w^T (B theta + b)`` with ``A`` symmetric positive
definite of condition number ``cond``; ``F(w, theta) = 1/2 ||w - target||^2 +
reg/2 ||theta||^2``. Then ``w*(theta) = A^{-1}(B theta + b)`` and
``dF/dtheta = B^T A^{-1} (w* - target) + reg theta``. ``seed`` draws ``A``'s
eigenvectors, ``B``, ``b`` and ``target``.
"""

from __future__ import annotations

from typing import Annotated

import annotated_types as at
import jax.numpy as jnp
import numpy as np

from src.objectives import Objective


def make(dim_inner: Annotated[int, at.Ge(1)] = 10, dim_outer: Annotated[int, at.Ge(1)] = 5) -> Objective:
    n, m = dim_inner, dim_outer

    def data(
        seed: int,
        cond: Annotated[float, at.Ge(1)] = 10.0,
        reg: Annotated[float, at.Ge(0)] = 0.1,
        theta_init: float = 0.0,
    ):
        rng = np.random.default_rng(seed)
        Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        A = (Q * np.geomspace(1.0, cond, n)) @ Q.T
        return {
            "A": (A + A.T) / 2,
            "B": rng.standard_normal((n, m)) / np.sqrt(m),
            "b": rng.standard_normal(n),
            "target": rng.standard_normal(n),
            "reg": np.asarray(reg),
            "theta0": np.full(m, theta_init),
            "w0": np.zeros(n),
        }

    def inner_loss(w, theta, d):
        return 0.5 * w @ d["A"] @ w - w @ (d["B"] @ theta + d["b"])

    def outer_loss(w, theta, d):
        return 0.5 * jnp.sum((w - d["target"]) ** 2) + 0.5 * d["reg"] * jnp.sum(theta**2)

    def inner_solution(theta, d):
        return jnp.linalg.solve(d["A"], d["B"] @ theta + d["b"])

    def hypergrad(theta, d):
        w = inner_solution(theta, d)
        return d["B"].T @ jnp.linalg.solve(d["A"], w - d["target"]) + d["reg"] * theta

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=lambda w, theta, d: {"w_error": jnp.linalg.norm(w - inner_solution(theta, d))},
        inner_solution=inner_solution,
        hypergrad=hypergrad,
        randomness="A's eigenvectors, B, b and the target",
    )
