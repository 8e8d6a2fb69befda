"""What the single-loop stochastic methods share: their state, the minibatch oracles of an
objective, the step-size schedule and the protocol's boilerplate.

Notation (benchmark_bilevel's): ``z`` is the inner variable (``w`` elsewhere), ``x`` the
outer one (``theta``), ``v`` the linear system's variable with the sign of SOBA:
``v* = -H^{-1} grad_z F``. ``B``, ``B'`` are independent minibatches of the inner and outer
sums (:mod:`src.core.sampling`, one sampler each, their state in the scan carry;
``batch_size=None``: full batch, and every method but the randomly truncated Neumann
series of BSA, TTSA and SUSTAIN is deterministic).

Oracle calls are counted as benchmark_bilevel's plot script counts them (its ``N_CALLS``):
one call per partial gradient, Hessian- or Jacobian-vector product on one minibatch, so that
``grad_z f`` and ``grad_x f`` from one linearization are two outer calls.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NamedTuple

import annotated_types as at
import jax
import jax.numpy as jnp

from src.core.frozen import frozen
from src.core.inner import InnerInfo
from src.core.linsolve import LinsolveInfo
from src.core.objective import Objective
from src.core.protocol import MethodBase, Report
from src.core.sampling import Batch, Sampler, SamplerState, Work, full_batch_work, sizes, view

Positive = Annotated[float, at.Gt(0)]
Decay = Annotated[float, at.Interval(ge=0, le=1)]
Steps = Annotated[int, at.Ge(1)]

OWN_KEY = 0x5EED  # a method's own randomness: fold_in(job key, OWN_KEY), apart from the samplers'
tmap = jax.tree.map
axpy = lambda a, x, y: tmap(lambda xi, yi: yi - a * xi, x, y)  # y - a x
add = lambda x, y: tmap(jnp.add, x, y)
sub = lambda x, y: tmap(jnp.subtract, x, y)
scale = lambda a, x: tmap(lambda xi: a * xi, x)
zeros = lambda tree: tmap(jnp.zeros_like, tree)


def unmeasured():
    """A diagnostic a method does not compute (it would cost oracle calls of its own): NaN."""
    return jnp.asarray(jnp.nan, jnp.result_type(float))


class State(NamedTuple):
    theta: Any  # x_t
    z: Any  # z_t
    v: Any  # v_t (zeros for F2SA)
    t: Any  # int32 step
    inner: SamplerState
    outer: SamplerState
    memory: Any = None  # a method's estimates carried between steps (SAGA tables, momenta, old iterates)
    extra: Any = None  # a method's other variables (F2SA: y_t, lambda_t)
    key: Any = None  # the key of a method's own randomness (a Neumann series' random truncation)


class Oracles:
    """The minibatch oracles of one objective and batch size."""

    def __init__(self, objective: Objective, data, batch_size: int | None):
        self.objective, self.data, self.batch_size = objective, data, batch_size
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
        """``grad_z f_B'`` and ``grad_x f_B'``: two outer calls."""
        return jax.grad(self.objective.outer_loss, argnums=(0, 1))(z, x, self.batch("outer", batch))

    def outer_grad_z(self, z, x, batch: Batch):
        return jax.grad(self.objective.outer_loss)(z, x, self.batch("outer", batch))

    def outer_grad_x(self, z, x, batch: Batch):
        return jax.grad(self.objective.outer_loss, argnums=1)(z, x, self.batch("outer", batch))

    def full_inner_all(self, z, x, v):
        """``grad_z g``, ``H v`` and ``J v`` on all samples (a periodic full pass)."""
        g, vjp = jax.vjp(lambda z_, x_: jax.grad(self.objective.inner_loss)(z_, x_, self.data), z, x)
        hv, jv = vjp(v)
        return g, hv, jv

    def full_grad_cross(self, z, x, v):
        """``grad_z g`` and ``J v`` on all samples (no ``H v``)."""
        g, vjp = jax.vjp(lambda x_: jax.grad(self.objective.inner_loss)(z, x_, self.data), x)
        return g, vjp(v)[0]

    def full_outer_grads(self, z, x):
        return jax.grad(self.objective.outer_loss, argnums=(0, 1))(z, x, self.data)

    def full_hvp(self, z, x, v):
        return jax.jvp(lambda z_: jax.grad(self.objective.inner_loss)(z_, x, self.data), (z,), (v,))[1]

    def count(self, inner, outer) -> Work:
        """``inner`` and ``outer`` oracle calls on minibatches (of the samplers' size: the
        samples are ``calls x batch_size``, the benchmark's convention)."""
        dtype = jnp.result_type(float)
        c_in, c_out = jnp.asarray(inner, dtype), jnp.asarray(outer, dtype)
        return Work(c_in, c_out, c_in * min(self.inner.size, self.inner.n), c_out * min(self.outer.size, self.outer.n))

    def full_pass(self, inner, outer) -> Work:
        """``inner`` and ``outer`` full-batch evaluations: ``n / batch_size`` calls each, as
        :func:`~src.core.sampling.full_batch_work` counts a nested method's."""
        return full_batch_work(self.objective, self.data, self.batch_size, inner, outer)


def decayed(value, exponent, t):
    """``value / (t + 1)^exponent`` (benchmark_bilevel's learning-rate scheduler)."""
    return value / (t + 1).astype(jnp.result_type(float)) ** exponent


@frozen
class Schedule:
    """``rho_t = step_size / (t + 1)^inner_decay``, ``gamma_t = step_size / outer_ratio / (t + 1)^outer_decay``."""

    step_size: Positive
    outer_ratio: Positive
    inner_decay: Decay
    outer_decay: Decay

    def at(self, t):
        gamma = decayed(self.step_size / self.outer_ratio, self.outer_decay, t)
        return decayed(self.step_size, self.inner_decay, t), gamma


class SingleLoop(MethodBase):
    """What the single-loop methods share: init, samplers, the update, the protocol's extras."""

    name: ClassVar[str]
    has_v: ClassVar[bool] = True
    random: ClassVar[bool] = False  # draws at random beyond the minibatches (from State.key)
    lockstep: ClassVar[bool] = True  # every job draws the same number of minibatches per step
    schedule: Schedule
    batch_size: int | None

    def oracles(self, objective, data) -> Oracles:
        return Oracles(objective, data, self.batch_size)

    def init(self, objective: Objective, data, key) -> State:
        o = self.oracles(objective, data)
        k_in, k_out = jax.random.split(key)
        z0 = data["w0"]
        own = jax.random.fold_in(key, OWN_KEY) if self.random else None
        return State(
            data["theta0"],
            z0,
            zeros(z0),
            jnp.asarray(0, jnp.int32),
            o.inner.init(k_in),
            o.outer.init(k_out),
            key=own,
        )

    def freeze(self, keep, moved: State, state: State) -> State:
        """Every field freezes on divergence but the step counter, the samplers and the key,
        which stay the same in every job of a batch, or of a seed (unbatched,
        :meth:`batch_axes`), so that a periodic full pass and an epoch's reshuffle are one
        branch (``lax.cond``), not both under ``vmap``, and jobs of one seed share their
        minibatches. (A diverged job's rows after its divergence are not kept, so where
        its samplers are then does not show.)"""
        unfrozen = dict(t=None, inner=None, outer=None, key=None)
        frozen_part = super().freeze(keep, moved._replace(**unfrozen), state._replace(**unfrozen))
        return frozen_part._replace(t=moved.t, inner=moved.inner, outer=moved.outer, key=moved.key)

    def batch_axes(self, per_key: bool = False) -> State:
        """Alike in every job of a batch: the step counter, and the samplers' positions where
        every job draws the same number of minibatches per step (not so under a random
        truncation: ``lockstep``); alike in the jobs of one key: the samplers and the key."""
        position = None if self.lockstep or per_key else 0
        drawn = None if per_key else 0
        sampler = SamplerState(drawn, drawn, position)
        return State(0, 0, 0, None, sampler, sampler, 0, 0, drawn)

    def report(self, state: State, dx, info_z, info_v, work: Work) -> Report:
        """The row of ``theta_t``: ``w = z_t``, ``grad`` = the outer direction, ``v = v_t``."""
        return Report(state.z, dx, state.v if self.has_v else None, info_z, info_v, work)


def info(iterations, norm) -> InnerInfo:
    return InnerInfo(jnp.asarray(iterations, jnp.int32), norm)


def lin(iterations, residual) -> LinsolveInfo:
    return LinsolveInfo(jnp.asarray(iterations, jnp.int32), residual, jnp.asarray(True))
