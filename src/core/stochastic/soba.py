"""SOBA and SABA (Dagréou et al. 2022): simultaneous steps on ``z``, ``v`` and ``x``.

* SOBA: ``z -= rho grad_z g_B``, ``v -= rho (H_B v + grad_z f_B')``,
  ``x -= gamma (J_B v + grad_x f_B')``, all at step t's values (``J = hess_xz g``).
* SABA: the same with each of the five directions replaced by its SAGA estimate (a
  table per direction and per batch, initialised at zero; constant steps).

Oracle calls per step: 3 inner (``grad_z g``, ``H v``, ``J v``), 2 outer (both partials of f).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from src.core.frozen import frozen, static
from src.core.objective import Objective
from src.core.protocol import Report
from src.core.sampling import Batch, upcoming
from src.core.stochastic.base import Oracles, Schedule, SingleLoop, State, add, axpy, info, lin, tmap


@frozen
class SOBA(SingleLoop):
    """SOBA (Dagréou et al. 2022): simultaneous SGD steps on ``z``, ``v`` and ``x``."""

    schedule: Schedule
    batch_size: int | None = static(None)
    name: ClassVar[str] = "soba"

    def directions(self, o: Oracles, s: State):
        b_in, inner = o.inner.next(s.inner)
        b_out, outer = o.outer.next(s.outer)
        gz, hv, jv = o.inner_all(s.z, s.theta, s.v, b_in)
        fz, fx = o.outer_grads(s.z, s.theta, b_out)
        return (gz, hv, jv, fz, fx), (b_in, b_out), s._replace(inner=inner, outer=outer)

    def estimate(self, s: State, d, b_in: Batch, b_out: Batch):
        """The directions the step takes (SOBA: the minibatch oracles themselves)."""
        return d, s

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        d, (b_in, b_out), s2 = self.directions(o, s)
        (gz, hv, jv, fz, fx), s2 = self.estimate(s2, d, b_in, b_out)
        rho, gamma = self.schedule.at(s.t)
        dv, dx = add(hv, fz), add(jv, fx)
        moved = s2._replace(theta=axpy(gamma, dx, s.theta), z=axpy(rho, gz, s.z), v=axpy(rho, dv, s.v), t=s.t + 1)
        return moved, self.report(s, dx, info(1, optax.tree.norm(gz)), lin(1, optax.tree.norm(dv)), o.count(3, 2))


def saga(g, table, average, old, batch: Batch):
    """SAGA's estimate of a direction: ``g - table[i] + average`` (``old`` = ``table[i]``);
    table and average updated."""
    diff = tmap(jnp.subtract, g, old)
    direction = add(diff, average)
    average = tmap(lambda a, d: a + batch.weight * d, average, diff)
    table = tmap(lambda t, gi: jax.lax.dynamic_update_index_in_dim(t, gi, batch.index, 0), table, g)
    return direction, table, average


def rows(table, index):
    """Row ``index`` of a table."""
    return tmap(lambda t: jax.lax.dynamic_index_in_dim(t, index, keepdims=False), table)


def tables(n: int, tree):
    """One zero row per batch, shaped like ``tree``."""
    return tmap(lambda a: jnp.zeros((n, *jnp.shape(a)), jnp.result_type(float)), tree)


@frozen
class SABA(SOBA):
    """SABA (Dagréou et al. 2022): SOBA with SAGA estimates of its five directions.

    ``memory = (tables, averages, rows)``: ``rows`` are the table rows of the batches the
    next step draws, read at the end of this step from the tables just written (the
    samplers know the next batch in advance, :func:`~src.core.sampling.upcoming`). Read
    there, the read follows the write in the data flow, and XLA updates the tables in place;
    read at the start of the next step, before the write, XLA's copy insertion could not
    tell that the read comes first and copied every table twice per step."""

    name: ClassVar[str] = "saba"

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        o = self.oracles(objective, data)
        z, x = s.z, s.theta
        per_in, per_out = o.inner.batches, o.outer.batches
        t = (tables(per_in, z), tables(per_in, z), tables(per_in, x), tables(per_out, z), tables(per_out, x))
        zero_rows = tmap(lambda a: jnp.zeros(a.shape[1:], a.dtype), t)
        return s._replace(memory=(t, zero_rows, zero_rows))

    def freeze(self, keep, moved: State, state: State) -> State:
        """The iterates freeze on divergence, the SAGA tables do not: selecting them would
        copy the tables every step, and nothing reads them once the iterates are frozen."""
        frozen_part = super().freeze(keep, moved._replace(memory=None), state._replace(memory=None))
        return frozen_part._replace(memory=moved.memory)

    def estimate(self, s: State, d, b_in: Batch, b_out: Batch):
        tabs, averages, olds = s.memory
        batches = (b_in, b_in, b_in, b_out, b_out)
        out = [saga(*a) for a in zip(d, tabs, averages, olds, batches, strict=True)]
        directions, tabs = tuple(o[0] for o in out), tuple(o[1] for o in out)
        count = lambda tab: jax.tree.leaves(tab)[0].shape[0]
        upcoming_in, upcoming_out = upcoming(s.inner, count(tabs[0])), upcoming(s.outer, count(tabs[3]))
        olds = tuple(rows(t, i) for t, i in zip(tabs, (upcoming_in,) * 3 + (upcoming_out,) * 2, strict=True))
        return directions, s._replace(memory=(tabs, tuple(o[2] for o in out), olds))
