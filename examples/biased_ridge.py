"""Example of a researcher's own objective: learn the prior mean of a ridge regression.

Inner: ``G(w, theta) = 1/2 mean((X w - y)^2) + reg/2 ||w - theta||^2`` on a training
task; outer: validation MSE on a related task. Closed form
``w* = (X^T X / n + reg I)^{-1} (X^T y / n + reg theta)``, so ``inner_solver=exact``
and the ``hypergrad_error`` metric work. Data are generated from ``seed``.

Run it with ``python -m src.train hydra.searchpath=[file://examples/conf] objective=biased_ridge``.
"""

import jax.numpy as jnp
import numpy as np

from src.objectives import Objective


def make(n_samples: int = 40, dim: int = 20) -> Objective:  # static options: shapes
    def data(seed: int, reg: float = 1.0, noise: float = 0.1, theta_init: float = 0.0):  # dynamic
        rng = np.random.default_rng(seed)
        w_true = rng.standard_normal(dim)
        X, Xv = rng.standard_normal((2, n_samples, dim))
        y = X @ w_true + noise * rng.standard_normal(n_samples)
        yv = Xv @ w_true + noise * rng.standard_normal(n_samples)
        return {
            "X": X,
            "y": y,
            "Xv": Xv,
            "yv": yv,
            "reg": np.asarray(reg),
            "theta0": np.full(dim, theta_init),
            "w0": np.zeros(dim),
        }

    def inner_loss(w, theta, d):
        return 0.5 * jnp.mean((d["X"] @ w - d["y"]) ** 2) + 0.5 * d["reg"] * jnp.sum((w - theta) ** 2)

    def outer_loss(w, theta, d):
        return jnp.mean((d["Xv"] @ w - d["yv"]) ** 2)

    def inner_solution(theta, d):
        n = d["X"].shape[0]
        H = d["X"].T @ d["X"] / n + d["reg"] * jnp.eye(d["X"].shape[1])
        return jnp.linalg.solve(H, d["X"].T @ d["y"] / n + d["reg"] * theta)

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        inner_solution=inner_solution,
    )
