"""The compiled programs themselves: a batched SABA program updates its SAGA tables in place;
a batch run in chunks keeps its step counter unbatched, so its branches stay branches; the
jobs of one seed gather their minibatches once.

XLA's copy insertion used to copy every SAGA table (jobs x batches x dimension floats) twice
per step inside the vmapped loop: the old rows were read at the start of a step and the new
ones written later, and without region analysis it cannot tell that the read comes first.
SABA now reads the next step's rows right after the write (``src.core.stochastic.soba``),
so the read depends on the write. These tests read the optimized HLO of the program a sweep
runs and fail on any copy of a table-sized buffer inside a loop body, with the sweep's
compiler options and with XLA's defaults, so that the regression cannot come back silently;
a loop that reads a row before writing it shows that the check finds such copies."""

from __future__ import annotations

import re

import jax
import numpy as np
import pandas as pd
import pytest

from src.config import validate
from src.sweep.batching import run_batch
from src.sweep.plan import Job
from src.sweep.programs import Programs
from tests.conftest import compose

JOBS = 4


def _while_bodies(hlo: str) -> list[str]:
    """The text of every computation that is the body of a ``while`` in an HLO module."""
    names = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    bodies, current, lines = [], None, []
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) \(", line)
        if head and line.rstrip().endswith("{"):
            current, lines = head.group(1), []
        elif line.startswith("}") and current is not None:
            if current in names:
                bodies.append("\n".join(lines))
            current = None
        elif current is not None:
            lines.append(line)
    return bodies


def table_copies(hlo: str, min_elements: int) -> list[str]:
    """The copies of buffers of at least ``min_elements`` floats inside loop bodies."""
    found = []
    for body in _while_bodies(hlo):
        for m in re.finditer(r"= f(?:32|64)\[([\d,]+)\]\S* copy\(", body):
            if int(np.prod([int(d) for d in m.group(1).split(",")])) >= min_elements:
                found.append(m.group(0))
    return found


def _saba_program(tmp_path, options=None):
    """The program of a batch of SABA jobs on benchmark_bilevel's quadratic, as a sweep
    compiles it (``options``: other compiler options than the sweep's, for the check that
    the test can fail)."""
    settings = ("objective=quadratic_sum", "method=saba", "batch_size=64", "outer_steps=3", "eval_every=3")
    jobs = [Job(validate(compose(*settings, f"seed={s}")), tmp_path / str(s)) for s in range(JOBS)]
    programs = Programs()
    if options is not None:
        import src.sweep.programs as module

        real = module.compiler_options
        module.compiler_options = lambda backend: options
    try:
        run_batch(jobs, programs=programs)
    finally:
        if options is not None:
            module.compiler_options = real
    (compiled,) = programs._executables.values()
    return compiled.as_text()


def test_the_batched_saba_program_updates_its_tables_in_place(tmp_path):
    assert jax.default_backend() == "cpu"
    table = JOBS * (32768 // 64) * 100  # the batch's largest SAGA table: jobs x batches x dim_inner
    assert not table_copies(_saba_program(tmp_path / "sweep"), table)
    assert not table_copies(_saba_program(tmp_path / "plain", options={}), table)


def test_a_read_before_the_write_copies_the_table_so_the_check_is_real():
    """SAGA's loop as SABA had it: the old row read before the new one is written. With
    XLA's defaults the compiled loop copies the table; with region analysis it does not."""
    import jax.numpy as jnp

    def saga_loop(table, index, g):
        def body(i, carry):
            t, average = carry
            old = jax.lax.dynamic_index_in_dim(t, index[i], keepdims=False)
            return jax.lax.dynamic_update_index_in_dim(t, g * i, index[i], 0), average + (g * i - old) / 16

        return jax.lax.fori_loop(0, 50, body, (table, jnp.zeros_like(g)))

    args = (jnp.zeros((JOBS, 512, 100)), jnp.zeros((JOBS, 50), jnp.int32), jnp.ones((JOBS, 100)))
    lowered = jax.jit(jax.vmap(saga_loop)).lower(*args)
    assert table_copies(lowered.compile(compiler_options={}).as_text(), JOBS * 512 * 100)
    region = {"xla_cpu_copy_insertion_use_region_analysis": True}
    assert not table_copies(lowered.compile(compiler_options=region).as_text(), JOBS * 512 * 100)


def _small_batch(tmp_path, method: str, *extra: str, programs=None) -> list:
    settings = ("objective=quadratic_sum", "objective.n_inner=640", "objective.n_outer=256", f"method={method}",
                "batch_size=32", "outer_steps=30", "eval_every=10", "precision=float64", *extra)  # fmt: skip
    jobs = [Job(validate(compose(*settings, f"seed={s}")), tmp_path / str(s)) for s in range(JOBS)]
    run_batch(jobs, programs=programs)
    return [pd.read_parquet(j.out_dir / "metrics.parquet") for j in jobs]


@pytest.mark.parametrize("method", ["srba", "ttsa"])
def test_a_batch_run_in_chunks_branches_as_one_run_does(tmp_path, method):
    """Between chunks the carry leaves the compiled program; the fields every job holds alike
    (the step counter, the samplers' positions) come back unbatched (``carry_axes``), so
    SRBA's periodic full pass and an epoch's reshuffle are one ``conditional`` per step, not
    both branches and a select (SRBA in chunks of 100 ran 4.4x slower). TTSA's samplers move
    a random number of times per step: its positions stay batched, and it runs the same."""
    programs = Programs()
    chunked = _small_batch(tmp_path / "chunked", method, "chunk_steps=10", programs=programs)
    whole = _small_batch(tmp_path / "whole", method)
    for a, b in zip(chunked, whole, strict=True):
        assert len(a) == len(b) == 31 and list(a.columns) == list(b.columns)
        for column in a.columns:
            np.testing.assert_allclose(a[column], b[column], rtol=1e-12, atol=1e-300, err_msg=column)
    advance = [c.as_text() for key, c in programs._executables.items() if key[0].startswith("advance")]
    assert advance
    for hlo in advance:
        assert ("conditional(" in hlo) == (method != "ttsa"), method


def test_the_jobs_of_one_seed_draw_their_minibatches_once(tmp_path):
    """A batch is laid out as (datasets, seeds, jobs of a seed): a grid of 3 step sizes x 2
    seeds gathers 2 minibatches of rows per draw, not 6, and the step sizes' products with
    them are matrix products; the planner puts a grid's seeds and settings on that grid."""
    from src.sweep.plan import plan_batches

    settings = ("objective=quadratic_sum", "objective.n_inner=640", "objective.n_outer=256", "method=soba",
                "batch_size=32", "outer_steps=3", "eval_every=3")  # fmt: skip
    grid = [(s, lr) for s in (1, 2) for lr in (0.1, 0.05, 0.01)]
    jobs = [Job(validate(compose(*settings, f"seed={s}", f"method.step_size={lr}")), tmp_path / f"{s}-{lr}")
            for s, lr in grid]  # fmt: skip
    assert [shape for _, _, shape in plan_batches(jobs, range(6), 1024)[1]] == [(1, 2, 3)]
    assert [shape for _, _, shape in plan_batches(jobs, range(6), 4)[1]] == [(1, 1, 3)] * 2
    programs = Programs()
    run_batch(jobs, programs=programs)
    (compiled,) = programs._executables.values()
    blocks = set(re.findall(r"f32\[([\d,]+),32,100\]", compiled.as_text()))  # minibatch rows of (32, 100)
    assert blocks and all(int(np.prod([int(d) for d in b.split(",")])) == 2 for b in blocks), blocks
