"""Inner solvers: ``w*(theta) = argmin_w G(w, theta)``.

A solver is a NamedTuple of pure functions in optax's style: ``init(w0, theta, data)``
makes its state, ``step(state, theta, data)`` takes one step and ``params(state)``
reads ``w``. Any optax optimizer is one (``gd`` is ``optax.sgd``, ``adam``,
``lbfgs``...); ``exact`` returns the objective's closed form. Fixed step counts run as
``lax.scan``; a tolerance on ``||grad_w G||`` stops early through ``lax.while_loop``
(which reverse mode cannot differentiate: unrolled hypergradients need fixed steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from src.objectives import Objective


class InnerInfo(NamedTuple):
    iterations: Any  # int32: steps taken
    grad_norm: Any  # ||grad_w G(w, theta)|| at the returned w


class InnerSolver(NamedTuple):
    init: Callable  # (w0, theta, data) -> state
    step: Callable  # (state, theta, data) -> state
    params: Callable  # state -> w
    steps: int  # static step count (the cap when a tolerance is set)
    tol: Any  # None (fixed steps) or a traced tolerance
    exact: Callable | None = None  # (theta, data) -> w*, for inner_solver=exact


def make_inner_solver(cfg: dict, objective: Objective) -> InnerSolver:
    """Build the inner solver of a (merged static + traced dynamic) inner_solver config."""
    G = objective.inner_loss
    steps, tol = int(cfg["steps"]), cfg.get("tol")
    if cfg["name"] == "exact":
        ident = lambda state, *_: state
        return InnerSolver(ident, ident, lambda s: s, steps, None, objective.inner_solution)

    from src.config import locate

    factory = locate(cfg["_target_"], "inner_solver._target_")
    extra = {k: v for k, v in cfg.items() if k not in ("_target_", "name", "steps", "lr", "tol", "warm_start")}
    tx = optax.with_extra_args_support(factory(learning_rate=cfg.get("lr"), **extra))

    def init(w0, theta, data):
        return (w0, tx.init(w0))

    def step(state, theta, data):
        w, opt_state = state
        f = lambda w_: G(w_, theta, data)
        value, g = jax.value_and_grad(f)(w)
        updates, opt_state = tx.update(g, opt_state, w, value=value, grad=g, value_fn=f)
        return (optax.apply_updates(w, updates), opt_state)

    return InnerSolver(init, step, lambda s: s[0], steps, tol)


def run_steps(solver: InnerSolver, state, theta, data, n: int):
    """``n`` fixed steps from ``state`` (differentiable: a ``lax.scan``)."""
    if n == 0:
        return state
    body = lambda s, _: (solver.step(s, theta, data), None)
    return jax.lax.scan(body, state, None, length=n)[0]


def solve(solver: InnerSolver, objective: Objective, w0, theta, data) -> tuple[Any, jax.Array]:
    """Solve the inner problem from ``w0``; returns ``w`` and the number of steps taken."""
    grad_norm = lambda w: optax.tree.norm(jax.grad(objective.inner_loss)(w, theta, data))
    if solver.exact is not None:
        return solver.exact(theta, data), jnp.asarray(0, jnp.int32)
    state = solver.init(w0, theta, data)
    if solver.tol is None:
        state = run_steps(solver, state, theta, data, solver.steps)
        iterations = jnp.asarray(solver.steps, jnp.int32)
    else:

        def cond(carry):
            i, _, gnorm = carry
            return (i < solver.steps) & (gnorm > solver.tol)

        def body(carry):
            i, s, _ = carry
            gnorm = grad_norm(solver.params(s))  # at the point this step starts from
            s = jax.lax.cond(gnorm > solver.tol, lambda s: solver.step(s, theta, data), lambda s: s, s)
            return i + (gnorm > solver.tol).astype(jnp.int32), s, gnorm

        inf = jnp.asarray(jnp.inf, jnp.result_type(float))
        iterations, state, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state, inf))
    return solver.params(state), iterations
