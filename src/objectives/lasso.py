"""Sparse regression on scikit-learn's diabetes data: the lasso and the elastic net, with
their regularization learned on validation; composite inner problems whose solution is the
fixed point of a proximal gradient step.

The data are exactly ``ridge``'s: split ``train_test_split(test_size=0.33,
random_state=seed)``, features standardized on the training part, targets centred by the
training mean, no intercept. Smooth part ``f(w) = 1/(2n) ||X w - y||^2`` (plus
``1/2 exp(theta_2) ||w||^2`` for the elastic net), non-smooth part ``h(w) = exp(theta_1)
||w||_1``, whose prox is soft thresholding; ``F`` = validation mean squared error.

Closed form on the active set ``S`` (the non-zero coefficients), valid under strict
complementarity (every inactive coefficient has ``|X_j^T r / n| < l1`` strictly, so that S
does not change near theta): ``w_S = (X_S^T X_S / n + l2 I)^{-1} (X_S^T y / n - l1 sign(w_S))``,
hence ``d w_S / d theta_1 = -A^{-1} l1 sign(w_S)`` and ``d w_S / d theta_2 = -A^{-1} l2 w_S``
with ``A = X_S^T X_S / n + l2 I``; the hypergradient is ``grad_{w_S} F`` times those. It is
computed with a mask, not by indexing, so that S may differ between the jobs of a batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from src.objectives import Objective, scalar_theta_metrics
from src.objectives.datasets import load, standardized_split


def _data(seed: int, theta0) -> dict:
    X, y = load("diabetes")
    Xtr, Xva, ytr, yva = standardized_split(X, y, test_size=0.33, seed=seed)
    mean = ytr.mean()
    return {
        "Xtr": Xtr,
        "ytr": ytr - mean,
        "Xva": Xva,
        "yva": yva - mean,
        "theta0": np.asarray(theta0, float),
        "w0": np.zeros(X.shape[1]),
    }


def _objective(data, strengths, metrics_theta) -> Objective:
    """``strengths(theta) -> (l1, l2)``."""

    def inner_loss(w, theta, d):  # the smooth part f
        l2 = strengths(theta)[1]
        return 0.5 * jnp.mean((d["Xtr"] @ w - d["ytr"]) ** 2) + 0.5 * l2 * jnp.sum(w**2)

    def prox(w, step, theta, d):  # soft thresholding at step * l1
        l1 = strengths(theta)[0]
        return jnp.sign(w) * jnp.maximum(jnp.abs(w) - step * l1, 0.0)

    def lipschitz(theta, d):  # largest eigenvalue of X^T X / n, plus l2
        X = d["Xtr"]
        return jnp.linalg.eigvalsh(X.T @ X / X.shape[0])[-1] + strengths(theta)[1]

    def outer_loss(w, theta, d):
        return jnp.mean((d["Xva"] @ w - d["yva"]) ** 2)

    def hypergrad_at(w, theta, d):
        X, n = d["Xtr"], d["Xtr"].shape[0]
        l1, l2 = strengths(theta)
        active = (w != 0).astype(w.dtype)
        # A restricted to S, the identity elsewhere (so that it is invertible)
        A = (X.T @ X / n + l2 * jnp.eye(w.shape[0])) * jnp.outer(active, active) + jnp.diag(1.0 - active)
        dw_dl1 = -jnp.linalg.solve(A, active * jnp.sign(w)) * l1
        dw_dl2 = -jnp.linalg.solve(A, active * w) * l2
        g = jax.grad(outer_loss)(w, theta, d)
        return jnp.stack([g @ dw_dl1, g @ dw_dl2])[: jnp.size(theta)].reshape(jnp.shape(theta))

    def metrics(w, theta, d):
        l1, l2 = strengths(theta)
        out = {
            "val_mse": outer_loss(w, theta, d),
            "nonzeros": jnp.sum(w != 0),
            "objective_value": inner_loss(w, theta, d) + l1 * jnp.sum(jnp.abs(w)),
        }
        return {**out, **metrics_theta(theta)}

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        symmetric=False,
        randomness="the train/validation split",
        prox=prox,
        lipschitz=lipschitz,
        hypergrad_at=hypergrad_at,
    )


def make() -> Objective:
    """The lasso: ``theta`` scalar, ``l1 = exp(theta)``."""

    def data(seed: int, theta_init: float = 0.0):
        return _data(seed, theta_init)

    return _objective(data, lambda theta: (jnp.exp(theta), 0.0), scalar_theta_metrics)


def make_elastic_net() -> Objective:
    """The elastic net: ``theta = (log l1, log l2)``."""

    def data(seed: int, log_l1_init: float = 0.0, log_l2_init: float = 0.0):
        return _data(seed, [log_l1_init, log_l2_init])

    metrics_theta = lambda theta: {"log_l1": theta[0], "log_l2": theta[1]}
    return _objective(data, lambda theta: (jnp.exp(theta[0]), jnp.exp(theta[1])), metrics_theta)
