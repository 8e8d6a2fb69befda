"""Ridge regression on scikit-learn's diabetes data, regularization learned on validation.

Split ``train_test_split(test_size=0.33, random_state=seed)``, features standardized on
the training part, targets centred by the training mean, no intercept.
``G = 1/2 mean(r^2) + 1/2 exp(theta) ||w||^2`` on the training part (``theta`` scalar,
or one per feature with ``per_feature=true``); ``F`` = validation mean squared error.
Closed form ``w* = (X^T X / n + diag(exp theta))^{-1} X^T y / n``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from src.objectives import Objective, scalar_theta_metrics
from src.objectives.datasets import load, standardized_split


def make(per_feature: bool = False) -> Objective:
    def data(seed: int, theta_init: float = 0.0):
        X, y = load("diabetes")
        Xtr, Xva, ytr, yva = standardized_split(X, y, test_size=0.33, seed=seed)
        mean = ytr.mean()
        shape = (X.shape[1],) if per_feature else ()
        return {
            "Xtr": Xtr,
            "ytr": ytr - mean,
            "Xva": Xva,
            "yva": yva - mean,
            "theta0": np.full(shape, theta_init),
            "w0": np.zeros(X.shape[1]),
        }

    def inner_loss(w, theta, d):
        r = d["Xtr"] @ w - d["ytr"]
        return 0.5 * jnp.mean(r**2) + 0.5 * jnp.sum(jnp.exp(theta) * w**2)

    def outer_loss(w, theta, d):
        return jnp.mean((d["Xva"] @ w - d["yva"]) ** 2)

    def inner_solution(theta, d):
        X, n = d["Xtr"], d["Xtr"].shape[0]
        H = X.T @ X / n + jnp.diag(jnp.broadcast_to(jnp.exp(theta), (X.shape[1],)))
        return jnp.linalg.solve(H, X.T @ d["ytr"] / n)

    def metrics(w, theta, d):
        train_mse = jnp.mean((d["Xtr"] @ w - d["ytr"]) ** 2)
        return {"val_mse": outer_loss(w, theta, d), "train_mse": train_mse, **scalar_theta_metrics(theta)}

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        inner_solution=inner_solution,
        randomness="the train/validation split",
    )
