"""L2-regularized logistic regression, one regularization per feature.

``dataset=breast_cancer`` (bundled with scikit-learn): labels in {-1, +1}; split
``train_test_split(test_size=0.5, random_state=seed)``, standardized on the training part.
``dataset=ijcnn1``: benchmark_bilevel's hyperparameter selection problem, LIBSVM's
``ijcnn1`` (49,990 samples, 22 features) as the inner sum and ``ijcnn1.t`` (91,701) as the
outer one, as they come (no split: the seed does not change the data); downloaded or found
as :mod:`src.objectives.downloads` says. No intercept.
``G = mean(log(1 + exp(-y X w))) + 1/2 sum_j exp(theta_j) w_j^2``;
``F`` = validation mean logistic loss. No closed form. Both are finite sums (training and
validation samples).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from src.core import sampling
from src.objectives import Objective, downloads
from src.objectives.datasets import load, standardized_split


def make(dataset: Literal["breast_cancer", "ijcnn1"] = "breast_cancer", download: bool = True) -> Objective:
    def data(seed: int, theta_init: float = -2.0):
        if dataset == "ijcnn1":
            Xtr, ytr = downloads.libsvm("ijcnn1", download)
            Xva, yva = downloads.libsvm("ijcnn1_test", download)
        else:
            X, y = load("breast_cancer")
            Xtr, Xva, ytr, yva = standardized_split(X, 2.0 * y - 1.0, test_size=0.5, seed=seed)
        return {
            "Xtr": Xtr,
            "ytr": ytr,
            "Xva": Xva,
            "yva": yva,
            "theta0": np.full(Xtr.shape[1], theta_init),
            "w0": np.zeros(Xtr.shape[1]),
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
        randomness="" if dataset == "ijcnn1" else "the train/validation split",
        maximize=("val_accuracy",),
        inner_samples=("Xtr", "ytr"),
        outer_samples=("Xva", "yva"),
    )
