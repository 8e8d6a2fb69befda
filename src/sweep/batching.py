"""Run jobs that share a static config as one ``jax.jit(jax.vmap(run))`` program.

A single ``python -m src.train`` is a batch of one; the batched launcher hands whole
groups here. Each job brings its validated config and its own output directory (Hydra's
``HydraConfig`` describes one job per process, so nothing here reads it). Host-side data
are built per job, stacked along a leading batch axis with the dynamic floats, run,
unstacked, and written to each job's directory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from src.config import RunConfig, build_method, objective_of
from src.sweep import interrupts
from src.sweep.checkpoints import BatchCheckpoint
from src.sweep.files import clear_results
from src.sweep.plan import Job, batch_shape, job_data, key_groups
from src.sweep.programs import Clock, Programs, wait_ready
from src.sweep.record import write_job


def precision_context(precision: str):
    import jax

    return jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext()


def cast(x: np.ndarray, dtype):
    import jax.numpy as jnp

    return jnp.asarray(x, dtype) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x)


def _stack_methods(grid: list[list[RunConfig]], dtype, pick=lambda x: x):
    """The jobs' method objects (``src.config.build_method``) as one object whose leaves
    are stacked on a (rows, jobs) grid; ``pick`` selects from the grid (``x[0]``: flat)."""
    import jax

    flat = [[jax.tree.flatten(build_method(run.tree)) for run in row] for row in grid]
    treedef = flat[0][0][1]
    assert all(t == treedef for row in flat for _, t in row), "a batch needs one method structure"
    leaves = [
        cast(pick(np.asarray([[leaves[k] for leaves, _ in row] for row in flat], np.float64)), dtype)
        for k in range(treedef.num_leaves)
    ]
    return treedef.unflatten(leaves)


def _stack(jobs: Sequence[Job], dtype) -> tuple[dict, Any]:
    """Flat layout: every leaf, data included, gets a leading axis of one entry per job."""
    import jax
    import jax.numpy as jnp

    method = _stack_methods([[j.run for j in jobs]], dtype, lambda x: x[0])
    datas = [job_data(j.run) for j in jobs]
    data = {k: cast(np.stack([d[k] for d in datas]), dtype) for k in datas[0]}
    seeds = jnp.asarray([j.run.seed for j in jobs], jnp.uint32)
    return {"method": method, "data": data}, jax.vmap(jax.random.key)(seeds)


def _shared_layout(jobs: Sequence[Job], shape: tuple[int, int, int]) -> tuple[list, np.ndarray]:
    """The jobs on a (datasets, seeds, K) grid of ``shape`` (:func:`~src.sweep.plan.key_groups`):
    each seed's jobs padded to ``K`` by repeating its last job, each dataset's seeds to their
    count by repeating its last seed, the datasets by repeating the last (padded members'
    outputs are dropped); returns the grid and each job's (dataset, seed, slot)."""
    grid = key_groups(jobs)
    d, n_seeds, k = shape
    assert len(grid) <= d and all(len(r) <= n_seeds and all(len(g) <= k for g in r) for r in grid), shape
    where = np.zeros((len(jobs), 3), int)
    for u, row in enumerate(grid):
        for a, group in enumerate(row):
            for slot, i in enumerate(group):
                where[i] = u, a, slot
    pad = lambda xs, n: xs + [xs[-1]] * (n - len(xs))
    rows = [pad([pad(g, k) for g in row], n_seeds) for row in grid]
    return pad(rows, d), where


def stack_shared(jobs: Sequence[Job], grid: list, dtype) -> tuple[dict, Any]:
    """Shared layout: the method's leaves are (datasets, seeds, K), the keys (datasets,
    seeds): each dataset's data are stored once, each seed's key once."""
    import jax
    import jax.numpy as jnp

    method = _stack_methods([[jobs[i].run for g in row for i in g] for row in grid], dtype)
    method = jax.tree.map(lambda x: x.reshape(len(grid), len(grid[0]), len(grid[0][0]), *x.shape[2:]), method)
    datas = [job_data(jobs[row[0][0]].run) for row in grid]
    data = {k: cast(np.stack([d[k] for d in datas]), dtype) for k in datas[0]}
    seeds = jnp.asarray([[jobs[g[0]].run.seed for g in row] for row in grid], jnp.uint32)
    return {"method": method, "data": data}, jax.vmap(jax.vmap(jax.random.key))(seeds)


class Layout:
    """How a batch's arguments map onto its batch axes, one ``vmap`` per level (outermost
    first), each a role -> axes dict: ``dynamic`` (``{"method", "data"}``), ``key``,
    ``carry`` (:func:`~src.core.loop.carry_axes`) and ``rows`` (per-job outputs)."""

    def __init__(self, levels: list[dict]) -> None:
        self.levels = levels

    @property
    def ndim(self) -> int:
        """The number of batch axes in front of each output (the rows' step axis follows)."""
        return len(self.levels)

    @classmethod
    def flat(cls, method) -> Layout:
        """Every leaf, data included, batched once per job (several devices: sharded)."""
        from src.core.loop import carry_axes

        return cls([{"dynamic": 0, "key": 0, "carry": carry_axes(method), "rows": 0}])

    @classmethod
    def shared(cls, method) -> Layout:
        """vmap over datasets of vmap over seeds of vmap over the jobs of one seed: inside,
        the data are unbatched, so the jobs' products with them become matrix products, and
        so are the minibatches and everything else a job draws from its key (the carry's
        ``carry_axes(method, per_key=True)``): the jobs of one seed gather their rows once."""
        from src.core.loop import carry_axes

        axes = carry_axes(method)
        shared = {"method": 0, "data": None}
        return cls([
            {"dynamic": 0, "key": 0, "carry": axes, "rows": 0},
            {"dynamic": shared, "key": 0, "carry": axes, "rows": 0},
            {"dynamic": shared, "key": None, "carry": carry_axes(method, per_key=True), "rows": 0},
        ])  # fmt: skip

    def vmap(self, fn: Callable, args: tuple[str, ...], out: str | tuple[str, ...]) -> Callable:
        """``fn`` over the batch; ``args`` and ``out`` name each argument's and output's role."""
        import jax

        for level in reversed(self.levels):
            out_axes = level[out] if isinstance(out, str) else tuple(level[o] for o in out)
            fn = jax.vmap(fn, in_axes=tuple(level[a] for a in args), out_axes=out_axes)
        return fn


def _pad(tree, size: int, target: int):
    """Repeat the last member so the batch axis has ``target`` entries (outputs are dropped)."""
    import jax
    import jax.numpy as jnp

    if target <= size:
        return tree
    return jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], target - size, axis=0)]), tree)


def _shard(tree):
    """Shard the batch axis (a multiple of the device count) over the devices."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("batch",)), PartitionSpec("batch"))
    return jax.device_put(tree, sharding)


def run_batch(
    jobs: Sequence[Job],
    on_steps: Callable[[int], None] | None = None,
    batch_info: dict | None = None,
    shape: tuple[int, int] | None = None,
    writer=None,
    programs: Programs | None = None,
    clock: Clock | None = None,
    checkpoints: bool = False,
    checkpoint_every_s: float | None = None,
    stops: interrupts.Stops | None = None,
) -> list[dict]:
    """Run jobs with one static config as one vmapped program; write and return summaries.

    The batch is laid out on a grid of ``shape`` = (datasets, jobs per dataset), padded,
    so that every batch of a group has one shape and the group compiles once (see
    ``src.sweep.plan.plan_batches``); with several devices it is laid out flat, padded to as
    many members and to a multiple of the device count, and sharded over them.
    ``programs`` holds the compiled programs (reused across batches), ``clock`` gets the
    time of each phase. ``checkpoints``: a chunked batch saves its state at chunk boundaries
    when stopped and every ``checkpoint_every_s`` seconds, and an attempt that finds its
    checkpoint resumes from it (:mod:`src.sweep.checkpoints`)."""
    stops = stops or interrupts.Stops()  # the sweep's: a stop whose exception was dropped
    import jax

    from src.core.loop import make_run, make_stepper

    programs, clock = programs or Programs(), clock or Clock()
    static = jobs[0].run.static
    assert all(j.run.static == static for j in jobs), "a batch needs one static config"
    for job in jobs:  # results left by an earlier, interrupted attempt
        clear_results(job.out_dir)
    precision = jobs[0].run.precision
    chunk = jobs[0].run.tree.get("chunk_steps")
    with precision_context(precision):
        dtype = jax.numpy.float64 if precision == "float64" else jax.numpy.float32
        shared = jax.device_count() == 1  # several devices: the flat layout, sharded
        method = build_method(jobs[0].run.tree)
        with clock.timed("data_s"):
            if shared:
                grid, where = _shared_layout(jobs, shape or batch_shape(jobs))
                dynamic, keys = stack_shared(jobs, grid, dtype)
                layout = Layout.shared(method)
            else:
                dynamic, keys = _stack(jobs, dtype)
                target = max(int(np.prod(shape or batch_shape(jobs))), len(jobs))
                target += (-target) % jax.device_count()
                dynamic, keys = _shard(_pad((dynamic, keys), len(jobs), target))
                layout = Layout.flat(method)
        tree = jobs[0].run.tree
        core = (
            objective_of(static),
            int(tree["outer_steps"]),
            tree.get("reference_newton_steps"),
            int(tree.get("eval_every", 1)),
        )
        stepper = _on_dynamic(make_stepper(*core))
        steps = stepper.steps
        checkpoint = None
        if checkpoints:
            shapes = (shape or batch_shape(jobs), chunk, jax.device_count(), precision)
            checkpoint = BatchCheckpoint.for_batch(jobs, shapes, checkpoint_every_s)
            checkpoint.start()
        if not chunk or chunk >= steps:
            run = make_run(*core)
            fn = layout.vmap(lambda d, key: run(d["method"], d["data"], key), ("dynamic", "key"), "rows")
            compiled, compile_s = programs.get("run", static, fn, dynamic, keys)
            t1 = time.perf_counter()
            result = wait_ready(compiled(dynamic, keys))
            run_s = time.perf_counter() - t1
            if on_steps:
                on_steps(steps)
        else:
            result, compile_s, run_s = _run_chunked(
                programs, static, stepper, dynamic, keys, chunk, on_steps, layout, checkpoint, stops
            )
        if shared:  # back from the (datasets, seeds, K) grid to one entry per job
            result = jax.tree.map(lambda x: np.asarray(x)[where[:, 0], where[:, 1], where[:, 2]], result)
        else:
            result = jax.tree.map(lambda x: np.asarray(x)[: len(jobs)], result)
    clock.add("compile_s", compile_s)
    clock.add("run_s", run_s)
    size = len(jobs)
    summaries = []
    with clock.timed("write_s"):
        for i, job in enumerate(jobs):
            stops.check()  # a stop whose exception was dropped: no more files (src.sweep.interrupts)
            info = {"size": size, "index": i, "run_s": run_s, "compile_s": compile_s, **(batch_info or {})}
            member = jax.tree.map(lambda x, i=i: x[i], result)
            resumed = None  # (write_job's default: one attempt, from step 0)
            if checkpoint is not None:
                resumed = {"attempts": checkpoint.attempts, "resumed_from_step": checkpoint.resumed_from_step}
            summaries.append(write_job(job, member, compile_s, run_s / size, info, writer, resumed))
    if checkpoint is not None:
        checkpoint.remove()  # the batch is complete
    return summaries


def _on_dynamic(stepper):
    """A stepper whose functions take the batch's ``{"method": method, "data": data}``."""
    return stepper._replace(
        init=lambda d, key: stepper.init(d["method"], d["data"], key),
        advance=lambda c, d, n, offset=0: stepper.advance(c, d["method"], d["data"], n, offset),
        finish=lambda c, d: stepper.finish(c, d["method"], d["data"]),
    )


def _run_chunked(
    programs: Programs,
    static,
    stepper,
    dynamic,
    keys,
    chunk: int,
    on_steps,
    layout: Layout,
    checkpoint=None,
    stops=None,
):
    """The same loop in chunks of ``chunk`` outer steps, with progress between chunks; with a
    ``checkpoint`` (:class:`src.sweep.checkpoints.BatchCheckpoint`), resumed from it and saved at
    chunk boundaries (periodically, and when a stop ends the loop). ``layout`` keeps what the
    jobs hold alike (:func:`src.core.loop.carry_axes`) unbatched across chunks."""
    stops = stops or interrupts.Stops()
    import jax
    import jax.numpy as jnp

    init = layout.vmap(stepper.init, ("dynamic", "key"), "carry")
    init, compile_s = programs.get("init", static, init, dynamic, keys)
    carry = init(dynamic, keys)
    sizes = [chunk] * (stepper.steps // chunk) + ([stepper.steps % chunk] if stepper.steps % chunk else [])
    # a chunk's program depends on its length and where in it the evaluations fall
    shapes = [(n, (i * chunk) % stepper.eval_every) for i, n in enumerate(sizes)]
    advance = {}
    for n, phase in sorted(set(shapes)):
        fn = layout.vmap(
            lambda c, d, n=n, phase=phase: stepper.advance(c, d, n, phase), ("carry", "dynamic"), ("carry", "rows")
        )
        advance[n, phase], seconds = programs.get(f"advance{n}@{phase}", static, fn, carry, dynamic)
        compile_s += seconds
    finish, seconds = programs.get(
        "finish", static, layout.vmap(stepper.finish, ("carry", "dynamic"), "rows"), carry, dynamic
    )
    compile_s += seconds
    # (chunks done, carry after them, their rows): replaced in one assignment, so that a
    # stop arriving anywhere leaves a consistent state to save
    progress = (0, carry, ())
    axis = layout.ndim  # the step axis follows the batch axes
    loaded = checkpoint.load(carry, sizes, axis) if checkpoint is not None else None
    if loaded is not None:
        progress = (loaded[0], loaded[1], tuple(loaded[2]))
        if on_steps:
            on_steps(sum(sizes[: loaded[0]]))

    def save(reason: str) -> None:
        done = progress[0]
        checkpoint.save(done, sum(sizes[:done]), progress[1], list(progress[2]), reason)

    t1 = time.perf_counter()
    try:
        for k in range(progress[0], len(shapes)):
            n, phase = shapes[k]
            new_carry, chunk_rows = advance[n, phase](progress[1], dynamic)
            progress = (k + 1, new_carry, (*progress[2], wait_ready(chunk_rows)))
            stops.check()  # a stop whose exception was dropped: no further chunk
            if on_steps:
                on_steps(n)
            if checkpoint is not None and progress[0] < len(shapes) and checkpoint.due():
                save("periodic")
    except BaseException:
        if checkpoint is not None and progress[0] > 0:  # stopped (or failed): keep what is done
            with interrupts.deferred():
                save("stopped")
        raise
    last = finish(progress[1], dynamic)
    metrics = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=axis), *progress[2], last.metrics)
    result = wait_ready(last._replace(metrics=metrics))
    return result, compile_s, time.perf_counter() - t1
