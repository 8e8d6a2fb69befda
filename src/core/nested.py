"""The nested method: solve the inner problem, take the hypergradient (implicit, with a
linear solver, or unrolled), one optimizer step on theta; one implementation of the method
protocol of :mod:`src.core.protocol`."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from src.core.frozen import frozen, static
from src.core.hypergrad import Implicit
from src.core.inner import Optax
from src.core.objective import Objective
from src.core.protocol import Hypergradient, InnerSolver, MethodBase, Report
from src.core.sampling import full_batch_work


class State(NamedTuple):
    """The state of :class:`NestedSolve`."""

    theta: Any
    w: Any  # where the next inner solve starts (the last solution, or w0 without warm starts)
    opt_state: Any
    u: Any  # the last solution of the implicit system H u = grad_w F (a linear solver's warm start)


@frozen
class NestedSolve(MethodBase):
    """Solve the inner problem with ``inner``, take the hypergradient with ``hypergrad``,
    one step of ``optimizer`` on theta. Full batch; ``batch_size`` only sets the unit in
    which its oracle calls are counted (a full-batch call is ``n / batch_size`` calls)."""

    inner: InnerSolver
    hypergrad: Hypergradient
    optimizer: Optax
    batch_size: int | None = static(None)

    def init(self, objective: Objective, data, key) -> State:
        del key  # every source of randomness is in the data; the key is for stochastic methods
        theta0, w0 = data["theta0"], data["w0"]
        u0 = jnp.zeros(ravel_pytree(w0)[0].shape, jnp.result_type(float))
        return State(theta0, w0, self.optimizer.transformation().init(theta0), u0)

    def step(self, objective: Objective, state: State, data) -> tuple[State, Report]:
        r = self.hypergrad(objective, self.inner, state.theta, state.w, state.u, data)
        implicit = isinstance(self.hypergrad, Implicit)
        # grad_w G per inner iteration (reverse mode through them for unrolled), H u per
        # linear-solver iteration and one cross product; grad_w F and grad_theta F (two
        # outer calls, benchmark_bilevel's count)
        calls = r.inner.iterations + (r.linsolve.iterations + 1 if implicit else r.inner.iterations)
        work = full_batch_work(objective, data, self.batch_size, calls, 2)
        updates, opt_state = self.optimizer.transformation().update(r.grad, state.opt_state, state.theta)
        w_next = r.w if self.inner.warm_start else data["w0"]
        moved = State(optax.apply_updates(state.theta, updates), w_next, opt_state, r.u)
        v = -r.u if implicit else None  # v = -u: the sign of every method's report
        return moved, Report(r.w, r.grad, v, r.inner, r.linsolve, work)
