"""Seed notebook vs this pipeline on the seed's 100-step experiment.

Prints, measured side by side in this process:
* the seed's eager loop (its own code) vs the pipeline's compiled run after compilation;
* the whole ``python benchmarks/seed_script.py`` process vs the whole
  ``python -m src.train`` process (each the median of ``--repeats`` runs).

    python benchmarks/seed_vs_pipeline.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from benchmarks.seed_script import solve_outer
    from src.config import build_method, objective_of, validate
    from src.core.loop import make_run
    from tests.conftest import compose

    t = time.perf_counter()
    theta = solve_outer(jnp.array(1.0), n_steps=100, learning_rate=8e-2, verbose=False)
    seed_s = time.perf_counter() - t

    run = validate(compose())  # the default job: the seed's experiment as objects
    objective, method = objective_of(run.static), build_method(run.tree)
    data, key = jax.tree.map(jnp.asarray, objective.data(run.seed)), jax.random.key(run.seed)
    t = time.perf_counter()
    compiled = jax.jit(make_run(objective, run.tree["outer_steps"])).lower(method, data, key).compile()
    compile_s = time.perf_counter() - t
    jax.block_until_ready(compiled(method, data, key))
    times = []
    for _ in range(20):
        t = time.perf_counter()
        result = jax.block_until_ready(compiled(method, data, key))
        times.append(time.perf_counter() - t)
    run_s = statistics.median(times)
    assert abs(float(result.theta) - float(theta)) < 1e-6

    print(f"theta_100: seed {float(theta):.7f}  pipeline {float(result.theta):.7f}")
    print(
        f"in process   seed eager loop {seed_s:9.3f} s | pipeline compiled run {run_s * 1e3:8.3f} ms "
        f"(compile {compile_s:.2f} s) | ratio {seed_s / run_s:,.0f}x"
    )

    with tempfile.TemporaryDirectory() as tmp:
        seed_proc = statistics.median(_wall([sys.executable, "benchmarks/seed_script.py"]) for _ in range(args.repeats))
        ours = statistics.median(
            _wall([sys.executable, "-m", "src.train", f"hydra.run.dir={tmp}/run{i}"]) for i in range(args.repeats)
        )
    print(
        f"whole process  seed script {seed_proc:7.2f} s | python -m src.train {ours:6.2f} s | "
        f"ratio {seed_proc / ours:.1f}x"
    )


if __name__ == "__main__":
    main()
