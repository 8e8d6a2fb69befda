"""Single-loop stochastic bilevel methods: SOBA, SABA, AmIGO, StocBiO and F2SA.

They follow benchopt's ``benchmark_bilevel`` (its ``solvers/``) and take its parameter
names: ``step_size`` (rho), ``outer_ratio`` (the outer step is rho / outer_ratio),
``n_inner_steps``, ``n_shia_steps``, ``lmbda0``, ``delta_lmbda``. Step sizes decay as
``rho_t = rho / (t + 1)^inner_decay`` and ``gamma_t = rho / outer_ratio / (t + 1)^outer_decay``
(the presets in ``conf/method/`` hold each algorithm's exponents).

Notation: ``z`` is the inner variable (``w`` elsewhere), ``x`` the outer one (``theta``),
``v`` the linear system's variable with the sign of SOBA: ``v* = -H^{-1} grad_z F``.
``B``, ``B'`` are independent minibatches of the inner and outer sums (:mod:`src.core.sampling`,
one sampler each, their state in the scan carry; ``batch_size=None``: full batch, and
every method is deterministic). Each method is one more implementation of the protocol
of :mod:`src.core.protocol`: ``step`` draws the minibatches and computes the step at
``(z_t, v_t, x_t)``, ``update`` applies it.

* SOBA: ``z -= rho grad_z g_B``, ``v -= rho (H_B v + grad_z f_B')``,
  ``x -= gamma (J_B v + grad_x f_B')``, all at step t's values (``J = hess_xz g``).
* SABA: the same with each of the five directions replaced by its SAGA estimate (a
  table per direction and per batch, initialised at zero; constant steps).
* AmIGO: ``n_inner_steps`` warm-started SGD steps on ``z`` and on ``v``'s quadratic, and
  the outer step with the estimated ``v``.
* StocBiO: ``n_inner_steps`` warm-started SGD steps on ``z``; ``v`` by a stochastic Neumann
  series of ``n_shia_steps`` terms, recomputed each step.
* F2SA: Hessian-free; a second inner sequence ``y`` minimizes ``f + lambda g``, ``z``
  minimizes ``g``, and ``x`` moves along ``grad_x f(y) + lambda (grad_x g(y) - grad_x g(z))``;
  ``lambda_t = lmbda0 + t delta_lmbda``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NamedTuple

import annotated_types as at
import jax
import jax.numpy as jnp
import optax

from src.core.frozen import frozen, static
from src.core.inner import InnerInfo
from src.core.linsolve import LinsolveInfo
from src.core.objective import Objective
from src.core.protocol import MethodBase, Report
from src.core.sampling import Batch, Sampler, SamplerState, Work, sizes, view

Positive = Annotated[float, at.Gt(0)]
Decay = Annotated[float, at.Interval(ge=0, le=1)]
Steps = Annotated[int, at.Ge(1)]

tmap = jax.tree.map
axpy = lambda a, x, y: tmap(lambda xi, yi: yi - a * xi, x, y)  # y - a x
add = lambda x, y: tmap(jnp.add, x, y)


class State(NamedTuple):
    theta: Any  # x_t
    z: Any  # z_t
    v: Any  # v_t (zeros for F2SA)
    t: Any  # int32 step
    inner: SamplerState
    outer: SamplerState
    memory: Any = None  # SABA: SAGA tables
    extra: Any = None  # F2SA: (y_t, lambda_t)


class Oracles:
    """The minibatch oracles of one objective and batch size."""

    def __init__(self, objective: Objective, data, batch_size: int | None):
        self.objective, self.data = objective, data
        n_in, n_out = sizes(objective, data)
        self.inner = Sampler(n_in, batch_size or n_in)
        self.outer = Sampler(n_out, batch_size or n_out)

    def batch(self, part: str, batch: Batch):
        sampler, keys = (
            (self.inner, self.objective.inner_samples)
            if part == "inner"
            else (self.outer, self.objective.outer_samples)
        )
        return view(self.data, part, keys, batch.start, sampler.size) if keys else self.data

    def inner_grad(self, z, x, batch: Batch):
        return jax.grad(self.objective.inner_loss)(z, x, self.batch("inner", batch))

    def inner_all(self, z, x, v, batch: Batch):
        """``grad_z g_B``, ``H_B v`` and ``J_B v = d_x <grad_z g_B, v>`` from one linearization."""
        d = self.batch("inner", batch)
        g, vjp = jax.vjp(lambda z_, x_: jax.grad(self.objective.inner_loss)(z_, x_, d), z, x)
        hv, jv = vjp(v)  # H is symmetric: the VJP in z is H v
        return g, hv, jv

    def hvp(self, z, x, v, batch: Batch):
        d = self.batch("inner", batch)
        return jax.jvp(lambda z_: jax.grad(self.objective.inner_loss)(z_, x, d), (z,), (v,))[1]

    def cross(self, z, x, v, batch: Batch):
        d = self.batch("inner", batch)
        return jax.vjp(lambda x_: jax.grad(self.objective.inner_loss)(z, x_, d), x)[1](v)[0]

    def inner_grad_x(self, z, x, batch: Batch):
        return jax.grad(self.objective.inner_loss, argnums=1)(z, x, self.batch("inner", batch))

    def outer_grads(self, z, x, batch: Batch):
        return jax.grad(self.objective.outer_loss, argnums=(0, 1))(z, x, self.batch("outer", batch))

    def work(self, inner: list[Batch], outer: list[Batch]) -> Work:
        """One oracle call per minibatch listed; the samples they hold."""
        dtype = jnp.result_type(float)
        samples = lambda bs, n: sum((b.weight * n for b in bs), jnp.zeros((), dtype))
        return Work(
            jnp.asarray(len(inner), dtype),
            jnp.asarray(len(outer), dtype),
            samples(inner, self.inner.n),
            samples(outer, self.outer.n),
        )


@frozen
class Schedule:
    """``rho_t = step_size / (t + 1)^inner_decay``, ``gamma_t = step_size / outer_ratio / (t + 1)^outer_decay``."""

    step_size: Positive
    outer_ratio: Positive
    inner_decay: Decay
    outer_decay: Decay

    def at(self, t):
        t1 = (t + 1).astype(jnp.result_type(float))
        return self.step_size / t1**self.inner_decay, self.step_size / self.outer_ratio / t1**self.outer_decay


class _SingleLoop(MethodBase):
    """What the single-loop methods share: init, samplers, the update, the protocol's extras."""

    name: ClassVar[str]
    has_v: ClassVar[bool] = True
    schedule: Schedule
    batch_size: int | None

    def oracles(self, objective, data) -> Oracles:
        return Oracles(objective, data, self.batch_size)

    def init(self, objective: Objective, data, key) -> State:
        o = self.oracles(objective, data)
        k_in, k_out = jax.random.split(key)
        z0 = data["w0"]
        return State(
            data["theta0"],
            z0,
            tmap(jnp.zeros_like, z0),
            jnp.asarray(0, jnp.int32),
            o.inner.init(k_in),
            o.outer.init(k_out),
        )

    def report(self, state: State, dx, info_z, info_v, work: Work) -> Report:
        """The row of ``theta_t``: ``w = z_t``, ``grad`` = the outer direction, ``v = v_t``."""
        return Report(state.z, dx, state.v if self.has_v else None, info_z, info_v, work)


def _info(iterations, norm) -> InnerInfo:
    return InnerInfo(jnp.asarray(iterations, jnp.int32), norm)


def _lin(iterations, residual) -> LinsolveInfo:
    return LinsolveInfo(jnp.asarray(iterations, jnp.int32), residual, jnp.asarray(True))


@frozen
class SOBA(_SingleLoop):
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
        work = o.work([b_in] * 3, [b_out])
        return moved, self.report(s, dx, _info(1, optax.tree.norm(gz)), _lin(1, optax.tree.norm(dv)), work)


def _saga(g, table, average, batch: Batch):
    """SAGA's estimate of a direction: ``g - table[i] + average``; table and average updated."""
    old = tmap(lambda t: jax.lax.dynamic_index_in_dim(t, batch.index, keepdims=False), table)
    diff = tmap(jnp.subtract, g, old)
    direction = add(diff, average)
    average = tmap(lambda a, d: a + batch.weight * d, average, diff)
    table = tmap(lambda t, gi: jax.lax.dynamic_update_index_in_dim(t, gi, batch.index, 0), table, g)
    return direction, table, average


@frozen
class SABA(SOBA):
    """SABA (Dagréou et al. 2022): SOBA with SAGA estimates of its five directions."""

    name: ClassVar[str] = "saba"

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        o = self.oracles(objective, data)
        z, x = s.z, s.theta
        per = lambda n, tree: tmap(lambda a: jnp.zeros((n, *jnp.shape(a)), jnp.result_type(float)), tree)
        tables = (
            per(o.inner.batches, z),
            per(o.inner.batches, z),
            per(o.inner.batches, x),
            per(o.outer.batches, z),
            per(o.outer.batches, x),
        )
        averages = tmap(lambda t: jnp.zeros(t.shape[1:], t.dtype), tables)
        return s._replace(memory=(tables, averages))

    def freeze(self, keep, moved: State, state: State) -> State:
        """The iterates freeze on divergence, the SAGA tables do not: selecting them would
        copy the tables every step, and nothing reads them once the iterates are frozen."""
        frozen_part = super().freeze(keep, moved._replace(memory=None), state._replace(memory=None))
        return frozen_part._replace(memory=moved.memory)

    def estimate(self, s: State, d, b_in: Batch, b_out: Batch):
        tables, averages = s.memory
        batches = (b_in, b_in, b_in, b_out, b_out)
        out = [_saga(g, t, a, b) for g, t, a, b in zip(d, tables, averages, batches, strict=True)]
        directions = tuple(o[0] for o in out)
        return directions, s._replace(memory=(tuple(o[1] for o in out), tuple(o[2] for o in out)))


def _sgd_inner(o: Oracles, z, x, sampler: SamplerState, rho, steps: int):
    """``steps`` SGD steps on ``g(., x)``, one fresh inner minibatch each."""

    def body(carry, _):
        z, sampler = carry
        b, sampler = o.inner.next(sampler)
        return (axpy(rho, o.inner_grad(z, x, b), z), sampler), b.weight

    (z, sampler), weights = jax.lax.scan(body, (z, sampler), None, length=steps)
    return z, sampler, jnp.sum(weights)


class _InnerLoop(_SingleLoop):
    """AmIGO and StocBiO: ``n_inner_steps`` SGD steps on ``z`` after each outer step
    (and before the first), at step ``rho_t``; ``v`` from ``solve_v``."""

    n_inner_steps: int

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        o = self.oracles(objective, data)
        rho, _ = self.schedule.at(jnp.asarray(0, jnp.int32))
        z, inner, _ = _sgd_inner(o, s.z, s.theta, s.inner, rho, self.n_inner_steps)
        return s._replace(z=z, inner=inner)

    def initial_work(self, objective: Objective, data) -> Work:
        o = self.oracles(objective, data)
        share = min(o.inner.size, o.inner.n)  # the samples of a full-sized batch
        dtype = jnp.result_type(float)
        return Work(
            jnp.asarray(self.n_inner_steps, dtype),
            jnp.zeros((), dtype),
            jnp.asarray(self.n_inner_steps * share, dtype),
            jnp.zeros((), dtype),
        )

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        """``(v, sampler, batches)``: the linear system's estimate, the sampler after it and
        the minibatches it drew (stacked)."""
        raise NotImplementedError

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        b_out, outer = o.outer.next(s.outer)
        fz, fx = o.outer_grads(s.z, s.theta, b_out)
        v, inner, v_batches = self.solve_v(o, s, rho, fz, s.inner)
        b_cross, inner = o.inner.next(inner)
        dx = add(o.cross(s.z, s.theta, v, b_cross), fx)
        # theta's step along dx, then the inner SGD steps at the new theta
        theta = axpy(gamma, dx, s.theta)
        z, inner, sampled = _sgd_inner(o, s.z, theta, inner, rho, self.n_inner_steps)
        moved = s._replace(theta=theta, z=z, v=v, t=s.t + 1, inner=inner, outer=outer)
        dtype = jnp.result_type(float)
        v_calls = v_batches.weight.shape[0]
        work = o.work([b_cross], [b_out]) + Work(
            jnp.asarray(v_calls + self.n_inner_steps, dtype),
            jnp.zeros((), dtype),
            (jnp.sum(v_batches.weight) + sampled) * o.inner.n,
            jnp.zeros((), dtype),
        )
        nan = jnp.asarray(jnp.nan, dtype)  # no diagnostics that would cost oracle calls of their own
        return moved, self.report(s, dx, _info(self.n_inner_steps, nan), _lin(v_calls, nan), work)


@frozen
class AmIGO(_InnerLoop):
    """AmIGO (Arbel & Mairal 2022): warm-started SGD on ``z`` and on ``v``'s quadratic."""

    schedule: Schedule
    n_inner_steps: Steps = static()
    batch_size: int | None = static(None)
    name: ClassVar[str] = "amigo"

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        def v_step(carry, _):  # SGD on 1/2 v'Hv + <grad_z f, v>, from the last v
            v, sampler = carry
            b, sampler = o.inner.next(sampler)
            return (axpy(rho, add(o.hvp(s.z, s.theta, v, b), fz), v), sampler), b

        (v, sampler), batches = jax.lax.scan(v_step, (s.v, sampler), None, length=self.n_inner_steps)
        return v, sampler, batches


@frozen
class StocBiO(_InnerLoop):
    """StocBiO (Ji, Yang & Liang 2021): ``v`` from a stochastic Neumann series, recomputed."""

    schedule: Schedule
    n_inner_steps: Steps = static()
    n_shia_steps: Steps = static()
    batch_size: int | None = static(None)
    name: ClassVar[str] = "stocbio"

    def solve_v(self, o: Oracles, s: State, rho, fz, sampler: SamplerState):
        def term(carry, _):  # p_{k+1} = (I - rho H_B) p_k; sum of the terms
            p, total, sampler = carry
            b, sampler = o.inner.next(sampler)
            p = axpy(rho, o.hvp(s.z, s.theta, p, b), p)
            return (p, add(total, p), sampler), b

        (_, total, sampler), batches = jax.lax.scan(term, (fz, fz, sampler), None, length=self.n_shia_steps)
        return tmap(lambda a: -rho * a, total), sampler, batches  # v ~ -H^{-1} grad_z f


@frozen
class F2SA(_SingleLoop):
    """F2SA (Kwon et al. 2023): first-order, with a penalty ``lambda`` on ``g(y) - g(z)``."""

    schedule: Schedule
    lmbda0: Positive
    delta_lmbda: Annotated[float, at.Ge(0)]
    n_inner_steps: Steps = static()
    batch_size: int | None = static(None)
    name: ClassVar[str] = "f2sa"
    has_v: ClassVar[bool] = False

    def init(self, objective: Objective, data, key) -> State:
        s = super().init(objective, data, key)
        return s._replace(extra=(s.z, jnp.asarray(self.lmbda0, jnp.result_type(float))))

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        y, lmbda = s.extra

        def inner_step(carry, _):
            z, y, inner, outer = carry
            b_z, inner = o.inner.next(inner)
            b_y, inner = o.inner.next(inner)
            b_o, outer = o.outer.next(outer)
            z = axpy(rho, o.inner_grad(z, s.theta, b_z), z)
            gy = add(tmap(lambda a: lmbda * a, o.inner_grad(y, s.theta, b_y)), o.outer_grads(y, s.theta, b_o)[0])
            return (z, axpy(rho, gy, y), inner, outer), (b_z.weight + b_y.weight, b_o.weight)

        (z, y, inner, outer), (w_in, w_out) = jax.lax.scan(
            inner_step, (s.z, y, s.inner, s.outer), None, length=self.n_inner_steps
        )
        b_o, outer = o.outer.next(outer)
        b_1, inner = o.inner.next(inner)
        b_2, inner = o.inner.next(inner)
        penalty = tmap(jnp.subtract, o.inner_grad_x(y, s.theta, b_2), o.inner_grad_x(z, s.theta, b_1))
        dx = add(o.outer_grads(y, s.theta, b_o)[1], tmap(lambda a: lmbda * a, penalty))
        moved = s._replace(
            theta=axpy(gamma, dx, s.theta),
            z=z,
            t=s.t + 1,
            inner=inner,
            outer=outer,
            extra=(y, lmbda + self.delta_lmbda),
        )
        dtype = jnp.result_type(float)
        k = self.n_inner_steps
        work = o.work([b_1, b_2], [b_o]) + Work(
            jnp.asarray(2 * k, dtype), jnp.asarray(k, dtype), jnp.sum(w_in) * o.inner.n, jnp.sum(w_out) * o.outer.n
        )
        nan = jnp.asarray(jnp.nan, dtype)
        return moved, self.report(s, dx, _info(k, nan), _lin(0, nan), work)


METHODS: dict[str, type] = {m.name: m for m in (SOBA, SABA, AmIGO, StocBiO, F2SA)}
