"""L2-regularized logistic regression on breast_cancer, one regularization per feature.

Labels in {-1, +1}; split ``train_test_split(test_size=0.5, random_state=seed)``,
standardized on the training part, no intercept.
``G = mean(log(1 + exp(-y X w))) + 1/2 sum_j exp(theta_j) w_j^2``;
``F`` = validation mean logistic loss. No closed form. Both are finite sums (training and
validation samples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from src.core import sampling
from src.objectives import Objective
from src.objectives.datasets import load, standardized_split


def make() -> Objective:
    def data(seed: int, theta_init: float = -2.0):
        X, y = load("breast_cancer")
        Xtr, Xva, ytr, yva = standardized_split(X, 2.0 * y - 1.0, test_size=0.5, seed=seed)
        return {
            "Xtr": Xtr,
            "ytr": ytr,
            "Xva": Xva,
            "yva": yva,
            "theta0": np.full(X.shape[1], theta_init),
            "w0": np.zeros(X.shape[1]),
        }

    def inner_loss(w, theta, d):
        loss = sampling.mean(jax.nn.softplus(-d["ytr"] * (d["Xtr"] @ w)), d, "inner")
        return loss + 0.5 * jnp.sum(jnp.exp(theta) * w**2)

    def outer_loss(w, theta, d):
        return sampling.mean(jax.nn.softplus(-d["yva"] * (d["Xva"] @ w)), d, "outer")

    def metrics(w, theta, d):
        margin = d["yva"] * (d["Xva"] @ w)
        return {"val_loss": outer_loss(w, theta, d), "val_accuracy": jnp.mean(margin > 0)}

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        randomness="the train/validation split",
        maximize=("val_accuracy",),
        inner_samples=("Xtr", "ytr"),
        outer_samples=("Xva", "yva"),
    )
