"""Momentum-based variance reduction (STORM-like recursive momentum): MRBO, SUSTAIN and FSLA.

They keep the previous iterates and the momentum directions in ``State.memory`` and
correct each new minibatch estimate by the same minibatch at the previous point:
``d_t = e(p_t) + (1 - eta_t) (d_{t-1} - e(p_{t-1}))`` with ``eta_t = eta / (t+1)^eta_decay``.
As in benchmark_bilevel, the previous iterates and the directions start at **zero** (not
at ``z0``/``x0``), so the first correction evaluates the oracles at the origin.

* MRBO (Yang, Ji & Liang 2021): momentum on ``z`` and on ``x``, ``v`` at both points by a
  joint stochastic Neumann series (:func:`~src.core.stochastic.neumann.shia`).
  ``d_x = eta_t e(p_t) + (1 - eta_t)(d_x + e(p_t) - e(p_{t-1}))``.
* SUSTAIN (Khanduri et al. 2021): MRBO with the randomly truncated series
  (:func:`~src.core.stochastic.neumann.hia`, ``n_hia_steps``) at the constant step ``step_size``.
* FSLA (Li, Gu & Huang 2022): one SGD step on ``z`` and one on ``v``'s quadratic, momentum
  on ``x`` only, the previous point being ``(z_t, x_{t-1}, v_t)`` before the steps.

Oracle calls per step (benchmark_bilevel's count): MRBO ``2 n_shia_steps + 4`` inner,
4 outer; SUSTAIN ``2 n_hia_steps + 4`` inner, 4 outer; FSLA 4 inner, 3 outer.
"""

from __future__ import annotations

from typing import ClassVar

import optax

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
    zeros,
)
from src.core.stochastic.neumann import hia, shia, truncation


class DoubleMomentum(SingleLoop):
    """MRBO and SUSTAIN: ``memory = (z_old, x_old, d_z, d_x)``, all zero at the start."""

    eta: float
    eta_decay: float

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        return s._replace(memory=(zeros(s.z), zeros(s.theta), zeros(s.z), zeros(s.theta)))

    def neumann(self, o, points, rho, s: State, sampler):
        """``((u, u_old), sampler, state)``: ``+H^{-1} grad_z f`` at both points."""
        raise NotImplementedError

    def v_calls(self) -> int:
        raise NotImplementedError

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        eta = decayed(self.eta, self.eta_decay, s.t)
        z_old, x_old, d_z, d_x = s.memory
        z, x = s.z, s.theta
        b_in, inner = o.inner.next(s.inner)
        g = o.inner_grad(z, x, b_in)
        d_z = add(g, scale(1 - eta, sub(d_z, o.inner_grad(z_old, x_old, b_in))))
        b_out, outer = o.outer.next(s.outer)
        fz, fx = o.outer_grads(z, x, b_out)
        fz_old, fx_old = o.outer_grads(z_old, x_old, b_out)
        (u, u_old), inner, s2 = self.neumann(o, ((z, x, fz), (z_old, x_old, fz_old)), rho, s, inner)
        implicit = sub(fx, o.cross(z, x, u, b_in))
        implicit_old = sub(fx_old, o.cross(z_old, x_old, u_old, b_in))
        d_x = add(scale(eta, implicit), scale(1 - eta, add(d_x, sub(implicit, implicit_old))))
        moved = s2._replace(
            z=axpy(rho, d_z, z), theta=axpy(gamma, d_x, x), v=scale(-1.0, u), t=s.t + 1,
            inner=inner, outer=outer, memory=(z, x, d_z, d_x),
        )  # fmt: skip
        work = o.count(2 * self.v_calls() + 4, 4)
        return moved, self.report(s, d_x, info(1, unmeasured()), lin(self.v_calls(), unmeasured()), work)


@frozen
class MRBO(DoubleMomentum):
    """MRBO (Yang, Ji & Liang 2021): double momentum, joint stochastic Neumann series."""

    schedule: Schedule
    eta: Positive = 0.5
    eta_decay: Decay = 2 / 3
    n_shia_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "mrbo"

    def v_calls(self) -> int:
        return self.n_shia_steps

    def neumann(self, o, points, rho, s: State, sampler):
        del rho  # the series' step is constant (the benchmark's hia_lr)
        us, sampler = shia(o, points, self.schedule.step_size, self.n_shia_steps, sampler)
        return us, sampler, s


@frozen
class SUSTAIN(DoubleMomentum):
    """SUSTAIN (Khanduri et al. 2021): double momentum, joint randomly truncated Neumann series."""

    schedule: Schedule
    eta: Positive = 0.5
    eta_decay: Decay = 2 / 3
    n_hia_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "sustain"
    random: ClassVar[bool] = True
    lockstep: ClassVar[bool] = False  # a random number of minibatches per step (hia)

    def v_calls(self) -> int:
        return self.n_hia_steps

    def neumann(self, o, points, rho, s: State, sampler):
        del rho
        p, key = truncation(s.key, self.n_hia_steps)
        us, sampler = hia(o, points, self.schedule.step_size, self.n_hia_steps, sampler, p)
        return us, sampler, s._replace(key=key)


@frozen
class FSLA(SingleLoop):
    """FSLA (Li, Gu & Huang 2022): SGD on ``z`` and ``v``, recursive momentum on ``x``;
    ``memory = (x_old, d_x)``, zero at the start. ``eta_t = step_size / (t+1)^eta_decay``
    (the benchmark ties eta to the step size)."""

    schedule: Schedule
    eta_decay: Decay = 0.5
    batch_size: int | None = static(None)
    name: ClassVar[str] = "fsla"

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        return s._replace(memory=(zeros(s.theta), zeros(s.theta)))

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        eta = decayed(self.schedule.step_size, self.eta_decay, s.t)
        x_old, d_x = s.memory
        x, z_old, v_old = s.theta, s.z, s.v
        b1, inner = o.inner.next(s.inner)
        gz = o.inner_grad(z_old, x, b1)
        z = axpy(rho, gz, z_old)
        b2, inner = o.inner.next(inner)
        o1, outer = o.outer.next(s.outer)
        dv = add(o.hvp(z, x, v_old, b2), o.outer_grad_z(z, x, o1))
        v = axpy(rho, dv, v_old)  # SOBA's sign: v ~ -H^{-1} grad_z f
        o2, outer = o.outer.next(outer)
        b3, inner = o.inner.next(inner)
        implicit = add(o.outer_grad_x(z, x, o2), o.cross(z, x, v, b3))
        implicit_old = add(o.outer_grad_x(z_old, x_old, o2), o.cross(z_old, x_old, v_old, b3))
        d_x = add(implicit, scale(1 - eta, sub(d_x, implicit_old)))
        moved = s._replace(z=z, v=v, theta=axpy(gamma, d_x, x), t=s.t + 1, inner=inner, outer=outer, memory=(x, d_x))
        return moved, self.report(s, d_x, info(1, optax.tree.norm(gz)), lin(1, optax.tree.norm(dv)), o.count(4, 3))
