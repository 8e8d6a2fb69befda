"""Example of a researcher's own single-loop method: SOBA with its outer direction clipped.

A method is a frozen dataclass on the protocol of :mod:`src.core.stochastic`; this one reuses
SOBA's minibatch oracles and changes one thing, the outer step's direction, clipped to a
norm of at most ``clip``. Its options are its fields (a float is traced, so settings that
differ only in ``clip`` share one program) and the step-size schedule's.

Run it with ``python -m src.train 'hydra.searchpath=[file://examples/conf]' objective=quadratic_sum
method=clipped_soba batch_size=64``.
"""

from typing import Annotated, ClassVar

import annotated_types as at
import jax.numpy as jnp
import optax

from src.core.frozen import frozen, static
from src.core.stochastic import SOBA, Schedule


@frozen
class ClippedSOBA(SOBA):
    schedule: Schedule
    clip: Annotated[float, at.Gt(0)] = 1.0  # the largest norm of theta's step direction
    batch_size: int | None = static(None)
    name: ClassVar[str] = "clipped_soba"

    def estimate(self, s, d, b_in, b_out):
        (gz, hv, jv, fz, fx), s = super().estimate(s, d, b_in, b_out)
        # SOBA's outer direction is jv + fx: scale both so that their sum has norm <= clip
        norm = optax.tree.norm(optax.tree.add(jv, fx))
        scale = jnp.minimum(1.0, self.clip / jnp.maximum(norm, 1e-12))
        return (gz, hv, optax.tree.scale(scale, jv), fz, optax.tree.scale(scale, fx)), s
