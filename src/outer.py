"""The whole bilevel loop as one pure function: ``make_run(static) -> run(dynamic, key)``.

``static`` is the hashable static part of a validated config (see ``src.config``);
``dynamic`` is ``{"params": {dotted key: float}, "data": objective data}``, traced, so
``jax.jit(jax.vmap(run))`` runs many jobs that differ only in numbers as one program.

Row ``t`` of the returned metrics describes ``theta_t``: the inner solution there (warm
started from the previous one), the losses, metrics and hypergradient at it. Rows
``0 ... T-1`` are followed by an outer update; row ``T`` is ``theta_T``, evaluated the
same way, its hypergradient reported and not applied. A row whose loss, hypergradient
or variables are not finite marks the run diverged at that step: from there on nothing
is updated, and the other members of a batch are unaffected.

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

from src.config import construct_objective, locate, unflatten
from src.hypergrad import exact_hypergrad, make_hypergrad, newton_reference
from src.inner import make_inner_solver
from src.objectives import Objective

Static = tuple[tuple[str, Any], ...]


class Carry(NamedTuple):
    theta: Any
    w_init: Any
    opt_state: Any
    u: Any
    diverged: Any  # int32 step at which the run diverged, -1 while it has not
    t: Any  # int32 index of the row the next evaluation produces


class Result(NamedTuple):
    metrics: dict[str, jax.Array]  # each (T + 1,)
    theta: Any  # theta_T
    w: Any  # w at theta_T
    diverged: Any  # int32, -1 if not


class Stepper(NamedTuple):
    init: Callable  # (dynamic, key) -> Carry
    advance: Callable  # (carry, dynamic, n) -> (carry, metrics of n rows); n static
    finish: Callable  # (carry, dynamic) -> Result with the last row only
    steps: int


def build_objective(obj_cfg: dict) -> Objective:
    """Call an objective's factory with its static options (those in its signature)."""
    import inspect

    factory = locate(obj_cfg["_target_"], "objective._target_")
    params = inspect.signature(factory).parameters
    return construct_objective(factory, tuple(sorted((k, v) for k, v in obj_cfg.items() if k in params)))


def make_optimizer(opt_cfg: dict) -> optax.GradientTransformation:
    factory = locate(opt_cfg["_target_"], "optimizer._target_")
    return factory(**{k: v for k, v in opt_cfg.items() if k not in ("_target_", "name")})


def _finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


@functools.lru_cache(maxsize=256)
def objective_of(static: Static) -> Objective:
    """The objective of a static config (built once per process)."""
    return build_objective(unflatten(dict(static))["objective"])


@functools.lru_cache(maxsize=256)
def make_stepper(static: Static) -> Stepper:
    static_flat = dict(static)
    objective = objective_of(static)
    steps = int(static_flat["outer_steps"])
    newton_steps = static_flat.get("reference_newton_steps")

    def parts(dynamic):
        cfg = unflatten({**static_flat, **dynamic["params"]})
        solver = make_inner_solver(cfg["inner_solver"], objective)
        method = make_hypergrad(cfg, objective, solver)
        return cfg, method, make_optimizer(cfg["optimizer"])

    def evaluate(method, carry: Carry, data):
        r = method(carry.theta, carry.w_init, carry.u, data)
        outer = objective.outer_loss(r.w, carry.theta, data)
        row = {
            "outer_loss": outer,
            "inner_loss": objective.inner_loss(r.w, carry.theta, data),
            "hypergrad_norm": optax.tree.norm(r.grad),
            "inner_grad_norm": r.inner.grad_norm,
            "inner_iterations": r.inner.iterations,
            "linsolve_residual": r.linsolve.residual,
            "linsolve_iterations": r.linsolve.iterations,
            "linsolve_converged": r.linsolve.converged,
        }
        exact = None
        if objective.inner_solution is not None:
            exact = exact_hypergrad(objective, carry.theta, data)
        elif newton_steps:
            exact = newton_reference(objective, carry.theta, r.w, data, newton_steps)
        if exact is not None:
            err = optax.tree.norm(jax.tree.map(jnp.subtract, r.grad, exact))
            row["hypergrad_error"] = err / jnp.maximum(optax.tree.norm(exact), jnp.finfo(err.dtype).tiny)
        if objective.metrics is not None:
            row.update(objective.metrics(r.w, carry.theta, data))
        finite = _finite((outer, r.grad, r.w, carry.theta))
        diverged = jnp.where((carry.diverged < 0) & ~finite, carry.t, carry.diverged)
        return r, row, diverged

    def init(dynamic, key) -> Carry:
        del key  # every source of randomness is in the data; the key is for stochastic solvers
        _, _, tx = parts(dynamic)
        data = dynamic["data"]
        theta0, w0 = data["theta0"], data["w0"]
        u0 = jnp.zeros(ravel_pytree(w0)[0].shape, jnp.result_type(float))
        i32 = lambda x: jnp.asarray(x, jnp.int32)
        return Carry(theta0, w0, tx.init(theta0), u0, i32(-1), i32(0))

    def advance(carry: Carry, dynamic, n: int):
        cfg, method, tx = parts(dynamic)
        data = dynamic["data"]
        warm = bool(cfg["inner_solver"].get("warm_start", True))

        def body(c: Carry, _):
            r, row, diverged = evaluate(method, c, data)
            updates, opt_state = tx.update(r.grad, c.opt_state, c.theta)
            moved = Carry(
                optax.apply_updates(c.theta, updates),
                r.w if warm else data["w0"],
                opt_state,
                r.u,
                diverged,
                c.t + 1,
            )
            keep = diverged < 0
            new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), moved, c)
            return new._replace(diverged=diverged, t=c.t + 1), row

        return jax.lax.scan(body, carry, None, length=n)

    def finish(carry: Carry, dynamic) -> Result:
        _, method, _ = parts(dynamic)
        r, row, diverged = evaluate(method, carry, dynamic["data"])
        row = jax.tree.map(lambda x: jnp.asarray(x)[None], row)
        return Result(row, carry.theta, r.w, diverged)

    return Stepper(init, advance, finish, steps)


def make_run(static: Static) -> Callable[[Any, Any], Result]:
    """The pure, jit- and vmap-able bilevel run of a static config."""
    stepper = make_stepper(static)

    def run(dynamic, key) -> Result:
        carry, rows = stepper.advance(stepper.init(dynamic, key), dynamic, stepper.steps)
        last = stepper.finish(carry, dynamic)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), rows, last.metrics)
        return last._replace(metrics=metrics)

    return run
