"""The stochastic quadratic study's grid as batched sweeps, against running it job by job.

SOBA and SABA on ``quadratic_sum`` (benchmark_bilevel's ``quadratics_021424`` problem),
each over the benchmark's step-size grid (``step_size`` in {0.01, 0.1} x ``outer_ratio`` in
{0.1, 1, 10, 100}) x 10 seeds: 80 jobs per method, minibatches of 64. Side by side:

* **batched**: one ``python -m src.train -m ...`` process (wall time, after a warm-up run
  of the same command so that the persistent compilation cache is warm, as for the others);
* **(a) one after another in one process**, as benchmark_bilevel runs each solver x
  setting x seed: every job jitted on its own (a fresh ``jax.jit`` per job, compile
  included), and, the fairest sequential baseline, one compiled program per method reused
  for its 80 jobs (compile once, then job after job);
* **(b) Hydra's basic launcher**: ``hydra/launcher=basic``, one job per Hydra job, on
  ``--basic-jobs`` jobs per method, extrapolated to 80 from its cost per job.

Also XLA's memory figure per job of the batched program (``memory_analysis`` of the
compiled 80-job program, divided by 80) against one job's program, and, per method, one
step alone and batched against the machine's limits (``benchmarks/stochastic_step.py``'s
table, for SOBA and SABA; that script measures every method).

    python benchmarks/stochastic_grid.py [--steps 3000] [--basic-jobs 4] [--no-fresh-jit]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METHODS = ("soba", "saba")
STEP_SIZES = (0.01, 0.1)
RATIOS = (0.1, 1.0, 10.0, 100.0)
SEEDS = tuple(range(1, 11))


def common(steps: int) -> list[str]:
    return ["objective=quadratic_sum", "batch_size=64", f"outer_steps={steps}", "eval_every=100", "wandb.mode=disabled"]


def grid(method: str) -> list[list[str]]:
    return [
        [f"method={method}", f"method.step_size={s}", f"method.outer_ratio={r}", f"seed={seed}"]
        for s in STEP_SIZES
        for r in RATIOS
        for seed in SEEDS
    ]


def sweep_wall(args: list[str], out: Path) -> float:
    """Wall seconds of the second of two identical sweep processes (the first warms the cache)."""
    cmd = [sys.executable, "-m", "src.train", "-m", *args]
    for attempt in ("warmup", "timed"):
        t = time.perf_counter()
        subprocess.run([*cmd, f"hydra.sweep.dir={out}-{attempt}"], cwd=ROOT, check=True, capture_output=True)
        elapsed = time.perf_counter() - t
    return elapsed


def sequential(steps: int, fresh: bool = True) -> dict[str, float]:
    """(a): the jobs one after another in this process, unbatched."""
    import jax

    from src.config import build_method, objective_of, validate
    from src.core.loop import make_run
    from src.sweep.batching import cast
    from tests.conftest import compose

    out = {"fresh_jit_s": 0.0, "reused_s": 0.0, "compile_once_s": 0.0}
    for method in METHODS:
        runs = [validate(compose(*common(steps), *job)) for job in grid(method)]
        objective = objective_of(runs[0].static)
        from src.sweep.plan import job_data

        data = {k: cast(v, jax.numpy.float32) for k, v in job_data(runs[0]).items()}
        run = make_run(objective, steps, None, 100)
        # every job its own jit: a new function object, so nothing is shared
        t = time.perf_counter()
        for r in runs if fresh else ():
            jitted = jax.jit(lambda m, d, k, run=run: run(m, d, k))
            jax.block_until_ready(jitted(build_method(r.tree), data, jax.random.key(r.seed)))
        out["fresh_jit_s"] += time.perf_counter() - t
        # one program per method, reused job after job
        t = time.perf_counter()
        shared = jax.jit(run).lower(build_method(runs[0].tree), data, jax.random.key(0)).compile()
        out["compile_once_s"] += time.perf_counter() - t
        t = time.perf_counter()
        for r in runs:
            jax.block_until_ready(shared(build_method(r.tree), data, jax.random.key(r.seed)))
        out["reused_s"] += time.perf_counter() - t
    return out


def memory(steps: int) -> tuple[float, float]:
    """XLA's bytes (arguments + outputs + temporaries) of one job's program and, per job,
    of the 80-job vmapped program (the data shared, as the batched launcher lays it out)."""
    import jax

    from src.config import build_method, objective_of, validate
    from src.core.loop import make_run
    from src.sweep.batching import Layout, _shared_layout, cast, stack_shared
    from src.sweep.plan import Job, batch_shape, job_data
    from tests.conftest import compose

    runs = [validate(compose(*common(steps), *job)) for job in grid("saba")]
    objective = objective_of(runs[0].static)
    run = make_run(objective, steps, None, 100)
    data = {k: cast(v, jax.numpy.float32) for k, v in job_data(runs[0]).items()}

    def size(compiled) -> float:
        m = compiled.memory_analysis()
        return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes

    one = size(jax.jit(run).lower(build_method(runs[0].tree), data, jax.random.key(0)).compile())
    jobs = [Job(r, Path("/nonexistent")) for r in runs]
    dynamic, keys = stack_shared(jobs, _shared_layout(jobs, batch_shape(jobs))[0], jax.numpy.float32)
    layout = Layout.shared(build_method(runs[0].tree))
    fn = layout.vmap(lambda d, k: run(d["method"], d["data"], k), ("dynamic", "key"), "rows")
    batched = size(jax.jit(fn).lower(dynamic, keys).compile())
    return one, batched / len(jobs)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--basic-jobs", type=int, default=4, help="jobs per method through the basic launcher")
    p.add_argument("--no-fresh-jit", action="store_true", help="skip the slowest baseline, a fresh jit per job")
    p.add_argument("--step-steps", type=int, default=200, help="steps of the per-method table's programs")
    args = p.parse_args()
    n = len(grid("soba"))
    print(f"quadratic_sum, SOBA and SABA x {len(STEP_SIZES)} step sizes x {len(RATIOS)} outer ratios x "
          f"{len(SEEDS)} seeds = {n} jobs per method, batch_size 64, {args.steps} outer steps")  # fmt: skip
    sweep = [
        *common(args.steps),
        "method=" + ",".join(METHODS),
        "method.step_size=" + ",".join(map(str, STEP_SIZES)),
        "method.outer_ratio=" + ",".join(map(str, RATIOS)),
        "seed=" + ",".join(map(str, SEEDS)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        batched = sweep_wall(sweep, Path(tmp) / "batched")
        summary = json.loads((Path(tmp) / "batched-timed" / "sweep_summary.json").read_text())
        small = [*common(args.steps), "method=" + ",".join(METHODS), "method.step_size=choice(0.1)",
                 "method.outer_ratio=choice(1.0)",
                 "seed=" + ",".join(map(str, SEEDS[: args.basic_jobs])), "hydra/launcher=basic"]  # fmt: skip
        basic = sweep_wall(small, Path(tmp) / "basic")
    seq = sequential(args.steps, fresh=not args.no_fresh_jit)
    basic_all = basic / (len(METHODS) * args.basic_jobs) * len(METHODS) * n
    rows = [
        ("batched sweep (one process)", batched),
        *([] if args.no_fresh_jit else [("(a) one after another, a fresh jit per job", seq["fresh_jit_s"])]),
        ("(a) one after another, one compiled program per method", seq["reused_s"] + seq["compile_once_s"]),
        (f"(b) Hydra's basic launcher (extrapolated from {args.basic_jobs} jobs per method)", basic_all),
    ]
    print(f"{'':64} | {'wall (s)':>9} | {'/ batched':>9}")
    for name, seconds in rows:
        print(f"{name:64} | {seconds:9.1f} | {seconds / batched:8.1f}x")
    print(f"batched sweep phases (s): {json.dumps(summary.get('phases_s', {}))}")
    one, per_job = memory(args.steps)
    print(f"XLA memory: one job's program {one / 2**20:.2f} MiB; per job inside the 80-job program "
          f"{per_job / 2**20:.2f} MiB (the {n} jobs share one copy of the data)")  # fmt: skip
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import stochastic_step

    stochastic_step.table(METHODS, args.step_steps, 3)


if __name__ == "__main__":
    main()
