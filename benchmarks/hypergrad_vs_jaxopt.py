"""Hypergradient cost: this project vs jaxopt's ``custom_root``; memory of implicit vs unrolled.

Same problem (ridge, logreg), same inner solver (gradient descent, fixed steps, from the
same start), same number of CG iterations; both jitted. Prints the time of one
hypergradient (one outer step's work) for both, their ratio, and the two
hypergradients' relative difference. Then XLA's own memory figure
(``compiled.memory_analysis()``) for implicit vs unrolled as the inner step count grows,
on logreg, dataset distillation and iMAML.

    python benchmarks/hypergrad_vs_jaxopt.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from src.core.hypergrad import Implicit, Unrolled  # noqa: E402
from src.core.inner import Optax, OptaxSolver  # noqa: E402
from src.core.linsolve import CG  # noqa: E402
from src.objectives import distillation, imaml, logreg, ridge  # noqa: E402

INNER_STEPS, CG_ITERS = 100, 20


def _time_pair(f, g, x, repeats=300) -> tuple[float, float]:
    """Median times of ``f(x)`` and ``g(x)``, measured alternately so that load hits both alike."""
    jax.block_until_ready((f(x), g(x)))
    times: tuple[list, list] = ([], [])
    for _ in range(repeats):
        for fn, out in zip((f, g), times, strict=True):
            t = time.perf_counter()
            jax.block_until_ready(fn(x))
            out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def compare(name, objective, lr):
    import jaxopt

    data = jax.tree.map(jnp.asarray, objective.data(0))
    theta = data["theta0"]
    solver = OptaxSolver(Optax(optax.sgd, {"learning_rate": lr}), steps=INNER_STEPS)
    method = Implicit(CG(tol=0.0, maxiter=CG_ITERS))  # tol 0: both run exactly CG_ITERS iterations
    u0 = jnp.zeros(data["w0"].size)
    ours = jax.jit(lambda th: method(objective, solver, th, data["w0"], u0, data).grad)

    def inner(w0, th):
        return solver.unrolled(objective, w0, th, data, None)  # the same INNER_STEPS gd steps

    optimality = jax.grad(objective.inner_loss)
    linsolve = lambda matvec, b: jaxopt.linear_solve.solve_cg(matvec, b, maxiter=CG_ITERS, tol=0.0)
    rooted = jaxopt.implicit_diff.custom_root(lambda w, th: optimality(w, th, data), solve=linsolve)(inner)
    peer = jax.jit(jax.grad(lambda th: objective.outer_loss(rooted(data["w0"], th), th, data)))

    t_ours, t_peer = _time_pair(ours, peer, theta)
    g_ours, g_peer = ours(theta), peer(theta)
    agree = float(jnp.linalg.norm(g_ours - g_peer) / jnp.linalg.norm(g_peer))
    print(
        f"{name:7s} ours {t_ours * 1e3:7.3f} ms | jaxopt {t_peer * 1e3:7.3f} ms | ratio {t_ours / t_peer:5.2f} "
        f"| relative difference {agree:.1e}"
    )


def memory(name, objective, lr, steps_grid=(10, 100, 1000)):
    data = jax.tree.map(jnp.asarray, objective.data(0))
    if objective.resample is not None:  # iMAML: one outer step's tasks
        data = objective.resample(jax.random.key(0), data)
    theta, u0 = data["theta0"], jnp.zeros(data["w0"].size)
    print(f"\nXLA memory (temp + output) of one hypergradient, {name}, gd with step {lr}:")
    print(f"{'inner steps':>11s} | {'implicit (bytes)':>16s} | {'unrolled (bytes)':>16s}")
    for steps in steps_grid:
        solver = OptaxSolver(Optax(optax.sgd, {"learning_rate": lr}), steps=steps)
        figures = []
        for method in (Implicit(CG(tol=1e-6, maxiter=CG_ITERS)), Unrolled()):
            fn = jax.jit(lambda th, m=method, s=solver: m(objective, s, th, data["w0"], u0, data).grad)
            mem = fn.lower(theta).compile().memory_analysis()
            figures.append(mem.temp_size_in_bytes + mem.output_size_in_bytes)
        print(f"{steps:11d} | {figures[0]:16,d} | {figures[1]:16,d}")


if __name__ == "__main__":
    print(
        f"one hypergradient: gd {INNER_STEPS} inner steps + {CG_ITERS} CG iterations, float32, jitted, "
        "median of 300 alternating calls"
    )
    compare("ridge", ridge.make(), 0.2)
    compare("logreg", logreg.make(), 0.2)
    memory("logreg", logreg.make(), 0.2)
    memory("distillation (1 image per class)", distillation.make(), 1.0)
    memory("imaml (10 tasks, CG per task)", imaml.make(), 0.003, (20, 100, 1000))
