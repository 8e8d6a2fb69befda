"""Implicit MAML (Rajeswaran et al. 2019) on few-shot sinusoid regression.

Tasks ``y = A sin(x - phi)``, ``A ~ U[0.1, 5]``, ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``, with
``shots`` points for adaptation and ``shots`` for evaluation; ``tasks`` new tasks at every
outer step, drawn from the job's key (``Objective.resample``). Model: an MLP 1-40-40-1
(``activation`` tanh or relu) whose parameters are one flat vector. Meta-parameters
``theta``; per task, the adapted parameters ``phi_i = theta + delta_i``, so that the inner
variable ``delta`` starts at zero every step:

    G(delta, theta) = sum_i MSE_adapt_i(theta + delta_i) + lam/2 ||delta_i||^2
    F(delta, theta) = mean_i MSE_eval_i(theta + delta_i)

The Hessian in ``delta`` is block diagonal, ``H_i + lam I`` per task, so implicit
differentiation with CG gives iMAML's ``(I + H_i / lam)^{-1} grad MSE_eval_i``, averaged.
``meta_test_mse``: the evaluation MSE after adaptation (``adapt_steps`` gradient steps of
size ``adapt_lr`` on ``G``, as the recommended inner solver takes) on ``test_tasks`` tasks
drawn once from the seed, the same at every step.
"""

from __future__ import annotations

from typing import Annotated, Literal

import annotated_types as at
import jax
import jax.numpy as jnp
import numpy as np

from src.objectives import Objective

HIDDEN = 40
REFERENCE_TOL = 1e-10  # the per-task CG of the reference hypergradient (hypergrad_error)
REFERENCE_MAXITER = 500


def _shapes():
    return [(1, HIDDEN), (HIDDEN,), (HIDDEN, HIDDEN), (HIDDEN,), (HIDDEN, 1), (1,)]


def _size() -> int:
    return sum(int(np.prod(s)) for s in _shapes())


def _draw(rng_uniform, tasks: int, shots: int):
    """(x_adapt, y_adapt, x_eval, y_eval), each (tasks, shots), from ``rng_uniform(shape, lo, hi)``."""
    amplitude = rng_uniform((tasks, 1), 0.1, 5.0)
    phase = rng_uniform((tasks, 1), 0.0, np.pi)
    x = rng_uniform((tasks, 2 * shots), -5.0, 5.0)
    y = amplitude * jnp.sin(x - phase) if not isinstance(x, np.ndarray) else amplitude * np.sin(x - phase)
    return x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:]


def make(
    tasks: Annotated[int, at.Ge(1)] = 10,
    shots: Annotated[int, at.Ge(1)] = 10,
    test_tasks: Annotated[int, at.Ge(1)] = 100,
    adapt_steps: Annotated[int, at.Ge(1)] = 20,
    activation: Literal["tanh", "relu"] = "tanh",
) -> Objective:
    act = jnp.tanh if activation == "tanh" else jax.nn.relu

    def unravel(theta):
        out, i = [], 0
        for s in _shapes():
            n = int(np.prod(s))
            out.append(theta[i : i + n].reshape(s))
            i += n
        return out

    def predict(params, x):  # x: (points,) -> (points,)
        W1, b1, W2, b2, W3, b3 = unravel(params)
        h = act(x[:, None] @ W1 + b1)
        h = act(h @ W2 + b2)
        return (h @ W3 + b3)[:, 0]

    def mse(params, x, y):
        return jnp.mean((predict(params, x) - y) ** 2)

    def data(seed: int, lam: Annotated[float, at.Gt(0)] = 10.0, adapt_lr: Annotated[float, at.Gt(0)] = 0.003):
        rng = np.random.default_rng(seed)
        W = [rng.standard_normal(s) * (np.sqrt(2.0 / s[0]) if len(s) == 2 else 0.0) for s in _shapes()]
        test = _draw(lambda shape, lo, hi: rng.uniform(lo, hi, shape), test_tasks, shots)
        return {
            "lam": np.asarray(lam),
            "adapt_lr": np.asarray(adapt_lr),
            "test_x_adapt": test[0],
            "test_y_adapt": test[1],
            "test_x_eval": test[2],
            "test_y_eval": test[3],
            "theta0": np.concatenate([w.ravel() for w in W]),
            "w0": np.zeros((tasks, _size())),
        }

    def resample(key, d):
        keys = iter(jax.random.split(key, 3))
        uniform = lambda shape, lo, hi: jax.random.uniform(next(keys), shape, minval=lo, maxval=hi)
        x_a, y_a, x_e, y_e = _draw(uniform, tasks, shots)
        return {**d, "x_adapt": x_a, "y_adapt": y_a, "x_eval": x_e, "y_eval": y_e}

    def task_inner(delta, theta, x, y, lam):
        return mse(theta + delta, x, y) + 0.5 * lam * jnp.sum(delta**2)

    def inner_loss(delta, theta, d):
        tasks = jax.vmap(task_inner, in_axes=(0, None, 0, 0, None))
        return jnp.sum(tasks(delta, theta, d["x_adapt"], d["y_adapt"], d["lam"]))

    def outer_loss(delta, theta, d):
        return jnp.mean(jax.vmap(lambda dl, x, y: mse(theta + dl, x, y))(delta, d["x_eval"], d["y_eval"]))

    def adapted_mse(theta, x_a, y_a, x_e, y_e, lam, lr):
        def step(delta, _):
            return delta - lr * jax.grad(task_inner)(delta, theta, x_a, y_a, lam), None

        delta = jax.lax.scan(step, jnp.zeros_like(theta), None, length=adapt_steps)[0]
        return mse(theta + delta, x_e, y_e)

    def hypergrad_at(delta, theta, d):
        """The reference for ``hypergrad_error``: at the computed ``delta``, per task, CG to
        ``REFERENCE_TOL`` (or ``REFERENCE_MAXITER`` steps) on ``(H_i + lam I) u_i = grad MSE_eval_i``
        (a separate jax.scipy solve per task), then the mean of ``d_theta MSE_eval_i -
        (d_theta grad G_i)^T u_i`` (= ``lam u_i`` when ``delta_i`` is the exact minimizer)."""

        def task(dl, x_a, y_a, x_e, y_e):
            grad_dl = lambda dl_, th: jax.grad(task_inner)(dl_, th, x_a, y_a, d["lam"])
            g_eval = jax.grad(lambda dl_, th: mse(th + dl_, x_e, y_e), argnums=(0, 1))(dl, theta)
            _, vjp = jax.vjp(grad_dl, dl, theta)
            u = jax.scipy.sparse.linalg.cg(
                lambda x: vjp(x)[0], g_eval[0], tol=REFERENCE_TOL, maxiter=REFERENCE_MAXITER
            )[0]
            return g_eval[1] - vjp(u)[1]

        per_task = jax.vmap(task)(delta, d["x_adapt"], d["y_adapt"], d["x_eval"], d["y_eval"])
        return jnp.mean(per_task, axis=0)

    def metrics(delta, theta, d):
        tests = (d["test_x_adapt"], d["test_y_adapt"], d["test_x_eval"], d["test_y_eval"])
        per_task = jax.vmap(adapted_mse, in_axes=(None, 0, 0, 0, 0, None, None))(theta, *tests, d["lam"], d["adapt_lr"])
        return {"meta_test_mse": jnp.mean(per_task)}

    return Objective(
        data=data,
        inner_loss=inner_loss,
        outer_loss=outer_loss,
        metrics=metrics,
        randomness="the initial weights and the held-out tasks (the training tasks come from the job's key)",
        resample=resample,
        hypergrad_at=hypergrad_at,
        blocks=True,
    )
