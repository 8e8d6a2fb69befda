"""Data hyper-cleaning on scikit-learn's digits: learn a weight per training sample.

Pixels / 16 plus a bias feature; stratified train / validation / test split
(``n_train``, ``n_val``, the rest for test). A fraction ``corruption`` of the training
labels is replaced by a wrong label. Inner loss: per-sample weighted cross-entropy of a
linear softmax classifier, weights ``sigmoid(theta_i)``, plus ``l2/2 ||W||^2``; outer
loss: validation cross-entropy. A sample is flagged as corrupted when its weight falls
below its initial 0.5; precision and recall of that detection are metrics.
"""

from __future__ import annotations

from typing import Annotated

import annotated_types as at
import jax
import jax.numpy as jnp
import numpy as np

from src.objectives import Objective
from src.objectives.datasets import load

CLASSES = 10


def make(n_train: Annotated[int, at.Ge(10)] = 600, n_val: Annotated[int, at.Ge(10)] = 500) -> Objective:
    def data(
        seed: int,
        corruption: Annotated[float, at.Interval(ge=0, le=1)] = 0.5,
        l2: Annotated[float, at.Ge(0)] = 1e-3,
        theta_init: float = 0.0,
    ):
        from sklearn.model_selection import train_test_split

        X, y = load("digits")
        X = np.hstack([X / 16.0, np.ones((len(X), 1))])
        Xtr, Xrest, ytr, yrest = train_test_split(X, y, train_size=n_train, stratify=y, random_state=seed)
        Xva, Xte, yva, yte = train_test_split(Xrest, yrest, train_size=n_val, stratify=yrest, random_state=seed)
        rng = np.random.default_rng(seed)
        corrupted = np.zeros(n_train, bool)
        corrupted[rng.choice(n_train, int(round(corruption * n_train)), replace=False)] = True
        noisy = ytr.copy()
        noisy[corrupted] = (ytr[corrupted] + rng.integers(1, CLASSES, corrupted.sum())) % CLASSES
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
        weighted = jnp.mean(jax.nn.sigmoid(theta) * xent(W, d["Xtr"], d["ytr"]))
        return weighted + 0.5 * d["l2"] * jnp.sum(W**2)

    def outer_loss(W, theta, d):
        return jnp.mean(xent(W, d["Xva"], d["yva"]))

    def metrics(W, theta, d):
        accuracy = lambda X, y: jnp.mean(jnp.argmax(X @ W, axis=1) == y)
        flagged = jax.nn.sigmoid(theta) < 0.5
        hits = jnp.sum(flagged & d["corrupted"])
        return {
            "val_accuracy": accuracy(d["Xva"], d["yva"]),
            "test_accuracy": accuracy(d["Xte"], d["yte"]),
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
    )
