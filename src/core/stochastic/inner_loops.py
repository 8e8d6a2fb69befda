"""Methods with an inner loop of SGD steps on ``z`` after each outer step (and before the
first): AmIGO, StocBiO and BSA. They differ in how ``v`` is estimated.

* AmIGO (Arbel & Mairal 2022): ``n_inner_steps`` warm-started SGD steps on ``v``'s quadratic
  ``1/2 v'Hv + <grad_z f, v>``.
* StocBiO (Ji, Yang & Liang 2021): ``v`` from :func:`~src.core.stochastic.neumann.shia`,
  ``n_shia_steps`` terms, recomputed each step.
* BSA (Ghadimi & Wang 2018): ``v`` from :func:`~src.core.stochastic.neumann.hia`, a randomly
  truncated Neumann series at the constant step ``step_size``.

Each step: an outer minibatch at ``(z_t, x_t)``, ``v``, a fresh inner minibatch for
``J v``, ``x_{t+1} = x_t - gamma_t (grad_x f + J v)``, then the inner SGD steps at ``x_{t+1}``.
Oracle calls per step (benchmark_bilevel's count): ``n_inner_steps + n_v + 1`` inner, 2 outer.
"""

from __future__ import annotations

from typing import ClassVar

import jax

from src.core.frozen import frozen, static
from src.core.objective import Objective
from src.core.protocol import Report
from src.core.sampling import SamplerState, Work
from src.core.stochastic.base import (
    Oracles,
    Schedule,
    SingleLoop,
    State,
    Steps,
    add,
    axpy,
    info,
    lin,
    scale,
    unmeasured,
)
from src.core.stochastic.neumann import hia, shia, truncation


def sgd_inner(o: Oracles, z, x, sampler: SamplerState, rho, steps: int):
    """``steps`` SGD steps on ``g(., x)``, one fresh inner minibatch each."""

    def body(carry, _):
        z, sampler = carry
        b, sampler = o.inner.next(sampler)
        return (axpy(rho, o.inner_grad(z, x, b), z), sampler), None

    (z, sampler), _ = jax.lax.scan(body, (z, sampler), None, length=steps)
    return z, sampler


class InnerLoop(SingleLoop):
    """``n_inner_steps`` SGD steps on ``z`` after each outer step (and before the first, at
    ``step_size``); ``v`` from :meth:`solve_v`."""

    n_inner_steps: int

    def v_calls(self) -> int:
        raise NotImplementedError

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        o = self.oracles(objective, data)
        z, inner = sgd_inner(o, s.z, s.theta, s.inner, self.schedule.step_size, self.n_inner_steps)
        return s._replace(z=z, inner=inner)

    def initial_work(self, objective: Objective, data) -> Work:
        return self.oracles(objective, data).count(self.n_inner_steps, 0)

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        """``(v, sampler, state)``: the linear system's estimate (SOBA's sign), the sampler
        after it, and the state with the method's own randomness advanced."""
        raise NotImplementedError

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        b_out, outer = o.outer.next(s.outer)
        fz, fx = o.outer_grads(s.z, s.theta, b_out)
        v, inner, s2 = self.solve_v(o, s, rho, fz, s.inner)
        b_cross, inner = o.inner.next(inner)
        dx = add(o.cross(s.z, s.theta, v, b_cross), fx)
        theta = axpy(gamma, dx, s.theta)  # x's step along dx, then the inner SGD steps at the new x
        z, inner = sgd_inner(o, s.z, theta, inner, rho, self.n_inner_steps)
        moved = s2._replace(theta=theta, z=z, v=v, t=s.t + 1, inner=inner, outer=outer)
        work = o.count(self.n_inner_steps + self.v_calls() + 1, 2)
        return moved, self.report(
            s, dx, info(self.n_inner_steps, unmeasured()), lin(self.v_calls(), unmeasured()), work
        )


@frozen
class AmIGO(InnerLoop):
    """AmIGO (Arbel & Mairal 2022): warm-started SGD on ``z`` and on ``v``'s quadratic."""

    schedule: Schedule
    n_inner_steps: Steps = static()
    batch_size: int | None = static(None)
    name: ClassVar[str] = "amigo"

    def v_calls(self) -> int:
        return self.n_inner_steps

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        def v_step(carry, _):  # SGD on 1/2 v'Hv + <grad_z f, v>, from the last v
            v, sampler = carry
            b, sampler = o.inner.next(sampler)
            return (axpy(rho, add(o.hvp(s.z, s.theta, v, b), fz), v), sampler), None

        (v, sampler), _ = jax.lax.scan(v_step, (s.v, sampler), None, length=self.n_inner_steps)
        return v, sampler, s


@frozen
class StocBiO(InnerLoop):
    """StocBiO (Ji, Yang & Liang 2021): ``v`` from a stochastic Neumann series, recomputed."""

    schedule: Schedule
    n_inner_steps: Steps = static()
    n_shia_steps: Steps = static()
    batch_size: int | None = static(None)
    name: ClassVar[str] = "stocbio"

    def v_calls(self) -> int:
        return self.n_shia_steps

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        (u,), sampler = shia(o, ((s.z, s.theta, fz),), rho, self.n_shia_steps, sampler)
        return scale(-1.0, u), sampler, s  # v ~ -H^{-1} grad_z f


@frozen
class BSA(InnerLoop):
    """BSA (Ghadimi & Wang 2018): ``v`` from a randomly truncated Neumann series (HIA) at the
    constant step ``step_size``."""

    schedule: Schedule
    n_inner_steps: Steps = static()
    n_hia_steps: Steps = static()
    batch_size: int | None = static(None)
    name: ClassVar[str] = "bsa"
    random: ClassVar[bool] = True
    lockstep: ClassVar[bool] = False  # a random number of minibatches per step (hia)

    def v_calls(self) -> int:
        return self.n_hia_steps

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        p, key = truncation(s.key, self.n_hia_steps)
        (u,), sampler = hia(o, ((s.z, s.theta, fz),), self.schedule.step_size, self.n_hia_steps, sampler, p)
        return scale(-1.0, u), sampler, s._replace(key=key)
