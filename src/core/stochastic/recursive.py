"""Recursive (SARAH-type) variance reduction with periodic full passes: SRBA and VRBO.

Every ``period`` steps the directions are recomputed on all samples; in between, each is
corrected by the difference of one minibatch at the current and at the previous iterate,
``d_t = d_{t-1} + e_B(p_t) - e_B(p_{t-1})``. ``period = int((n_inner + n_outer) period_frac /
batch_size)`` (benchmark_bilevel's; at least 1, full batch counted as the larger part's size).
Steps are constant. Oracle calls: a full pass counts ``n / batch_size`` calls per oracle.

* SRBA (Dagréou, Moreau, Vaiter & Ablin 2024): SOBA's three directions, recursive.
  Per step: 6 inner and 4 outer calls, or a full pass of 3 inner and 2 outer oracles.
* VRBO (Yang, Ji & Liang 2021): at a full-pass step, ``d_z = grad_z g`` and
  ``d_x = grad_x f - J s`` with ``s`` a full-batch Neumann series (``n_shia_steps``); then
  ``x`` steps along ``d_x`` and ``n_inner_steps`` recursive steps move ``z`` and refine both
  directions, ``v`` at the two points from a joint stochastic Neumann series. The previous
  iterate starts at zero, as in the benchmark. Per step: ``n_inner_steps (4 + 2 n_shia_steps)``
  inner and ``4 n_inner_steps`` outer calls, plus on full-pass steps a full pass of
  ``2 + n_shia_steps`` inner and 2 outer oracles.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import annotated_types as at
import jax
import jax.numpy as jnp
import optax

from src.core.frozen import frozen, static
from src.core.objective import Objective
from src.core.protocol import Report
from src.core.sampling import Work
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
    sub,
    unmeasured,
    zeros,
)
from src.core.stochastic.neumann import shia, shia_full

PeriodFrac = Annotated[float, at.Gt(0)]


def period_of(o: Oracles, batch_size: int | None, period_frac: float) -> int:
    size = batch_size or max(o.inner.n, o.outer.n)
    return max(1, int((o.inner.n + o.outer.n) * period_frac / size))


def select(on, a: Work, b: Work) -> Work:
    return Work(*(jnp.where(on, x, y) for x, y in zip(a, b, strict=True)))


@frozen
class SRBA(SingleLoop):
    """SRBA (Dagréou et al. 2024): SOBA's directions with SARAH estimates and full passes."""

    schedule: Schedule
    period_frac: PeriodFrac = static(0.5)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "srba"

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        return s._replace(memory=(s.z, s.theta, s.v, zeros(s.z), zeros(s.v), zeros(s.theta)))

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        z_old, x_old, v_old, d_z, d_v, d_x = s.memory
        z, x, v = s.z, s.theta, s.v
        full = s.t % period_of(o, self.batch_size, self.period_frac) == 0

        def full_pass(d_z, d_v, d_x, inner, outer):
            g, hv, jv = o.full_inner_all(z, x, v)
            fz, fx = o.full_outer_grads(z, x)
            return g, add(hv, fz), add(jv, fx), inner, outer

        def recursive(d_z, d_v, d_x, inner, outer):
            b_in, inner = o.inner.next(inner)
            b_out, outer = o.outer.next(outer)
            g, hv, jv = o.inner_all(z, x, v, b_in)
            g0, hv0, jv0 = o.inner_all(z_old, x_old, v_old, b_in)
            fz, fx = o.outer_grads(z, x, b_out)
            fz0, fx0 = o.outer_grads(z_old, x_old, b_out)
            d_z = add(d_z, sub(g, g0))
            d_v = add(d_v, add(sub(hv, hv0), sub(fz, fz0)))
            d_x = add(d_x, add(sub(jv, jv0), sub(fx, fx0)))
            return d_z, d_v, d_x, inner, outer

        d_z, d_v, d_x, inner, outer = jax.lax.cond(full, full_pass, recursive, d_z, d_v, d_x, s.inner, s.outer)
        moved = s._replace(
            z=axpy(rho, d_z, z), v=axpy(rho, d_v, v), theta=axpy(gamma, d_x, x), t=s.t + 1,
            inner=inner, outer=outer, memory=(z, x, v, d_z, d_v, d_x),
        )  # fmt: skip
        work = select(full, o.full_pass(3, 2), o.count(6, 4))
        return moved, self.report(s, d_x, info(1, optax.tree.norm(d_z)), lin(1, optax.tree.norm(d_v)), work)


@frozen
class VRBO(SingleLoop):
    """VRBO (Yang, Ji & Liang 2021): SARAH-type recursive directions, Neumann series for ``v``."""

    schedule: Schedule
    period_frac: PeriodFrac = static(128.0)
    n_inner_steps: Steps = static(10)
    n_shia_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "vrbo"
    has_v: ClassVar[bool] = False

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        return s._replace(memory=(zeros(s.z), zeros(s.z), zeros(s.theta)))

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        hia_lr = self.schedule.step_size
        z_old, d_z, d_x = s.memory
        z, x = s.z, s.theta
        full = s.t % period_of(o, self.batch_size, self.period_frac) == 0

        def full_pass(d_z, d_x):
            fz, fx = o.full_outer_grads(z, x)
            u = shia_full(o, z, x, fz, hia_lr, self.n_shia_steps)
            g, ju = o.full_grad_cross(z, x, u)
            return g, sub(fx, ju)

        d_z, d_x = jax.lax.cond(full, full_pass, lambda a, b: (a, b), d_z, d_x)
        x_new = axpy(gamma, d_x, x)

        def inner_step(carry, _):
            z, z_old, d_z, d_x, inner, outer = carry
            b_in, inner = o.inner.next(inner)
            d_z = add(d_z, sub(o.inner_grad(z, x_new, b_in), o.inner_grad(z_old, x_new, b_in)))
            b_out, outer = o.outer.next(outer)
            fz, fx = o.outer_grads(z, x_new, b_out)
            fz0, fx0 = o.outer_grads(z_old, x_new, b_out)
            (u, u0), inner = shia(o, ((z, x_new, fz), (z_old, x_new, fz0)), hia_lr, self.n_shia_steps, inner)
            implicit = sub(fx, o.cross(z, x_new, u, b_in))
            implicit_old = sub(fx0, o.cross(z_old, x_new, u0, b_in))
            d_x = add(d_x, sub(implicit, implicit_old))
            return (axpy(rho, d_z, z), z, d_z, d_x, inner, outer), None

        carry = (z, z_old, d_z, d_x, s.inner, s.outer)
        (z, z_old, d_z, d_x_next, inner, outer), _ = jax.lax.scan(inner_step, carry, None, length=self.n_inner_steps)
        moved = s._replace(z=z, theta=x_new, t=s.t + 1, inner=inner, outer=outer, memory=(z_old, d_z, d_x_next))
        k, n = self.n_inner_steps, self.n_shia_steps
        work = o.count(k * (4 + 2 * n), 4 * k) + select(full, o.full_pass(2 + n, 2), Work.zero())
        return moved, self.report(s, d_x, info(k, unmeasured()), lin(n, unmeasured()), work)
