"""F2SA (Kwon et al. 2023), as benchmark_bilevel's ``solvers/f2sa.py`` runs it.

Hessian-free: a second inner sequence ``y`` minimizes ``f + lambda g`` (the benchmark's
``inner_var``), ``z`` minimizes ``g`` (its ``inner_approx_star``, the one reported), and
``x`` moves along ``grad_x f(y) + lambda (grad_x g(y) - grad_x g(z))``. Each step runs
``n_inner_steps`` simultaneous SGD steps on ``y`` and ``z`` (minibatches: inner for ``y``,
inner for ``z``, outer for ``y``), then draws an outer and two inner minibatches for ``x``.

Schedule (the benchmark's exponents, the defaults of ``conf/method/f2sa.yaml``):
``y`` steps ``step_size / (t+1)^y_decay`` (5/7), ``z`` steps ``step_size / (t+1)^inner_decay``
(4/7), ``x`` steps ``step_size / outer_ratio / (t+1)^outer_decay`` (4/7), and after the
step ``lambda += delta_lmbda / (t+1)^lmbda_decay`` (1/7; 0 gives the linear growth
``lambda0 + t delta`` of the paper's Algorithm 1).

Oracle calls per step: ``2 n_inner_steps + 2`` inner, ``n_inner_steps + 1`` outer.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import annotated_types as at
import jax
import jax.numpy as jnp

from src.core.frozen import frozen, static
from src.core.objective import Objective
from src.core.protocol import Report
from src.core.stochastic.base import (
    Decay,
    Positive,
    Schedule,
    SingleLoop,
    State,
    Steps,
    add,
    axpy,
    decayed,
    info,
    lin,
    scale,
    sub,
    unmeasured,
)


@frozen
class F2SA(SingleLoop):
    """F2SA (Kwon et al. 2023): first-order, with a penalty ``lambda`` on ``g(y) - g(z)``."""

    schedule: Schedule
    lmbda0: Positive
    delta_lmbda: Annotated[float, at.Ge(0)]
    y_decay: Decay = 5 / 7
    lmbda_decay: Decay = 1 / 7
    n_inner_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "f2sa"
    has_v: ClassVar[bool] = False

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        return s._replace(extra=(s.z, jnp.asarray(self.lmbda0, jnp.result_type(float))))

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho_z, gamma = self.schedule.at(s.t)
        rho_y = decayed(self.schedule.step_size, self.y_decay, s.t)
        y, lmbda = s.extra
        x = s.theta

        def inner_step(carry, _):
            y, z, inner, outer = carry
            b_y, inner = o.inner.next(inner)
            b_z, inner = o.inner.next(inner)
            b_o, outer = o.outer.next(outer)
            dy = add(scale(lmbda, o.inner_grad(y, x, b_y)), o.outer_grad_z(y, x, b_o))
            return (axpy(rho_y, dy, y), axpy(rho_z, o.inner_grad(z, x, b_z), z), inner, outer), None

        (y, z, inner, outer), _ = jax.lax.scan(inner_step, (y, s.z, s.inner, s.outer), None, length=self.n_inner_steps)
        b_o, outer = o.outer.next(outer)
        b_1, inner = o.inner.next(inner)
        b_2, inner = o.inner.next(inner)
        penalty = sub(o.inner_grad_x(y, x, b_1), o.inner_grad_x(z, x, b_2))
        dx = add(o.outer_grad_x(y, x, b_o), scale(lmbda, penalty))
        lmbda = lmbda + decayed(self.delta_lmbda, self.lmbda_decay, s.t)
        moved = s._replace(theta=axpy(gamma, dx, x), z=z, t=s.t + 1, inner=inner, outer=outer, extra=(y, lmbda))
        k = self.n_inner_steps
        return moved, self.report(s, dx, info(k, unmeasured()), lin(0, unmeasured()), o.count(2 * k + 2, k + 1))
