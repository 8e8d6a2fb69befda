"""The whole bilevel loop as one pure function: ``make_run(objective, steps) -> run(method, data, key)``.

A *method* is a small frozen object (:mod:`src.frozen`) whose numeric options are traced
leaves, so ``jax.jit(jax.vmap(run))`` runs many jobs that differ only in numbers as one
program. Its protocol is a step function over a state:

* ``init(objective, data, key) -> state`` (a NamedTuple with ``theta``);
* ``evaluate(objective, state, data) -> Hypergrad``: the inner solution and the
  hypergradient at ``state.theta`` (with their diagnostics);
* ``update(state, evaluation, data) -> state``: one step of the algorithm.

:class:`NestedSolve` is "solve the inner problem, solve the implicit system (or unroll),
take an optimizer step on theta". A method that moves the inner variable, the linear
system's variable and theta together in one step (a single-loop stochastic method) is
one more implementation of the same three functions.

Row ``t`` of the returned metrics describes ``theta_t``: the inner solution there (warm
started from the previous one), the losses, metrics and hypergradient at it. Rows
``0 ... T-1`` are followed by an update; row ``T`` is ``theta_T``, evaluated the same
way, its hypergradient reported and not applied. A row whose loss, hypergradient or
variables are not finite marks the run diverged at that step: from there on nothing is
updated, and the other members of a batch are unaffected.

For progress between chunks, :func:`make_stepper` exposes the same loop as
``init`` / ``advance(n)`` / ``finish``; ``run`` is their composition.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from src.frozen import frozen
from src.hypergrad import Hypergrad, HypergradMethod, exact_hypergrad, newton_reference
from src.inner import InnerSolver, Optax
from src.objectives import Objective


class State(NamedTuple):
    """The state of :class:`NestedSolve`."""

    theta: Any
    w: Any  # where the next inner solve starts (the last solution, or w0 without warm starts)
    opt_state: Any
    u: Any  # the last solution of the implicit system (a linear solver's warm start)


@frozen
class NestedSolve:
    """Solve the inner problem with ``inner``, take the hypergradient with ``hypergrad``,
    one step of ``optimizer`` on theta."""

    inner: InnerSolver
    hypergrad: HypergradMethod
    optimizer: Optax

    def init(self, objective: Objective, data, key) -> State:
        del key  # every source of randomness is in the data; the key is for stochastic methods
        theta0, w0 = data["theta0"], data["w0"]
        u0 = jnp.zeros(ravel_pytree(w0)[0].shape, jnp.result_type(float))
        return State(theta0, w0, self.optimizer.transformation().init(theta0), u0)

    def evaluate(self, objective: Objective, state: State, data) -> Hypergrad:
        return self.hypergrad(objective, self.inner, state.theta, state.w, state.u, data)

    def update(self, state: State, evaluation: Hypergrad, data) -> State:
        updates, opt_state = self.optimizer.transformation().update(evaluation.grad, state.opt_state, state.theta)
        w_next = evaluation.w if self.inner.warm_start else data["w0"]
        return State(optax.apply_updates(state.theta, updates), w_next, opt_state, evaluation.u)


class Carry(NamedTuple):
    state: Any  # the method's state
    diverged: Any  # int32 step at which the run diverged, -1 while it has not
    t: Any  # int32 index of the row the next evaluation produces


class Result(NamedTuple):
    metrics: dict[str, jax.Array]  # each (T + 1,)
    theta: Any  # theta_T
    w: Any  # w at theta_T
    diverged: Any  # int32, -1 if not


class Stepper(NamedTuple):
    init: Callable  # (method, data, key) -> Carry
    advance: Callable  # (carry, method, data, n) -> (carry, metrics of n rows); n static
    finish: Callable  # (carry, method, data) -> Result with the last row only
    steps: int


def _finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


@functools.lru_cache(maxsize=256)
def make_stepper(objective: Objective, steps: int, newton_steps: int | None = None) -> Stepper:
    """The loop of ``steps`` outer steps on ``objective``; ``newton_steps``: where the
    objective has no closed form, the reference hypergradient for ``hypergrad_error``
    (Newton steps from the inner solution, then a direct solve)."""

    def evaluate(method, carry: Carry, data):
        r = method.evaluate(objective, carry.state, data)
        theta = carry.state.theta
        outer = objective.outer_loss(r.w, theta, data)
        row = {
            "outer_loss": outer,
            "inner_loss": objective.inner_loss(r.w, theta, data),
            "hypergrad_norm": optax.tree.norm(r.grad),
            "inner_grad_norm": r.inner.grad_norm,
            "inner_iterations": r.inner.iterations,
            "linsolve_residual": r.linsolve.residual,
            "linsolve_iterations": r.linsolve.iterations,
            "linsolve_converged": r.linsolve.converged,
        }
        exact = None
        if objective.inner_solution is not None:
            exact = exact_hypergrad(objective, theta, data)
        elif newton_steps:
            exact = newton_reference(objective, theta, r.w, data, newton_steps)
        if exact is not None:
            err = optax.tree.norm(jax.tree.map(jnp.subtract, r.grad, exact))
            row["hypergrad_error"] = err / jnp.maximum(optax.tree.norm(exact), jnp.finfo(err.dtype).tiny)
        if objective.metrics is not None:
            row.update(objective.metrics(r.w, theta, data))
        finite = _finite((outer, r.grad, r.w, theta))
        diverged = jnp.where((carry.diverged < 0) & ~finite, carry.t, carry.diverged)
        return r, row, diverged

    def init(method, data, key) -> Carry:
        i32 = lambda x: jnp.asarray(x, jnp.int32)
        return Carry(method.init(objective, data, key), i32(-1), i32(0))

    def advance(carry: Carry, method, data, n: int):
        def body(c: Carry, _):
            r, row, diverged = evaluate(method, c, data)
            moved = method.update(c.state, r, data)
            keep = diverged < 0
            state = jax.tree.map(lambda a, b: jnp.where(keep, a, b), moved, c.state)
            return Carry(state, diverged, c.t + 1), row

        return jax.lax.scan(body, carry, None, length=n)

    def finish(carry: Carry, method, data) -> Result:
        r, row, diverged = evaluate(method, carry, data)
        row = jax.tree.map(lambda x: jnp.asarray(x)[None], row)
        return Result(row, carry.state.theta, r.w, diverged)

    return Stepper(init, advance, finish, steps)


def make_run(objective: Objective, steps: int, newton_steps: int | None = None) -> Callable[..., Result]:
    """The pure, jit- and vmap-able bilevel run: ``run(method, data, key) -> Result``."""
    stepper = make_stepper(objective, steps, newton_steps)

    def run(method, data, key) -> Result:
        carry, rows = stepper.advance(stepper.init(method, data, key), method, data, stepper.steps)
        last = stepper.finish(carry, method, data)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), rows, last.metrics)
        return last._replace(metrics=metrics)

    return run
