"""Hessian-free methods that the benchmark runs on the full batch: BOME and PZOBO.

With ``batch_size`` null (the benchmark's setting) every oracle is on all samples; with a
batch size each call draws a fresh minibatch (a stochastic variant the benchmark does not run).

* BOME (Ye, Liu, Wright, Stone & Liu 2022): ``z* = n_inner_steps`` gradient steps on
  ``g(., x)`` from ``z``; ``q(z, x) = g(z, x) - g(z*, x)``; a step on ``(z, x)`` along
  ``grad f + lambda grad q`` with ``lambda = max(phi - <grad f, grad q>, 0) / |grad q|^2`` and
  ``phi = eta |grad q|^2`` (``choice_phi=grad_norm``) or ``eta q`` (``value``).
* PZOBO (Sow, Ji & Liang 2022): ``z`` takes ``n_inner_steps`` gradient steps; the Jacobian of
  ``z(x)`` is estimated by finite differences of the same steps from the previous ``z`` at
  ``x + mu u_q`` (``n_gaussian_vectors`` Gaussian ``u_q``), and ``x`` steps along
  ``grad_x f + 1/Q sum_q u_q <(z_q - z)/mu, grad_z f>``.

Oracle calls per step: BOME ``n_inner_steps + 3`` inner (``+ 2`` values with
``choice_phi=value``), 2 outer; PZOBO ``n_inner_steps (1 + n_gaussian_vectors)`` inner, 2 outer.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from src.core.frozen import frozen, static
from src.core.objective import Objective
from src.core.protocol import Report
from src.core.stochastic.base import (
    Positive,
    Schedule,
    SingleLoop,
    State,
    Steps,
    add,
    axpy,
    info,
    lin,
    scale,
    sub,
    unmeasured,
)
from src.core.stochastic.inner_loops import sgd_inner


def dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@frozen
class BOME(SingleLoop):
    """BOME (Ye et al. 2022): a value-function penalty with a dynamic barrier ``lambda``."""

    schedule: Schedule
    eta: Positive = 0.5
    choice_phi: Literal["grad_norm", "value"] = static("grad_norm")
    n_inner_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "bome"
    has_v: ClassVar[bool] = False

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        z, x = s.z, s.theta
        z_star, inner = sgd_inner(o, z, x, s.inner, rho, self.n_inner_steps)
        b_out, outer = o.outer.next(s.outer)
        fz, fx = o.outer_grads(z, x, b_out)
        b1, inner = o.inner.next(inner)
        b2, inner = o.inner.next(inner)
        qz = o.inner_grad(z, x, b1)
        qx = sub(o.inner_grad_x(z, x, b1), o.inner_grad_x(z_star, x, b2))
        sq = dot(qz, qz) + dot(qx, qx)
        if self.choice_phi == "grad_norm":
            phi = sq
        else:
            g = objective.inner_loss
            phi = g(z, x, o.batch("inner", b1)) - g(z_star, x, o.batch("inner", b2))
        lmbda = jnp.maximum(self.eta * phi - dot(fz, qz) - dot(fx, qx), 0.0) / sq
        d_z, d_x = add(fz, scale(lmbda, qz)), add(fx, scale(lmbda, qx))
        moved = s._replace(z=axpy(rho, d_z, z), theta=axpy(gamma, d_x, x), t=s.t + 1, inner=inner, outer=outer)
        extra = 2 if self.choice_phi == "value" else 0
        work = o.count(self.n_inner_steps + 3 + extra, 2)
        return moved, self.report(s, d_x, info(self.n_inner_steps, optax.tree.norm(qz)), lin(0, unmeasured()), work)


@frozen
class PZOBO(SingleLoop):
    """PZOBO (Sow, Ji & Liang 2022): a zeroth-order estimate of the Jacobian of the inner steps."""

    schedule: Schedule
    mu: Positive = 0.1
    n_gaussian_vectors: Steps = static(1)
    n_inner_steps: Steps = static(10)
    batch_size: int | None = static(None)
    name: ClassVar[str] = "pzobo"
    random: ClassVar[bool] = True
    has_v: ClassVar[bool] = False

    def step(self, objective: Objective, s: State, data) -> tuple[State, Report]:
        o = self.oracles(objective, data)
        rho, gamma = self.schedule.at(s.t)
        key = jax.random.split(s.key, 1)[0]
        x_flat, unravel = ravel_pytree(s.theta)
        z, inner = sgd_inner(o, s.z, s.theta, s.inner, rho, self.n_inner_steps)
        u = jax.random.normal(key, (self.n_gaussian_vectors, x_flat.shape[0]), x_flat.dtype)

        def perturbed(sampler, u_q):
            z_q, sampler = sgd_inner(o, s.z, unravel(x_flat + self.mu * u_q), sampler, rho, self.n_inner_steps)
            return sampler, scale(1 / self.mu, sub(z_q, z))

        inner, deltas = jax.lax.scan(perturbed, inner, u)
        b_out, outer = o.outer.next(s.outer)
        fz, fx = o.outer_grads(z, s.theta, b_out)
        weights = jax.vmap(lambda d: dot(d, fz))(deltas)  # <delta_q, grad_z f>
        estimate = unravel(u.T @ weights / self.n_gaussian_vectors)
        dx = add(estimate, fx)
        moved = s._replace(z=z, theta=axpy(gamma, dx, s.theta), t=s.t + 1, inner=inner, outer=outer, key=key)
        work = o.count(self.n_inner_steps * (1 + self.n_gaussian_vectors), 2)
        return moved, self.report(s, dx, info(self.n_inner_steps, unmeasured()), lin(0, unmeasured()), work)
