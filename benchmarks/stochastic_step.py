"""The cost of one outer step of each single-loop method, alone and batched, against this
machine's limits.

Per method on ``quadratic_sum`` (benchmark_bilevel's quadratic: 32,768 inner and 1,024 outer
samples, dims 100/10, minibatches of 64): µs per job-step of one job's program (compiled once,
reused: what a user would otherwise run job after job) and of a ``--jobs``-job vmapped program,
both compiled as a sweep compiles them (``src.sweep.programs.compiler_options``) and run
``--steps`` steps without evaluation rows (those are full-batch passes, costed apart below);
the ratio; and the roofline: the minibatch bytes a step must read per job (the sampled rows of
the per-sample arrays, plus SABA's table rows, read and written) and its FLOPs
(``compiled.cost_analysis()`` of the one-job program), against this machine's gather
bandwidth and GEMM rate measured in the same process. Each method is compiled both with
the sweep's options and with XLA's defaults (the before/after), and the four programs are
timed in turn, best of ``--repeats``, since these shared machines are noisy.

    python benchmarks/stochastic_step.py [--jobs 80] [--steps 300] [--repeats 5] [--methods soba,saba]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

METHODS = ("soba", "saba", "srba", "amigo", "stocbio", "bsa", "ttsa", "mrbo", "sustain", "fsla", "vrbo", "f2sa",
           "bome", "pzobo")  # fmt: skip
# minibatches (inner, outer) one step draws, at the presets' defaults (BOME and PZOBO: their
# minibatch variant; SRBA and VRBO: between full passes)
DRAWS = {"soba": (1, 1), "saba": (1, 1), "srba": (1, 1), "amigo": (21, 1), "stocbio": (21, 1), "bsa": (21, 1),
         "ttsa": (11, 1), "mrbo": (11, 1), "sustain": (11, 1), "fsla": (3, 2), "vrbo": (110, 10), "f2sa": (22, 11),
         "bome": (12, 1), "pzobo": (20, 1)}  # fmt: skip


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def program(method: str, jobs: int, steps: int, plain: bool):
    """A compiled ``jobs``-member program of ``steps`` outer steps without evaluation rows,
    its inputs, and the run's objective and data."""
    from src.config import build_method, objective_of, validate
    from src.core.loop import make_stepper
    from src.sweep.plan import job_data
    from src.sweep.programs import compiler_options

    run = validate(compose("objective=quadratic_sum", f"method={method}", "batch_size=64"))
    objective, data = objective_of(run.static), job_data(run)
    data = {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}
    stepper = make_stepper(objective, steps + 1, None, steps + 1)  # row 0 is the only evaluation
    methods = jax.tree.map(lambda x: jnp.stack([x] * jobs), build_method(run.tree))
    keys = jax.random.split(jax.random.key(0), jobs)

    def steps_only(m, key):
        carry = stepper.init(m, data, key)
        carry, rows = stepper.advance(carry, m, data, steps, 1)  # from row 1: no evaluation inside
        return carry.state.theta, rows["hypergrad_norm"]

    lowered = jax.jit(jax.vmap(steps_only)).lower(methods, keys)
    options = None if plain else compiler_options(jax.default_backend())
    return lowered.compile(compiler_options=options), (methods, keys), objective, data


def timed(compiled, args, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t)
    return best


def step_bytes(objective, data, method: str, batch: int = 64) -> float:
    """Bytes one step must read per job: each sampled row of the per-sample arrays, once per
    minibatch the method draws (SOBA/SABA: one inner, one outer), plus SABA's table rows of
    the five directions, read and written."""
    row = lambda keys: sum(int(np.prod(data[k].shape[1:])) for k in keys) * 4
    inner, outer = row(objective.inner_samples), row(objective.outer_samples)
    draws = DRAWS[method]
    total = batch * (draws[0] * inner + draws[1] * outer)
    if method == "saba":
        d_in, d_out = data["w0"].size, data["theta0"].size
        total += 2 * 4 * (3 * d_in + d_out + d_out + d_in)  # (z, v, x) inner rows, (z, x) outer rows
    return total


def machine_limits(repeats: int) -> tuple[float, float, float]:
    """(streaming bytes/s, gather bytes/s, GEMM FLOP/s) on this machine: the sum of a 256 MB
    array, 80 x 64 rows of 100 float32 gathered from a (32768, 100) table at random starts,
    and a (512, 512) x (512, 512) matmul."""
    big = jnp.ones((64 * 1024 * 1024,), jnp.float32)
    stream = 4 * big.size / timed(jax.jit(jnp.sum).lower(big).compile(), (big,), repeats)
    table = jnp.asarray(np.random.default_rng(0).standard_normal((32768, 100)), jnp.float32)
    starts = jnp.asarray(np.random.default_rng(1).integers(0, 32768 - 64, 80), jnp.int32)
    gather = jax.jit(lambda t, s: jax.vmap(lambda i: jax.lax.dynamic_slice_in_dim(t, i, 64).sum(0))(s))
    seconds = timed(gather.lower(table, starts).compile(), (table, starts), repeats * 20)
    a = jnp.ones((512, 512), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    flops_s = 2 * 512**3 / timed(matmul.lower(a).compile(), (a,), repeats * 20)
    return stream, 80 * 64 * 100 * 4 / seconds, flops_s


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=80)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated; default: every method")
    args = p.parse_args()
    stream, bandwidth, gemm = machine_limits(args.repeats)
    print(f"this machine: streaming {stream / 1e9:.1f} GB/s, gather {bandwidth / 1e9:.1f} GB/s, "
          f"GEMM {gemm / 1e9:.1f} GFLOP/s; {args.jobs} jobs x {args.steps} steps; each figure the best of "
          f"{args.repeats} runs, the four programs of a method timed in turn")  # fmt: skip
    print("| method | options | alone µs/job-step | batched µs/job-step | batched gain | bytes/job-step | "
          "floor µs (stream / gather) | batched / floor | MFLOP/job-step | GFLOP/s batched |")  # fmt: skip
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    per = {}
    for method in args.methods.split(","):
        built = {}
        for plain in (True, False):
            for jobs in (1, args.jobs):
                built[plain, jobs] = program(method, jobs, args.steps, plain)
        best = {key: float("inf") for key in built}
        for compiled, inputs, _, _ in built.values():
            jax.block_until_ready(compiled(*inputs))  # warm
        for _ in range(args.repeats):
            for key, (compiled, inputs, _, _) in built.items():
                best[key] = min(best[key], timed(compiled, inputs, 1))
        _, _, objective, data = built[True, 1]
        nbytes = step_bytes(objective, data, method)
        floor, gather_floor = nbytes / stream * 1e6, nbytes / bandwidth * 1e6
        for plain in (True, False):
            alone = best[plain, 1] / args.steps * 1e6
            batched = best[plain, args.jobs] / args.steps / args.jobs * 1e6
            per[method, plain] = batched
            cost = built[plain, 1][0].cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            flops = float(cost.get("flops", 0.0))  # XLA counts a loop's body once: one step's FLOPs
            print(f"| {method} | {'XLA default' if plain else 'the sweep'} | {alone:.1f} | {batched:.1f} | "
                  f"{alone / batched:.1f}x | {nbytes / 1e3:.0f} KB | {floor:.1f} / {gather_floor:.1f} | "
                  f"{batched / floor:.1f}x / {batched / gather_floor:.1f}x | {flops / 1e6:.2f} | "
                  f"{flops / batched / 1e3:.1f} |")  # fmt: skip
    for plain in (True, False):
        if ("saba", plain) not in per or ("soba", plain) not in per:
            break
        print(
            f"SABA / SOBA batched ({'XLA default' if plain else 'the sweep'}): "
            f"{per['saba', plain] / per['soba', plain]:.2f}"
        )


if __name__ == "__main__":
    main()
