"""The seed notebook's toy problem: inner ``(w - theta^2)^2``, outer ``2 w``.

``w*(theta) = theta^2`` and ``dF/dtheta = 4 theta``. It has no randomness: ``seed``
changes nothing.
"""

from __future__ import annotations

import numpy as np

from src.objectives import Objective


def make() -> Objective:
    def data(seed: int, theta_init: float = 1.0, w_init: float = 1.0):
        del seed  # deterministic problem
        return {"theta0": np.asarray(theta_init), "w0": np.asarray(w_init)}

    def inner_loss(w, theta, data):
        return (w - theta**2) ** 2

    def outer_loss(w, theta, data):
        return 2 * w

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=lambda w, theta, data: {"theta": theta, "w": w},
        inner_solution=lambda theta, data: theta**2,
        hypergrad=lambda theta, data: 4 * theta,
        randomness="",
    )
