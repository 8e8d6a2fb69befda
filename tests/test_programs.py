"""The compiled programs themselves: a batched SABA program updates its SAGA tables in place.

XLA's copy insertion used to copy every table (jobs x batches x dimension floats) twice per
step inside the vmapped loop; the sweep compiles with region analysis on CPU
(``src.sweep.programs.CPU_OPTIONS``), which proves the in-place update safe. This test reads
the optimized HLO of the program a sweep runs and fails on any copy of a table-sized buffer
inside a loop body, so that the regression cannot come back silently."""

from __future__ import annotations

import re

import jax
import numpy as np

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
    # without region analysis, XLA copies the tables in the loop: the check is a real one
    assert table_copies(_saba_program(tmp_path / "plain", options={}), table)
