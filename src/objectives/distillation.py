"""Dataset distillation on scikit-learn's digits: learn ``per_class`` synthetic images per
class such that a multiclass logistic regression trained on them alone does well on the
real training set.

Split ``train_test_split(test_size=0.3, random_state=seed, stratify=y)``, features
standardized on the training part (a bias feature appended). ``theta``: the synthetic
images, ``(10 per_class, 64)``, initialised from small Gaussian noise drawn from the seed;
their labels are fixed (``per_class`` of each class). Inner: ``W`` minimizes the
cross-entropy on the synthetic set plus ``l2/2 ||W||^2``; outer: the cross-entropy of ``W``
on the real training part. ``test_accuracy``: ``W`` on the test part.
"""

from __future__ import annotations

from typing import Annotated

import annotated_types as at
import jax
import jax.numpy as jnp
import numpy as np

from src.objectives import Objective
from src.objectives.datasets import load, standardized_split

CLASSES = 10


def make(per_class: Annotated[int, at.Ge(1)] = 1) -> Objective:
    labels = np.repeat(np.arange(CLASSES), per_class)

    def data(seed: int, l2: Annotated[float, at.Gt(0)] = 1e-2, init_scale: Annotated[float, at.Gt(0)] = 0.01):
        X, y = load("digits")
        Xtr, Xte, ytr, yte = standardized_split(X, y, test_size=0.3, seed=seed, stratify=y)
        rng = np.random.default_rng(seed)
        return {
            "Xtr": Xtr,
            "ytr": ytr,
            "Xte": Xte,
            "yte": yte,
            "labels": labels,
            "l2": np.asarray(l2),
            "theta0": init_scale * rng.standard_normal((len(labels), X.shape[1])),
            "w0": np.zeros((X.shape[1] + 1, CLASSES)),
        }

    def logits(W, X):
        return X @ W[:-1] + W[-1]

    def xent(W, X, y):
        z = logits(W, X)
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, y[:, None], axis=1)[:, 0])

    def inner_loss(W, theta, d):
        return xent(W, theta, d["labels"]) + 0.5 * d["l2"] * jnp.sum(W**2)

    def outer_loss(W, theta, d):
        return xent(W, d["Xtr"], d["ytr"])

    def metrics(W, theta, d):
        accuracy = lambda X, y: jnp.mean(jnp.argmax(logits(W, X), axis=1) == y)
        return {"train_accuracy": accuracy(d["Xtr"], d["ytr"]), "test_accuracy": accuracy(d["Xte"], d["yte"])}

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        figure=images,
        randomness="the train/test split and the synthetic images' initial noise",
        maximize=("train_accuracy", "test_accuracy"),
    )


def images(theta: np.ndarray, final: dict, title: str):
    """The learned images (final theta: one row per image per class, 8 x 8 standardized
    pixels), a column per class: the figure ``python -m src.aggregate --plot`` draws."""
    import matplotlib.pyplot as plt

    per_class = theta.shape[0] // CLASSES
    fig, axes = plt.subplots(per_class, CLASSES, figsize=(10, 1.1 * per_class), squeeze=False)
    for i, ax in enumerate(axes.T.ravel()):  # column c: the images of class c
        ax.imshow(theta[i].reshape(8, 8), cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
    for c in range(CLASSES):
        axes[0, c].set_title(str(c), fontsize=9)
    accuracy = final.get("test_accuracy", float("nan"))
    fig.suptitle(f"{title}: {per_class} per class, test accuracy {accuracy:.3f}", fontsize=9, y=1.0 + 0.35 / per_class)
    return fig
