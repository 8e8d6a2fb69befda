"""TTSA (Hong, Wai, Wang & Yang 2023): a two-timescale stochastic approximation.

Each step: one SGD step on ``z`` (inner minibatch ``B``), then at ``(z_{t+1}, x_t)`` an outer
minibatch, ``v`` by the randomly truncated Neumann series
(:func:`~src.core.stochastic.neumann.hia`, ``n_hia_steps``, constant step ``step_size``) and
``x_{t+1} = x_t - gamma_t (grad_x f - J_B v)`` with ``J`` on the same minibatch ``B``.
benchmark_bilevel's exponents: ``z`` 2/5, ``x`` 3/5.

Oracle calls per step (benchmark_bilevel's count): ``1 + n_hia_steps`` inner, 2 outer.
"""

from __future__ import annotations

from typing import ClassVar

import optax

from src.core.frozen import frozen, static
from src.core.objective import Objective
from src.core.protocol import Report
from src.core.stochastic.base import Schedule, SingleLoop, State, Steps, axpy, info, lin, scale, sub, unmeasured
from src.core.stochastic.neumann import hia, truncation


@frozen
class TTSA(SingleLoop):
    """TTSA (Hong et al. 2023): an SGD step on ``z``, then ``x`` along a HIA hypergradient."""

    schedule: Schedule
    n_hia_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "ttsa"
    random: ClassVar[bool] = True
    lockstep: ClassVar[bool] = False  # a random number of minibatches per step (hia)

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        x = s.theta
        b_in, inner = o.inner.next(s.inner)
        gz = o.inner_grad(s.z, x, b_in)
        z = axpy(rho, gz, s.z)
        b_out, outer = o.outer.next(s.outer)
        fz, fx = o.outer_grads(z, x, b_out)
        p, key = truncation(s.key, self.n_hia_steps)
        (u,), inner = hia(o, ((z, x, fz),), self.schedule.step_size, self.n_hia_steps, inner, p)
        dx = sub(fx, o.cross(z, x, u, b_in))
        moved = s._replace(
            theta=axpy(gamma, dx, x), z=z, v=scale(-1.0, u), t=s.t + 1, inner=inner, outer=outer, key=key
        )
        work = o.count(1 + self.n_hia_steps, 2)
        return moved, self.report(s, dx, info(1, optax.tree.norm(gz)), lin(self.n_hia_steps, unmeasured()), work)
