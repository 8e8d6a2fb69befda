"""The protocols of the numerical core, as ``typing.Protocol`` classes: what a method, an
inner solver, a hypergradient and a linear solver are. Every one is a small frozen pytree
(:mod:`src.core.frozen`) whose numbers are traced leaves, so that a batch of them that
differ only in numbers is one vmapped program.

A **method** is a step function over a state, in the spirit of optax's ``init/update`` and
optimistix's ``init/step``:

* ``init(objective, data, key) -> state``: a NamedTuple with ``theta``;
* ``step(objective, state, data) -> (state, Report)``: one step of the algorithm from
  ``state`` (at ``theta_t``) and what the row of ``theta_t`` reports;
* ``initial_work(objective, data) -> Work``: the oracle work ``init`` did;
* ``freeze(keep, moved, state) -> state``: ``moved`` where ``keep``, else ``state`` (a run
  that diverged stops moving); a method decides what freezes;
* ``batch_axes(per_key) -> prefix of the state``: ``None`` for the fields that every job of
  a batch holds alike (a step counter: so that a branch on it stays a branch under
  ``vmap``), and with ``per_key`` also those that jobs with one key (one seed) hold alike
  (minibatch samplers), ``0`` for the rest: the sweep keeps them unbatched.

:class:`MethodBase` gives the last three their usual meaning. The loop
(:func:`src.core.loop.make_run`) knows nothing else of a method.

One sign convention: ``Report.v`` is the method's estimate of ``v* = -H^{-1} grad_w F``,
the variable the single-loop methods track (the nested method reports minus the implicit
system's solution); ``None`` where a method has none (unrolled differentiation, F2SA).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from src.core.inner import InnerInfo
from src.core.linsolve import LinsolveInfo
from src.core.objective import Objective
from src.core.sampling import Work


class Report(NamedTuple):
    """What one step reports about ``theta_t``, its row's figures."""

    w: Any  # the inner variable at theta_t (a solution, or a single-loop method's iterate z_t)
    grad: Any  # the direction the outer step takes, shaped like theta
    v: Any  # the estimate of v* = -H^{-1} grad_w F, or None
    inner: InnerInfo  # the inner solver's iterations and ||grad_w G||
    linsolve: LinsolveInfo  # the linear system's iterations, residual, convergence
    work: Work  # the oracle calls and samples this step cost


class Method(Protocol):
    def init(self, objective: Objective, data, key) -> Any: ...

    def step(self, objective: Objective, state, data) -> tuple[Any, Report]: ...

    def initial_work(self, objective: Objective, data) -> Work: ...

    def freeze(self, keep, moved, state) -> Any: ...

    def batch_axes(self, per_key: bool = False) -> Any: ...


class MethodBase:
    """The defaults of :class:`Method`: ``init`` costs nothing, every field of the state
    freezes on divergence and differs between the jobs of a batch."""

    def initial_work(self, objective: Objective, data) -> Work:
        del objective, data
        return Work.zero()

    def freeze(self, keep, moved, state):
        return jax.tree.map(lambda a, b: jnp.where(keep, a, b), moved, state)

    def batch_axes(self, per_key: bool = False) -> Any:
        del per_key
        return 0


class InnerSolver(Protocol):
    """``w*(theta) = argmin_w G(w, theta)`` (:mod:`src.core.inner`)."""

    steps: int
    warm_start: bool

    def solve(self, objective: Objective, w0, theta, data) -> tuple[Any, Any]: ...

    def unrolled(self, objective: Objective, w0, theta, data, truncate: int | None) -> Any: ...


class LinearSolver(Protocol):
    """``H x = b`` through ``matvec`` only (:mod:`src.core.linsolve`)."""

    warm_start: bool
    symmetric_only: bool

    def solve(self, matvec: Callable, b, x0, blocks: int = 1) -> tuple[Any, LinsolveInfo]: ...


class Hypergradient(Protocol):
    """``dF(w*(theta), theta)/dtheta`` and the inner solution (:mod:`src.core.hypergrad`)."""

    def __call__(self, objective: Objective, inner: InnerSolver, theta, w_init, u0, data) -> Any: ...
