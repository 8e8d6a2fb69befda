"""Every single-loop method against its update rule written as a plain loop from
benchmark_bilevel's ``solvers/`` (full batch, float64, 20 steps): theta and z to 1e-10
relative, and the oracle calls of every row exactly as the benchmark counts them.

The problem is a small ``quadratic_sum`` whose outer loss couples z and theta (so that
``grad_x f`` depends on z) and whose start ``z0`` is not zero (so that the momentum methods'
zero-initialised memories differ from the start). The randomly truncated Neumann series
(BSA, TTSA, SUSTAIN) and PZOBO's Gaussian directions draw from
``fold_in(job key, 0x5EED)`` as the loops below do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from src.config import build_method, objective_of, validate
from src.core.loop import make_run
from src.sweep.plan import job_data
from tests.conftest import compose

STEPS = 20
PROBLEMS = {  # a quadratic whose outer loss couples z and theta; a logistic regression (H and J vary)
    "quadratic_sum": ("objective=quadratic_sum", "objective.n_inner=200", "objective.n_outer=50",
                      "objective.dim_inner=6", "objective.dim_outer=3"),
    "logreg": ("objective=logreg",),
}  # fmt: skip
OWN_KEY = 0x5EED


class Oracles:
    """Full-batch oracles of G (inner) and F (outer), compiled once."""

    def __init__(self, objective, data):
        G, F = objective.inner_loss, objective.outer_loss
        self.G = jax.jit(lambda z, x: G(z, x, data))
        self.gz = jax.jit(lambda z, x: jax.grad(G)(z, x, data))
        self.gx = jax.jit(lambda z, x: jax.grad(G, argnums=1)(z, x, data))
        self.hvp = jax.jit(lambda z, x, v: jax.jvp(lambda z_: jax.grad(G)(z_, x, data), (z,), (v,))[1])
        self.cross = jax.jit(lambda z, x, v: jax.grad(lambda x_: jnp.vdot(jax.grad(G)(z, x_, data), v))(x))
        self.fz = jax.jit(lambda z, x: jax.grad(F)(z, x, data))
        self.fx = jax.jit(lambda z, x: jax.grad(F, argnums=1)(z, x, data))


def sgd(o, z, x, lr, n):
    for _ in range(n):
        z = z - lr * o.gz(z, x)
    return z


def shia(o, z, x, b, lr, n):
    """``lr sum_{k=0}^{n} (I - lr H)^k b`` (benchmark_bilevel's shia)."""
    p, s = b, b
    for _ in range(n):
        p = p - lr * o.hvp(z, x, p)
        s = s + p
    return lr * s


def hia(o, z, x, b, lr, n, key):
    """``n lr (I - lr H)^p b``, ``p`` uniform in {0..n-1} (benchmark_bilevel's hia)."""
    p = int(jax.random.randint(key, (1,), 0, n)[0])
    for _ in range(p):
        b = b - lr * o.hvp(z, x, b)
    return n * lr * b, jax.random.split(key, 1)[0]


def rate(c, e, t):
    return c / (t + 1) ** e


def amigo(o, z, x, m, key):
    rho, n = m["step_size"], m["n_inner_steps"]
    z, v = sgd(o, z, x, rho, n), jnp.zeros_like(z)
    for t in range(STEPS):
        r, g = rate(rho, m["inner_decay"], t), rate(rho / m["outer_ratio"], m["outer_decay"], t)
        fz, fx = o.fz(z, x), o.fx(z, x)
        for _ in range(n):
            v = v - r * (o.hvp(z, x, v) + fz)
        x = x - g * (fx + o.cross(z, x, v))
        z = sgd(o, z, x, r, n)
    return z, x


def stocbio(o, z, x, m, key):
    rho, n = m["step_size"], m["n_inner_steps"]
    z = sgd(o, z, x, rho, n)
    for t in range(STEPS):
        r, g = rate(rho, m["inner_decay"], t), rate(rho / m["outer_ratio"], m["outer_decay"], t)
        fz, fx = o.fz(z, x), o.fx(z, x)
        u = shia(o, z, x, fz, r, m["n_shia_steps"])
        x = x - g * (fx - o.cross(z, x, u))
        z = sgd(o, z, x, r, n)
    return z, x


def bsa(o, z, x, m, key):
    rho, n = m["step_size"], m["n_inner_steps"]
    z = sgd(o, z, x, rho, n)
    for t in range(STEPS):
        r, g = rate(rho, m["inner_decay"], t), rate(rho / m["outer_ratio"], m["outer_decay"], t)
        fz, fx = o.fz(z, x), o.fx(z, x)
        u, key = hia(o, z, x, fz, rho, m["n_hia_steps"], key)
        x = x - g * (fx - o.cross(z, x, u))
        z = sgd(o, z, x, r, n)
    return z, x


def ttsa(o, z, x, m, key):
    rho = m["step_size"]
    for t in range(STEPS):
        r, g = rate(rho, m["inner_decay"], t), rate(rho / m["outer_ratio"], m["outer_decay"], t)
        z = z - r * o.gz(z, x)
        fz, fx = o.fz(z, x), o.fx(z, x)
        u, key = hia(o, z, x, fz, rho, m["n_hia_steps"], key)
        x = x - g * (fx - o.cross(z, x, u))
    return z, x


def double_momentum(neumann):
    def loop(o, z, x, m, key):
        rho = m["step_size"]
        z_old, x_old, d_z, d_x = jnp.zeros_like(z), jnp.zeros_like(x), jnp.zeros_like(z), jnp.zeros_like(x)
        for t in range(STEPS):
            r, g = rate(rho, m["inner_decay"], t), rate(rho / m["outer_ratio"], m["outer_decay"], t)
            eta = rate(m["eta"], m["eta_decay"], t)
            d_z = o.gz(z, x) + (1 - eta) * (d_z - o.gz(z_old, x_old))
            u, u_old, key = neumann(o, z, x, z_old, x_old, rho, m, key)
            impl = o.fx(z, x) - o.cross(z, x, u)
            impl_old = o.fx(z_old, x_old) - o.cross(z_old, x_old, u_old)
            d_x = eta * impl + (1 - eta) * (d_x + impl - impl_old)
            z_old, x_old = z, x
            z, x = z - r * d_z, x - g * d_x
        return z, x

    return loop


def joint_shia(o, z, x, z_old, x_old, lr, m, key):
    n = m["n_shia_steps"]
    return shia(o, z, x, o.fz(z, x), lr, n), shia(o, z_old, x_old, o.fz(z_old, x_old), lr, n), key


def joint_hia(o, z, x, z_old, x_old, lr, m, key):
    n = m["n_hia_steps"]
    u, _ = hia(o, z, x, o.fz(z, x), lr, n, key)
    u_old, key = hia(o, z_old, x_old, o.fz(z_old, x_old), lr, n, key)  # one p for both points
    return u, u_old, key


def fsla(o, z, x, m, key):
    rho = m["step_size"]
    v, x_old, d = jnp.zeros_like(z), jnp.zeros_like(x), jnp.zeros_like(x)  # v with the benchmark's sign
    for t in range(STEPS):
        r, g = rate(rho, m["inner_decay"], t), rate(rho / m["outer_ratio"], m["outer_decay"], t)
        eta = rate(rho, m["eta_decay"], t)
        z_old = z
        z = z - r * o.gz(z, x)
        v_old = v
        v = v - r * (o.hvp(z, x, v) - o.fz(z, x))
        impl = o.fx(z, x) - o.cross(z, x, v)
        impl_old = o.fx(z_old, x_old) - o.cross(z_old, x_old, v_old)
        d = impl + (1 - eta) * (d - impl_old)
        x_old = x
        x = x - g * d
    return z, x


def period(m, sizes):
    """benchmark_bilevel's int((n_inner + n_outer) period_frac / batch_size), full batch
    counted as the larger part's size."""
    return max(1, int(sum(sizes) * m["period_frac"] / max(sizes)))


def srba(o, z, x, m, key, sizes):
    rho, g = m["step_size"], m["step_size"] / m["outer_ratio"]
    p = period(m, sizes)
    v = jnp.zeros_like(z)
    z_old, x_old, v_old = z, x, v
    d_z = d_v = jnp.zeros_like(z)
    d_x = jnp.zeros_like(x)
    for t in range(STEPS):
        if t % p == 0:
            d_z, d_v, d_x = o.gz(z, x), o.hvp(z, x, v) + o.fz(z, x), o.cross(z, x, v) + o.fx(z, x)
        else:
            d_z = d_z + o.gz(z, x) - o.gz(z_old, x_old)
            d_v = d_v + (o.hvp(z, x, v) - o.hvp(z_old, x_old, v_old)) + (o.fz(z, x) - o.fz(z_old, x_old))
            d_x = d_x + (o.cross(z, x, v) - o.cross(z_old, x_old, v_old)) + (o.fx(z, x) - o.fx(z_old, x_old))
        z_old, v_old, x_old = z, v, x
        z, v, x = z - rho * d_z, v - rho * d_v, x - g * d_x
    return z, x


def vrbo(o, z, x, m, key, sizes):
    rho, g, n = m["step_size"], m["step_size"] / m["outer_ratio"], m["n_shia_steps"]
    p = period(m, sizes)
    z_old, d_z, d_x = jnp.zeros_like(z), jnp.zeros_like(z), jnp.zeros_like(x)
    for t in range(STEPS):
        if t % p == 0:
            d_z = o.gz(z, x)
            d_x = o.fx(z, x) - o.cross(z, x, shia(o, z, x, o.fz(z, x), rho, n))
        x = x - g * d_x
        for _ in range(m["n_inner_steps"]):
            d_z = d_z + o.gz(z, x) - o.gz(z_old, x)
            u, u_old = shia(o, z, x, o.fz(z, x), rho, n), shia(o, z_old, x, o.fz(z_old, x), rho, n)
            impl = o.fx(z, x) - o.cross(z, x, u)
            impl_old = o.fx(z_old, x) - o.cross(z_old, x, u_old)
            d_x = d_x + impl - impl_old
            z_old = z
            z = z - rho * d_z
    return z, x


def f2sa(o, z, x, m, key):
    rho, lmbda, y = m["step_size"], m["lmbda0"], z
    for t in range(STEPS):
        r_y, r_z = rate(rho, m["y_decay"], t), rate(rho, m["inner_decay"], t)
        g, d_lmbda = rate(rho / m["outer_ratio"], m["outer_decay"], t), rate(m["delta_lmbda"], m["lmbda_decay"], t)
        for _ in range(m["n_inner_steps"]):
            d_y = lmbda * o.gz(y, x) + o.fz(y, x)
            d_z = o.gz(z, x)
            y, z = y - r_y * d_y, z - r_z * d_z
        d_x = o.fx(y, x) + lmbda * (o.gx(y, x) - o.gx(z, x))
        x = x - g * d_x
        lmbda = lmbda + d_lmbda
    return z, x


def bome(o, z, x, m, key):
    rho, g = m["step_size"], m["step_size"] / m["outer_ratio"]
    for _ in range(STEPS):
        z_star = sgd(o, z, x, rho, m["n_inner_steps"])
        fz, fx = o.fz(z, x), o.fx(z, x)
        qz, qx = o.gz(z, x), o.gx(z, x) - o.gx(z_star, x)
        sq = jnp.sum(qz**2) + jnp.sum(qx**2)
        phi = sq if m["choice_phi"] == "grad_norm" else o.G(z, x) - o.G(z_star, x)
        lmbda = jnp.maximum(m["eta"] * phi - fz @ qz - fx @ qx, 0) / sq
        z, x = z - rho * (fz + lmbda * qz), x - g * (fx + lmbda * qx)
    return z, x


def pzobo(o, z, x, m, key):
    rho, g, n, mu, q = (
        m["step_size"],
        m["step_size"] / m["outer_ratio"],
        m["n_inner_steps"],
        m["mu"],
        m["n_gaussian_vectors"],
    )
    for _ in range(STEPS):
        key = jax.random.split(key, 1)[0]
        z_old = z
        z = sgd(o, z, x, rho, n)
        u = jax.random.normal(key, (q, x.shape[0]), x.dtype)
        deltas = jnp.stack([(sgd(o, z_old, x + mu * u[i], rho, n) - z) / mu for i in range(q)])
        es = u.T @ (deltas @ o.fz(z, x)) / q
        x = x - g * (es + o.fx(z, x))
    return z, x


LOOPS = {
    "amigo": amigo, "stocbio": stocbio, "bsa": bsa, "ttsa": ttsa, "mrbo": double_momentum(joint_shia),
    "sustain": double_momentum(joint_hia), "fsla": fsla, "srba": srba, "vrbo": vrbo, "f2sa": f2sa,
    "bome": bome, "pzobo": pzobo,
}  # fmt: skip

# inner and outer oracle calls per step (benchmark_bilevel's plot script's N_CALLS where it
# lists the method; else the calls the update makes), and before the first step
CALLS = {
    "soba": (3, 2), "saba": (3, 2), "amigo": (21, 2), "stocbio": (21, 2), "bsa": (21, 2), "ttsa": (11, 2),
    "mrbo": (24, 4), "sustain": (24, 4), "fsla": (4, 3), "f2sa": (22, 11), "bome": (13, 2), "pzobo": (20, 2),
    # full batch: SRBA's full pass (3, 2) every period steps, else the two points' oracles
    # (6, 4); VRBO's full pass (12, 2) every period steps, and every step its 10 inner steps
    # of 2 + 2 x 10 + 2 inner and 4 outer calls
    "srba": lambda t, p: (3, 2) if t % p == 0 else (6, 4),
    "vrbo": lambda t, p: (240 + 12, 40 + 2) if t % p == 0 else (240, 40),
}  # fmt: skip


def calls(method, p=1):
    """The expected (inner, outer) calls of steps 0 .. STEPS-1 (``p``: the period)."""
    c = CALLS[method]
    per = [c(t, p) if callable(c) else c for t in range(STEPS)]
    return np.array([p[0] for p in per]), np.array([p[1] for p in per])


INITIAL = {"amigo": 10, "stocbio": 10, "bsa": 10}
EXTRA = {"srba": ("method.period_frac=4.0",), "mrbo": ("method.eta=0.3",)}


def _run(method, *overrides, problem="quadratic_sum"):
    run = validate(
        compose(*PROBLEMS[problem], "precision=float64", f"outer_steps={STEPS}", f"method={method}", *overrides)
    )
    objective = objective_of(run.static)
    data = {k: jnp.asarray(v) for k, v in job_data(run).items()}
    data["w0"] = jnp.linspace(-0.5, 0.5, data["w0"].shape[0])  # not zero: momentum memories start at zero
    key = jax.random.key(7)
    result = jax.jit(make_run(objective, STEPS))(build_method(run.tree), data, key)
    return run, objective, data, key, result


# the oracle calls a step makes, as counted by the instrumented oracles, beyond the
# benchmark's count: TTSA's Jacobian-vector product (its table entry counts 1 + n_hia_steps)
BEYOND_THE_TABLE = {"ttsa": (1, 0)}
UNITS = {  # calls per oracle of the Oracles class (one partial gradient or product each)
    "inner_grad": (1, 0), "inner_grad_x": (1, 0), "hvp": (1, 0), "cross": (1, 0), "inner_all": (3, 0),
    "outer_grads": (0, 2), "outer_grad_z": (0, 1), "outer_grad_x": (0, 1), "full_inner_all": (3, 0),
    "full_grad_cross": (2, 0), "full_hvp": (1, 0), "full_outer_grads": (0, 2),
}  # fmt: skip


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("method", list(LOOPS))
def test_full_batch_run_equals_the_benchmarks_update_rule(monkeypatch, method, problem):
    """The run against the loop; the reported counts against the table and, on the
    quadratic, against the calls the run executes."""
    tally = tallied(monkeypatch) if problem == "quadratic_sum" else None
    with jax.enable_x64(True):
        run, objective, data, key, result = _run(method, *EXTRA.get(method, ()), problem=problem)
        m = run.tree["method"]
        sizes = (data[objective.inner_samples[0]].shape[0], data[objective.outer_samples[0]].shape[0])
        more = {"sizes": sizes} if method in ("srba", "vrbo") else {}
        own = jax.random.fold_in(key, OWN_KEY)
        z, x = LOOPS[method](Oracles(objective, data), data["w0"], data["theta0"], m, own, **more)
        np.testing.assert_allclose(result.theta, x, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(result.w, z, rtol=1e-10, atol=1e-13)
        assert np.abs(x - data["theta0"]).max() > 1e-6  # theta moved: the comparison is not vacuous
        assert result.metrics["oracle_inner"][0] == INITIAL.get(method, 0)
        want = calls(method, period(m, sizes) if more else 1)
        np.testing.assert_array_equal(np.diff(result.metrics["oracle_inner"]), want[0])
        np.testing.assert_array_equal(np.diff(result.metrics["oracle_outer"]), want[1])
    if tally is not None:
        assert_counts_are_calls(tally, method, result, m, sizes)


@pytest.mark.parametrize(("method", "full", "between"), [("srba", (3, 2), (6, 4)), ("vrbo", (12, 2), (0, 0))])
def test_full_passes_count_all_batches(method, full, between):
    """With minibatches of 64 out of 200 inner and 50 outer samples, a full pass costs
    n / batch_size calls (200 / 64 inner, 1 outer: the 50 samples are one batch), every
    period steps: SRBA's with period_frac=2 int(250 * 2 / 64) = 7, VRBO's with period_frac=1
    int(250 / 64) = 3."""
    frac = {"srba": 2.0, "vrbo": 1.0}[method]
    period = int(250 * frac / 64)
    *_, result = _run(method, "batch_size=64", f"method.period_frac={frac}")
    inner, outer = np.diff(result.metrics["oracle_inner"]), np.diff(result.metrics["oracle_outer"])
    per_step = {"srba": (0, 0), "vrbo": (240, 40)}[method]  # VRBO's inner loop, every step
    for t in range(STEPS):
        on = t % period == 0
        want = (
            per_step[0] + (full[0] * 200 / 64 if on else between[0]),
            per_step[1] + (full[1] * 1 if on else between[1]),
        )
        assert (inner[t], outer[t]) == want, (t, inner[t], outer[t], want)


def tallied(monkeypatch) -> np.ndarray:
    """(inner, outer) calls the runs from now on execute, tallied by a host callback in
    each oracle (inside scans once per iteration; inside a cond only on the branch taken)."""
    from src.core.stochastic import base

    tally = np.zeros(2)

    def counted(name):
        real = getattr(base.Oracles, name)

        def wrapper(self, *args):
            jax.debug.callback(lambda: tally.__iadd__(UNITS[name]))
            return real(self, *args)

        return wrapper

    for name in UNITS:
        monkeypatch.setattr(base.Oracles, name, counted(name))
    return tally


def assert_counts_are_calls(tally, method, result, m, sizes) -> None:
    """The executed calls equal the reported counts (full batch: one call per oracle) plus
    the final row's step (evaluated, not moved), but for TTSA's documented extra."""
    jax.effects_barrier()
    p = period(m, sizes) if method in ("srba", "vrbo") else 1
    c = CALLS[method]
    last = c(STEPS, p) if callable(c) else c
    extra = np.asarray(BEYOND_THE_TABLE.get(method, (0, 0))) * (STEPS + 1)
    reported = np.array([result.metrics["oracle_inner"][STEPS], result.metrics["oracle_outer"][STEPS]]) + last
    np.testing.assert_array_equal(tally, reported + extra)


@pytest.mark.parametrize("method", ["soba", "saba"])
def test_the_counts_are_the_calls_the_code_makes(monkeypatch, method):
    """SOBA's and SABA's counts against the executed calls (the other methods: in
    test_full_batch_run_equals_the_benchmarks_update_rule)."""
    tally = tallied(monkeypatch)
    with jax.enable_x64(True):
        run, objective, data, _, result = _run(method)
    sizes = (data[objective.inner_samples[0]].shape[0], data[objective.outer_samples[0]].shape[0])
    assert_counts_are_calls(tally, method, result, run.tree["method"], sizes)
