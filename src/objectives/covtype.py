"""benchmark_bilevel's covtype problem: 7-class logistic regression with one L2 weight per
class, on scikit-learn's covertype (581,012 samples, 54 features).

The benchmark's split: ``train_test_split(test_size=0.2)`` twice from
``RandomState(2442)`` (64 % train, 16 % validation, 20 % test), standardized with the
training part's scaler. ``W`` is 54 x 7, ``theta`` one log-weight per class:
``G = mean cross-entropy(X_train W) + 1/2 sum_c exp(theta_c) ||W[:, c]||^2``,
``F`` = mean validation cross-entropy; metrics: test and validation error. No closed form.
The data are downloaded or found as :mod:`src.objectives.downloads` says; the split is the
benchmark's fixed one (the seed drives only the samplers of stochastic methods).
``max_samples`` keeps the first rows only (a quick look; null: all).
"""

from __future__ import annotations

from typing import Annotated

import annotated_types as at
import jax
import jax.numpy as jnp
import numpy as np

from src.core import sampling
from src.objectives import Objective, downloads

CLASSES = 7
SPLIT_SEED = 2442


def make(download: bool = True, max_samples: Annotated[int, at.Ge(100)] | None = None) -> Objective:
    def data(seed: int, theta_init: float = 0.0):
        del seed  # the benchmark's fixed split
        from sklearn.model_selection import train_test_split
        from sklearn.preprocessing import StandardScaler

        X, y = downloads.covtype(download)
        if max_samples is not None:
            X, y = X[:max_samples], y[:max_samples]
        rng = np.random.RandomState(SPLIT_SEED)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=rng)
        Xtr, Xva, ytr, yva = train_test_split(Xtr, ytr, test_size=0.2, random_state=rng)
        scaler = StandardScaler().fit(Xtr)
        Xtr, Xva, Xte = (scaler.transform(a) for a in (Xtr, Xva, Xte))
        d = X.shape[1]
        return {
            "Xtr": Xtr, "ytr": ytr, "Xva": Xva, "yva": yva, "Xte": Xte, "yte": yte,
            "theta0": np.full(CLASSES, theta_init), "w0": np.zeros((d, CLASSES)),
        }  # fmt: skip

    def xent(W, X, y):
        logits = X @ W
        return jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]

    def inner_loss(W, theta, d):
        loss = sampling.mean(xent(W, d["Xtr"], d["ytr"]), d, "inner")
        return loss + 0.5 * jnp.sum(jnp.exp(theta) * jnp.sum(W**2, axis=0))

    def outer_loss(W, theta, d):
        return sampling.mean(xent(W, d["Xva"], d["yva"]), d, "outer")

    def metrics(W, theta, d):
        error = lambda X, y: jnp.mean(jnp.argmax(X @ W, axis=1) != y)
        return {"test_error": error(d["Xte"], d["yte"]), "val_error": error(d["Xva"], d["yva"])}

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        randomness="",
        inner_samples=("Xtr", "ytr"),
        outer_samples=("Xva", "yva"),
    )
