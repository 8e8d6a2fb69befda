"""Inner solvers: ``w*(theta) = argmin_w G(w, theta)``.

An inner solver is a small frozen object (:mod:`src.core.frozen`) with one protocol:

* ``solve(objective, w0, theta, data) -> (w, iterations)``: solve from ``w0``;
* ``unrolled(objective, w0, theta, data, truncate) -> w``: the same solve written so that
  reverse mode can differentiate through it (only its last ``truncate`` steps);
* ``steps`` and ``warm_start``: its step count and whether the next outer step starts
  from the last solution.

:class:`OptaxSolver` runs any optax optimizer (``gd`` is ``optax.sgd``, ``adam``,
``lbfgs``...) given as an :class:`Optax` (a factory and its options): fixed step counts
as ``lax.scan``, or with a tolerance on ``||grad_w G||`` through ``lax.while_loop``
(which reverse mode cannot differentiate: unrolled hypergradients need fixed steps).
:class:`Exact` is the objective's closed-form solution, a solver of its own;
:class:`ProxGradient` (ISTA, FISTA) solves composite problems, whose solution is a fixed
point of the proximal gradient map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from src.core.frozen import frozen, static
from src.core.objective import Objective


def _iterate(step, state, n: int):
    """``n`` applications of ``step`` to ``state`` as a ``lax.scan``."""
    if n == 0:
        return state
    return jax.lax.scan(lambda s, _: (step(s), None), state, None, length=n)[0]


def _truncated(step, state, steps: int, truncate: int | None):
    """``steps`` applications of ``step``, reverse mode only through the last ``truncate``."""
    detached = 0 if truncate is None else max(steps - truncate, 0)
    state = _iterate(step, state, detached)
    state = jax.lax.stop_gradient(state) if detached else state
    return _iterate(step, state, steps - detached)


class InnerInfo(NamedTuple):
    iterations: Any  # int32: steps taken
    grad_norm: Any  # ||grad_w G(w, theta)|| at the returned w


@frozen
class Optax:
    """An optax transformation: its factory (static) and options. Float options are
    traced leaves; the others (``memory_size``, flags, strings) go in ``fixed``."""

    factory: Callable = static()
    options: dict = dataclasses.field(default_factory=dict)
    fixed: tuple = static(())

    def transformation(self) -> optax.GradientTransformation:
        return self.factory(**self.options, **dict(self.fixed))


@frozen
class OptaxSolver:
    """``steps`` steps of an optax optimizer on ``G(., theta)``, or fewer once
    ``||grad_w G|| <= tol`` (``tol=None``: exactly ``steps``, differentiable)."""

    optimizer: Optax
    steps: int = static()  # no default: the YAML files of conf/inner_solver/ hold the defaults
    tol: float | None = None
    warm_start: bool = static(True)

    def _tx(self):
        return optax.with_extra_args_support(self.optimizer.transformation())

    def _step(self, tx, objective: Objective, state, theta, data):
        w, opt_state = state
        f = lambda w_: objective.inner_loss(w_, theta, data)
        value, g = jax.value_and_grad(f)(w)
        updates, opt_state = tx.update(g, opt_state, w, value=value, grad=g, value_fn=f)
        return optax.apply_updates(w, updates), opt_state

    def _scan(self, tx, objective, state, theta, data, n: int):
        return _iterate(lambda s: self._step(tx, objective, s, theta, data), state, n)

    def solve(self, objective: Objective, w0, theta, data):
        tx = self._tx()
        state = (w0, tx.init(w0))
        if self.tol is None:
            return self._scan(tx, objective, state, theta, data, self.steps)[0], jnp.asarray(self.steps, jnp.int32)
        grad_norm = lambda w: optax.tree.norm(jax.grad(objective.inner_loss)(w, theta, data))

        def cond(carry):
            i, _, gnorm = carry
            return (i < self.steps) & (gnorm > self.tol)

        def body(carry):
            i, s, _ = carry
            gnorm = grad_norm(s[0])  # at the point this step starts from
            s = jax.lax.cond(gnorm > self.tol, lambda s: self._step(tx, objective, s, theta, data), lambda s: s, s)
            return i + (gnorm > self.tol).astype(jnp.int32), s, gnorm

        inf = jnp.asarray(jnp.inf, jnp.result_type(float))
        iterations, state, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), state, inf))
        return state[0], iterations

    def unrolled(self, objective: Objective, w0, theta, data, truncate: int | None):
        tx = self._tx()
        step = lambda s: self._step(tx, objective, s, theta, data)
        return _truncated(step, (w0, tx.init(w0)), self.steps, truncate)[0]


@frozen
class Exact:
    """The objective's closed-form inner solution ``objective.inner_solution``."""

    steps: int = static(0)
    warm_start: bool = static(True)

    def solve(self, objective: Objective, w0, theta, data):
        return objective.inner_solution(theta, data), jnp.asarray(0, jnp.int32)

    def unrolled(self, objective: Objective, w0, theta, data, truncate: int | None):
        return objective.inner_solution(theta, data)


def prox_step(objective: Objective, w, theta, data, step):
    """``T(w, theta) = prox_{step h}(w - step grad_w f(w, theta))``: one proximal gradient step."""
    g = jax.grad(objective.inner_loss)(w, theta, data)
    return objective.prox(jax.tree.map(lambda a, b: a - step * b, w, g), step, theta, data)


def prox_stepsize(objective: Objective, theta, data, lr=None):
    """The step: ``lr``, or ``1 / L`` from the objective."""
    return lr if lr is not None else 1.0 / objective.lipschitz(theta, data)


@frozen
class ProxGradient:
    """Proximal gradient on a composite ``G = f + h`` (``objective.prox``): ``steps`` steps
    (``inner_solver=ista``), with Nesterov/FISTA momentum when ``accelerated``
    (``inner_solver=fista``); step ``lr`` or ``1 / L``; with ``tol``, fewer once the
    fixed-point residual ``||w - T(w)|| / step`` is below it (``lax.while_loop``)."""

    steps: int = static()
    lr: float | None = None
    tol: float | None = None
    warm_start: bool = static(True)
    accelerated: bool = static(False)

    def _iterate(self, objective: Objective, state, theta, data, step):
        w, y, t = state  # iterate, extrapolated point, momentum counter
        w_next = prox_step(objective, y if self.accelerated else w, theta, data, step)
        if not self.accelerated:
            return w_next, w_next, t
        t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
        y_next = jax.tree.map(lambda a, b: a + (t - 1) / t_next * (a - b), w_next, w)
        return w_next, y_next, t_next

    def _start(self, w0):
        return w0, w0, jnp.ones((), jnp.result_type(float))

    def _scan(self, objective, state, theta, data, step, n: int):
        return _iterate(lambda s: self._iterate(objective, s, theta, data, step), state, n)

    def solve(self, objective: Objective, w0, theta, data):
        step = prox_stepsize(objective, theta, data, self.lr)
        if self.tol is None:
            w = self._scan(objective, self._start(w0), theta, data, step, self.steps)[0]
            return w, jnp.asarray(self.steps, jnp.int32)

        def residual(w):
            return optax.tree.norm(jax.tree.map(jnp.subtract, w, prox_step(objective, w, theta, data, step))) / step

        def cond(carry):
            i, _, r = carry
            return (i < self.steps) & (r > self.tol)

        def body(carry):
            i, s, _ = carry
            s = self._iterate(objective, s, theta, data, step)
            return i + 1, s, residual(s[0])

        start = self._start(w0)
        iterations, state, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), start, residual(w0)))
        return state[0], iterations

    def unrolled(self, objective: Objective, w0, theta, data, truncate: int | None):
        size = prox_stepsize(objective, theta, data, self.lr)
        step = lambda s: self._iterate(objective, s, theta, data, size)
        return _truncated(step, self._start(w0), self.steps, truncate)[0]
