"""The whole bilevel loop as one pure function: ``make_run(objective, steps) -> run(method, data, key)``.

A *method* is a small frozen object (:mod:`src.core.frozen`) whose numeric options are traced
leaves, so ``jax.jit(jax.vmap(run))`` runs many jobs that differ only in numbers as one
program. Its protocol (:class:`src.core.protocol.Method`) is a step function over a state:
``init(objective, data, key) -> state`` and ``step(objective, state, data) -> (state,
report)``, the report carrying the row's figures; ``initial_work`` and ``freeze`` say what
``init`` cost and what stops moving when a run diverges. The loop knows nothing else of a
method: :class:`src.core.nested.NestedSolve` ("solve the inner problem, solve the implicit
system or unroll, take an optimizer step on theta") and the single-loop stochastic methods
of :mod:`src.core.stochastic` (SOBA, SABA, ...) are implementations of it.

Row ``t`` of the returned metrics describes ``theta_t``: the inner solution there (warm
started from the previous one), the losses, metrics and hypergradient at it, and the
oracle calls spent before it (rows between evaluations: see :func:`make_stepper`). Rows
``0 ... T-1`` are followed by an update; row ``T`` is ``theta_T``, evaluated the same
way, its hypergradient reported and not applied. A row whose loss, hypergradient or
variables are not finite marks the run diverged at that step: from there on nothing is
updated, and the other members of a batch are unaffected.

For progress between chunks, :func:`make_stepper` exposes the same loop as
``init`` / ``advance(n)`` / ``finish``; ``run`` is their composition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from src.core.objective import Objective, losses
from src.core.reference import reference
from src.core.sampling import Work


class Carry(NamedTuple):
    state: Any  # the method's state
    diverged: Any  # int32 step at which the run diverged, -1 while it has not
    t: Any  # int32 index of the row the next evaluation produces
    work: Work  # oracle calls and samples spent before row t
    key: Any  # the job's key: the objective's resampled data at row t use fold_in(key, t)


class Result(NamedTuple):
    metrics: dict[str, jax.Array]  # each (T + 1,)
    theta: Any  # theta_T
    w: Any  # w at theta_T
    diverged: Any  # int32, -1 if not


class Stepper(NamedTuple):
    init: Callable  # (method, data, key) -> Carry
    advance: Callable  # (carry, method, data, n, offset=0) -> (carry, metrics of n rows); n, offset static
    finish: Callable  # (carry, method, data) -> Result with the last row only
    steps: int
    eval_every: int = 1


def carry_axes(method, per_key: bool = False) -> Carry:
    """The ``vmap`` axes of a batch's :class:`Carry` (a prefix of it): ``None`` for what
    every job holds alike (the row index, and the fields of the method's state that its
    ``batch_axes`` names), so that a program run in chunks keeps them unbatched from one
    chunk to the next, as one uninterrupted run does. ``per_key``: the axes among jobs that
    share one key (one seed), where also what is drawn from the key is held alike."""
    return Carry(method.batch_axes(per_key), 0, None, 0, None if per_key else 0)


def _finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _sq_norm(a, b) -> jax.Array:
    return jnp.sum((ravel_pytree(a)[0] - ravel_pytree(b)[0]) ** 2)


def make_stepper(objective: Objective, steps: int, newton_steps: int | None = None, eval_every: int = 1) -> Stepper:
    """The loop of ``steps`` outer steps on ``objective``.

    Every row has the step's own figures (the hypergradient's norm, the solvers'
    diagnostics, cumulative oracle calls); rows ``0, eval_every, 2 eval_every, ...`` and
    the last also have the *evaluation* columns, which cost full-batch passes: the losses,
    the objective's metrics and, where a reference exists (:mod:`src.core.reference`; a closed
    form, or ``newton_steps`` Newton steps), ``hypergrad_error`` = ||g_t - grad h(theta_t)|| /
    ||grad h(theta_t)||, the relative error of the direction ``g_t`` that the outer step takes
    (for a single-loop method, its minibatch or SAGA estimate at ``(z_t, v_t)``: it stays of
    order one while grad h tends to zero, so read it beside the absolute error),
    ``hypergrad_abs_error`` = ||g_t - grad h(theta_t)||, ``grad_h_sq`` =
    ||grad h(theta_t)||^2, ``h_value`` = h(theta_t), ``inner_gap_sq`` = ||w_t - w*||^2 and,
    for methods with a linear-system variable, ``v_gap_sq`` = ||v_t - v*||^2. Between
    evaluations these columns are NaN."""

    def evaluation(method, r, theta, data) -> dict:
        inner_loss, outer_loss = losses(objective, r.w, theta, data)
        out = {"outer_loss": outer_loss, "inner_loss": inner_loss}
        ref = reference(objective, theta, r.w, data, newton_steps)
        if ref is None and objective.hypergrad_at is not None:  # a closed form at the computed solution
            exact = objective.hypergrad_at(r.w, theta, data)
            err = optax.tree.norm(jax.tree.map(jnp.subtract, r.grad, exact))
            out["hypergrad_error"] = err / jnp.maximum(optax.tree.norm(exact), jnp.finfo(err.dtype).tiny)
            out["hypergrad_abs_error"] = err
        if ref is not None:
            err = optax.tree.norm(jax.tree.map(jnp.subtract, r.grad, ref.grad))
            out["hypergrad_error"] = err / jnp.maximum(optax.tree.norm(ref.grad), jnp.finfo(err.dtype).tiny)
            out["hypergrad_abs_error"] = err
            out["grad_h_sq"] = optax.tree.norm(ref.grad, squared=True)
            out["h_value"] = ref.value
            out["inner_gap_sq"] = _sq_norm(r.w, ref.w)
            if r.v is not None:
                out["v_gap_sq"] = _sq_norm(r.v, ref.v)
        if objective.metrics is not None:
            out.update(objective.metrics(r.w, theta, data))
        dtype = jnp.result_type(float)
        return {k: jnp.asarray(v, dtype) for k, v in out.items()}

    def evaluate(method, carry: Carry, data, full: bool):
        """The step from ``carry``'s state: the moved state, the report and the row of ``theta_t``."""
        moved, r = method.step(objective, carry.state, data)
        theta = carry.state.theta
        row = {
            "hypergrad_norm": optax.tree.norm(r.grad),
            "inner_grad_norm": r.inner.grad_norm,
            "inner_iterations": r.inner.iterations,
            "linsolve_residual": r.linsolve.residual,
            "linsolve_iterations": r.linsolve.iterations,
            "linsolve_converged": r.linsolve.converged,
            **carry.work._asdict(),
        }
        if full:
            columns = evaluation(method, r, theta, data)
        else:  # the same columns, NaN: the rows between evaluations
            shapes = jax.eval_shape(lambda r, theta, data: evaluation(method, r, theta, data), r, theta, data)
            columns = {k: jnp.full(s.shape, jnp.nan, s.dtype) for k, s in shapes.items()}
        row.update(columns)
        checked = (r.grad, r.w, theta, columns["outer_loss"]) if full else (r.grad, r.w, theta)
        diverged = jnp.where((carry.diverged < 0) & ~_finite(checked), carry.t, carry.diverged)
        return moved, r, row, diverged

    def init(method, data, key) -> Carry:
        i32 = lambda x: jnp.asarray(x, jnp.int32)
        work = method.initial_work(objective, data)
        return Carry(method.init(objective, data, key), i32(-1), i32(0), work, key)

    def at(data, c: Carry):
        """The data of row ``c.t``: resampled where the objective's data change along the loop."""
        if objective.resample is None:
            return data
        return objective.resample(jax.random.fold_in(c.key, c.t), data)

    def step(method, data, c: Carry, full: bool):
        data = at(data, c)
        moved, r, row, diverged = evaluate(method, c, data, full)
        state = method.freeze(diverged < 0, moved, c.state)
        work = jax.tree.map(lambda a, b: jnp.where(diverged < 0, a + b, a), c.work, r.work)
        return Carry(state, diverged, c.t + 1, work, c.key), row

    def advance(carry: Carry, method, data, n: int, offset: int = 0):
        """``n`` steps from row ``offset`` (static: it places the evaluations)."""
        plain = lambda c, _: step(method, data, c, False)
        stack = lambda row: jax.tree.map(lambda x: x[None], row)
        segments = []

        def run(c, length, first_full):
            if length == 0:
                return c
            if first_full:
                c, row = step(method, data, c, True)
                segments.append(stack(row))
                length -= 1
            if length:
                c, rows = jax.lax.scan(plain, c, None, length=length)
                segments.append(rows)
            return c

        lead = min((-offset) % eval_every, n)
        carry = run(carry, lead, False)
        blocks, tail = divmod(n - lead, eval_every)
        if blocks:

            def block(c, _):
                inner: list = []
                c, row = step(method, data, c, True)
                inner.append(stack(row))
                if eval_every > 1:
                    c, rows = jax.lax.scan(plain, c, None, length=eval_every - 1)
                    inner.append(rows)
                return c, jax.tree.map(lambda *xs: jnp.concatenate(xs), *inner)

            carry, rows = jax.lax.scan(block, carry, None, length=blocks)
            segments.append(jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), rows))
        carry = run(carry, tail, True)
        return carry, jax.tree.map(lambda *xs: jnp.concatenate(xs), *segments)

    def finish(carry: Carry, method, data) -> Result:
        _, r, row, diverged = evaluate(method, carry, at(data, carry), True)  # theta_T: reported, not moved
        row = jax.tree.map(lambda x: jnp.asarray(x)[None], row)
        return Result(row, carry.state.theta, r.w, diverged)

    return Stepper(init, advance, finish, steps, eval_every)


def make_run(
    objective: Objective, steps: int, newton_steps: int | None = None, eval_every: int = 1
) -> Callable[..., Result]:
    """The pure, jit- and vmap-able bilevel run: ``run(method, data, key) -> Result``."""
    stepper = make_stepper(objective, steps, newton_steps, eval_every)

    def run(method, data, key) -> Result:
        carry, rows = stepper.advance(stepper.init(method, data, key), method, data, stepper.steps)
        last = stepper.finish(carry, method, data)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), rows, last.metrics)
        return last._replace(metrics=metrics)

    return run
