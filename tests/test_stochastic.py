"""Single-loop stochastic methods (src/core/stochastic/) and minibatches (src/core/sampling.py):
full-batch runs against the formulas written as plain Python loops, determinism and the
batched-launcher guarantee with minibatches, and variance reduction on quadratic_sum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from src.config import build_method, objective_of, validate
from src.core.loop import make_run
from src.core.stochastic import METHODS
from src.sweep.plan import job_data
from tests.conftest import compose

STEPS = 30


def _setup(*overrides):
    run = validate(compose(*overrides))
    objective = objective_of(run.static)
    data = {k: jnp.asarray(v) for k, v in job_data(run).items()}
    return run, objective, data


def _hvp(G, z, x, v, data):
    """``d2_zz G . v``."""
    return jax.jvp(lambda z_: jax.grad(G)(z_, x, data), (z,), (v,))[1]


def _cross(G, z, x, v, data):
    """``d2_xz G . v``: the gradient in x of ``<grad_z G, v>``."""
    return jax.grad(lambda x_: jnp.vdot(jax.grad(G)(z, x_, data), v))(x)


def _soba_loop(objective, data, steps, rho, ratio, decay):
    """SOBA's three simultaneous updates, one full-batch step at a time, in plain Python."""
    G, F = objective.inner_loss, objective.outer_loss
    z, x = data["w0"], data["theta0"]
    v = jnp.zeros_like(z)
    norms = []
    for t in range(steps):
        rho_t, gamma_t = rho / (t + 1) ** decay, rho / ratio / (t + 1) ** decay
        gz = jax.grad(G)(z, x, data)
        hv, jv = _hvp(G, z, x, v, data), _cross(G, z, x, v, data)
        fz, fx = jax.grad(F, argnums=(0, 1))(z, x, data)
        dx = jv + fx
        norms.append(float(jnp.linalg.norm(dx)))
        z, v, x = z - rho_t * gz, v - rho_t * (hv + fz), x - gamma_t * dx
    return z, x, np.asarray(norms)


@pytest.mark.parametrize("method", ["soba", "saba"])
def test_full_batch_equals_the_formulas(method):
    """batch_size null, float64, on `quadratic`: SOBA (decaying steps) and SABA (constant
    steps; its SAGA tables hold the one full batch) equal the loop to 1e-10."""
    with jax.enable_x64(True):
        run, objective, data = _setup(
            "objective=quadratic",
            f"method={method}",
            "method.step_size=0.05",
            "method.outer_ratio=2.0",
            "precision=float64",
            f"outer_steps={STEPS}",
        )
        decay = run.tree["method"]["inner_decay"]
        result = jax.jit(make_run(objective, STEPS))(build_method(run.tree), data, jax.random.key(0))
        z, x, norms = _soba_loop(objective, data, STEPS, 0.05, 2.0, decay)
        np.testing.assert_allclose(result.theta, x, rtol=0, atol=1e-10)
        np.testing.assert_allclose(result.w, z, rtol=0, atol=1e-10)
        np.testing.assert_allclose(result.metrics["hypergrad_norm"][:STEPS], norms, rtol=1e-10, atol=0)
        assert result.metrics["oracle_inner"][STEPS] == 3 * STEPS and result.metrics["oracle_outer"][STEPS] == 2 * STEPS


def test_saba_full_batch_is_soba_with_constant_steps():
    with jax.enable_x64(True):
        results = []
        for method in ("saba", "soba"):
            run, objective, data = _setup(
                "objective=quadratic",
                f"method={method}",
                "method.inner_decay=0.0",
                "method.outer_decay=0.0",
                "precision=float64",
                f"outer_steps={STEPS}",
            )
            results.append(jax.jit(make_run(objective, STEPS))(build_method(run.tree), data, jax.random.key(3)))
        np.testing.assert_allclose(results[0].theta, results[1].theta, rtol=0, atol=1e-12)
        np.testing.assert_allclose(results[0].metrics["grad_h_sq"], results[1].metrics["grad_h_sq"], rtol=1e-10)


SMALL = ("objective=quadratic_sum", "objective.n_inner=1000", "objective.n_outer=100", "objective.dim_inner=20",
         "objective.dim_outer=5", "batch_size=64", "outer_steps=100", "eval_every=25")  # fmt: skip


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("bome", "pzobo")])
def test_minibatch_runs_are_random_reproducible_and_batch_invariant(tmp_path, method):
    """Every minibatch method: different seeds give different trajectories; the same seed,
    run again, is bit-identical; the same job inside a batch of other step sizes, outer
    ratios and seeds, one of them with its seed, equals it run with copies of itself (1e-5,
    float32): nothing of the other jobs leaks into it. (BOME and PZOBO run full batch in
    the benchmark: tests/test_method_loops.py checks them, PZOBO's draws included.)"""
    import pandas as pd

    from src.sweep.batching import run_batch
    from src.sweep.plan import Job
    from src.sweep.programs import Programs

    programs = Programs()  # the reruns reuse the compiled program

    def job(name, seed, *overrides):
        settings = (*SMALL, f"method={method}", f"seed={seed}", "wandb.mode=disabled", *overrides)
        return Job(validate(compose(*settings)), tmp_path / name)

    def read(j):
        return pd.read_parquet(j.out_dir / "metrics.parquet")

    # every run on the batch's grid shape (1 dataset, 3 seeds, 2 jobs per seed), padded: one
    # compiled program for the whole test (tests/test_stochastic.py::test_job_alone_equals_job_in_a_batch
    # compares a job's own unbatched program with a batch)
    shape = (1, 3, 2)
    a, b, again = job("a", 1), job("b", 2), job("again", 1)
    for j in (a, b, again):
        run_batch([j], programs=programs, shape=shape)
    ma, mb, mc = read(a), read(b), read(again)
    assert np.array_equal(ma["hypergrad_norm"].to_numpy(), mc["hypergrad_norm"].to_numpy())
    assert not np.allclose(ma["hypergrad_norm"].to_numpy(), mb["hypergrad_norm"].to_numpy())
    # evaluations at rows 0, 25, ..., 100 only; cumulative work grows
    evaluated = ma["grad_h_sq"].notna().to_numpy().nonzero()[0]
    assert list(evaluated) == [0, 25, 50, 75, 100]
    assert (np.diff(ma["oracle_inner"]) > 0).all() and (np.diff(ma["samples_outer"]) > 0).all()
    inside = job("inside", 1)
    # o3 shares inside's seed: the two draw their minibatches once (the batch's (dataset, seed, job) layout)
    batch = [job("o1", 2, "method.step_size=0.05"), inside, job("o2", 3, "method.outer_ratio=10.0"),
             job("o3", 1, "method.step_size=0.05")]  # fmt: skip
    run_batch(batch, programs=programs, shape=shape)
    assert programs.built == 1
    mi = read(inside)
    for col in ("hypergrad_norm", "grad_h_sq", "outer_loss", "oracle_inner", "oracle_outer"):
        np.testing.assert_allclose(mi[col], ma[col], rtol=1e-5, atol=0, err_msg=col)


def test_last_minibatch_is_smaller_and_weighted():
    """1000 samples in batches of 64: 16 batches, the last one of 40 samples (weight 40/1000),
    and every sample is drawn exactly once per epoch."""
    from src.core.sampling import Sampler, mean, view

    sampler = Sampler(1000, 64)
    state = sampler.init(jax.random.key(0))
    data = {"x": jnp.arange(1000.0)}
    seen, total = [], 0.0
    for _ in range(sampler.batches):
        batch, state = sampler.next(state)
        d = view(data, "inner", ("x",), batch.start, 64)
        w = d["_weights_inner"]
        seen.extend(np.asarray(d["x"])[np.asarray(w) > 0].tolist())
        total += float(batch.weight) * float(mean(d["x"], d, "inner"))
        if int(batch.index) == 15:
            assert float(batch.weight) == pytest.approx(40 / 1000) and int((w > 0).sum()) == 40
    assert sorted(seen) == list(range(1000))
    assert total == pytest.approx(float(jnp.mean(data["x"])), rel=1e-6)  # the weights make the full mean


@pytest.mark.parametrize("precision, rtol", [("float32", 1e-5), ("float64", 1e-10)])
def test_job_alone_equals_job_in_a_batch(tmp_path, precision, rtol):
    """The batched-launcher guarantee with minibatches: a job inside a batch of other step
    sizes, outer ratios and seeds equals the same job run alone."""
    from src.sweep.batching import run_batch
    from src.sweep.plan import Job

    def job(name, *overrides):
        return Job(validate(compose(*SMALL, "method=soba", f"precision={precision}", *overrides)), tmp_path / name)

    alone = job("alone", "seed=3", "method.step_size=0.05")
    others = [job(f"o{i}", f"seed={s}", f"method.step_size={lr}", f"method.outer_ratio={r}")
              for i, (s, lr, r) in enumerate([(1, 0.1, 1.0), (3, 0.01, 10.0), (2, 0.05, 0.1)])]  # fmt: skip
    inside = job("inside", "seed=3", "method.step_size=0.05")
    run_batch([alone])
    run_batch([others[0], inside, *others[1:]])
    import pandas as pd

    a, b = (pd.read_parquet(tmp_path / n / "metrics.parquet") for n in ("alone", "inside"))
    for col in ("hypergrad_norm", "grad_h_sq", "inner_gap_sq", "v_gap_sq", "outer_loss"):
        np.testing.assert_allclose(b[col], a[col], rtol=rtol, atol=0, err_msg=col)


def test_batch_size_needs_a_finite_sum():
    from src.config import ConfigError

    with pytest.raises(
        ConfigError, match="batch_size=64.*null \\(full batch\\): objective .quadratic. is not a finite sum"
    ):
        validate(compose("objective=quadratic", "method=soba", "batch_size=64"))


def test_saba_reduces_variance_on_quadratic_sum(tmp_path):
    """At equal steps, SABA's median final grad_h_sq over seeds is below SOBA's, and both
    reduce it at least 10x from step 0 (the paper's finding, on the benchmark's problem)."""
    from src.sweep.batching import run_batch
    from src.sweep.plan import Job

    common = ("objective=quadratic_sum", "objective.n_inner=4096", "objective.n_outer=512", "batch_size=64",
              "outer_steps=1500", "eval_every=500", "method.step_size=0.1", "method.outer_ratio=1.0")  # fmt: skip
    finals = {}
    for method in ("soba", "saba"):
        jobs = [Job(validate(compose(*common, f"method={method}", f"seed={s}")), tmp_path / f"{method}{s}")
                for s in range(5)]  # fmt: skip
        summaries = run_batch(jobs)
        import pandas as pd

        rows = [pd.read_parquet(j.out_dir / "metrics.parquet")["grad_h_sq"] for j in jobs]
        start = np.median([r.iloc[0] for r in rows])
        finals[method] = np.median([r.iloc[-1] for r in rows])
        assert finals[method] < start / 10, (method, start, finals[method], summaries[0])
    assert finals["saba"] < finals["soba"], finals


def test_a_grid_of_two_algorithms_compiles_one_program_each(tmp_path):
    """algorithms x step sizes x outer ratios x seeds through the CLI: one compiled program
    per algorithm; ``hydra.sweeper.also`` adds a grid with other keys (a full-batch
    reference) after the main one."""
    import json

    from tests.conftest import cli

    (tmp_path / "conf" / "study").mkdir(parents=True)
    (tmp_path / "conf" / "study" / "grid.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n"
        "  sweeper:\n"
        "    params: {method: 'soba,saba', method.step_size: '0.01,0.1', method.outer_ratio: '1.0,10.0', seed: '1,2'}\n"
        "    also: [{method: cg, lr: '0.1,1.0'}]\n"
    )
    out = tmp_path / "sweep"
    proc = cli(
        "-m", "study=grid", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", *SMALL[:5], "batch_size=64",
        "outer_steps=20", "eval_every=10", "wandb.mode=disabled", f"hydra.sweep.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["jobs"] == summary["completed"] == 2 * 2 * 2 * 2 + 2
    assert summary["groups"] == summary["compiled_programs"] == 3  # soba, saba, the reference
    labels = [b["label"] for b in summary["batches"]]
    assert any("soba" in label for label in labels) and any("saba" in label for label in labels)
    reference = json.loads((out / "17" / "summary.json").read_text())
    assert reference["config"]["hypergrad"]["name"] == "implicit" and "method" not in reference["config"]
    assert reference["config"]["lr"] == 1.0


def test_reference_by_conjugate_gradients_equals_the_dense_one(monkeypatch):
    """src.core.reference beyond DENSE_MAX unknowns (Newton-CG, CG for v*) against its dense path."""
    from src.core import reference as ref

    with jax.enable_x64(True):
        run, objective, data = _setup("objective=logreg", "precision=float64")
        theta, w = data["theta0"] + 1.0, data["w0"]
        dense = ref.reference(objective, theta, w, data, 10)
        monkeypatch.setattr(ref, "DENSE_MAX", 0)
        iterative = ref.reference(objective, theta, w, data, 10)
        for a, b in zip(dense, iterative, strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)
        # and the reference's gradient is the value function's, by finite differences
        h = lambda th: ref.reference(objective, th, dense.w, data, 10).value
        e = jnp.zeros_like(theta).at[0].set(1e-6)
        fd = (h(theta + e) - h(theta - e)) / 2e-6
        np.testing.assert_allclose(dense.grad[0], fd, rtol=1e-5)


def test_the_groups_compose_the_sequential_variant_of_soba():
    """One warm-started gd step on w, one warm-started Richardson (Neumann) step on the linear
    system at w_{t+1}, an sgd step on theta at (w_{t+1}, u_{t+1}): what the README says the
    ordinary groups compose, against that loop written out (full batch, float64)."""
    rho, gamma = 0.05, 0.025
    with jax.enable_x64(True):
        run, objective, data = _setup(
            "objective=quadratic", "method=neumann", "inner_solver=gd", "inner_solver.steps=1",
            f"inner_solver.lr={rho}", "linear_solver.maxiter=1", f"linear_solver.step_size={rho}",
            "linear_solver.warm_start=true", "optimizer=sgd", f"lr={gamma}", "precision=float64",
            f"outer_steps={STEPS}",
        )  # fmt: skip
        result = jax.jit(make_run(objective, STEPS))(build_method(run.tree), data, jax.random.key(0))
        G, F = objective.inner_loss, objective.outer_loss
        z, x = data["w0"], data["theta0"]
        u = jnp.zeros_like(z)
        for _ in range(STEPS):
            z = z - rho * jax.grad(G)(z, x, data)
            u = u + rho * (jax.grad(F)(z, x, data) - _hvp(G, z, x, u, data))
            x = x - gamma * (jax.grad(F, argnums=1)(z, x, data) - _cross(G, z, x, u, data))
        np.testing.assert_allclose(result.theta, x, rtol=0, atol=1e-10)


def test_a_researchers_own_method_runs_in_a_sweep(tmp_path):
    """examples/clipped_soba.py, located by ``method._target_``: with a clip it never reaches
    it is SOBA's run; with a small clip every outer direction has norm <= clip."""
    import pandas as pd

    from tests.conftest import cli

    out, soba = tmp_path / "own", tmp_path / "soba"
    common = (*SMALL[:5], "batch_size=64", "outer_steps=20", "eval_every=10")
    proc = cli("-m", "hydra.searchpath=[file://examples/conf]", *common, "method=clipped_soba",
               "method.clip=1e9,0.01", f"hydra.sweep.dir={out}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = cli("-m", *common, "method=soba", f"hydra.sweep.dir={soba}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    unclipped, clipped, reference = (pd.read_parquet(d / "metrics.parquet") for d in (out / "0", out / "1", soba / "0"))
    for col in ("hypergrad_norm", "grad_h_sq", "outer_loss"):
        np.testing.assert_allclose(unclipped[col], reference[col], rtol=1e-6, err_msg=col)
    assert (clipped["hypergrad_norm"] <= 0.01 * (1 + 1e-5)).all() and (reference["hypergrad_norm"] > 0.01).any()


def test_quadratic_sums_losses_from_its_means_equal_the_sums_over_its_samples():
    """The evaluation rows of ``quadratic_sum`` take G and F from the means of its factors
    (``Objective.full_losses``: O(d^2) instead of a pass over 33,792 samples); they are the
    same numbers as the means of the per-sample losses, at points away from the solution."""
    from src.core.objective import losses

    with jax.enable_x64(True):
        _, objective, data = _setup("objective=quadratic_sum", "objective.n_inner=3000", "objective.n_outer=500")
        rng = np.random.default_rng(0)
        for _ in range(3):
            z, x = jnp.asarray(rng.standard_normal(100)), jnp.asarray(3 * rng.standard_normal(10))
            g, f = losses(objective, z, x, data)
            assert float(g) == pytest.approx(float(objective.inner_loss(z, x, data)), rel=1e-12)
            assert float(f) == pytest.approx(float(objective.outer_loss(z, x, data)), rel=1e-12)
            assert abs(float(g)) > 1e-3 and abs(float(f)) > 1e-3
