"""The cost of one outer step of each single-loop method, alone and batched as a sweep
batches it, against this machine's limits.

Per method on ``quadratic_sum`` (benchmark_bilevel's quadratic: 32,768 inner and 1,024 outer
samples, dims 100/10, minibatches of 64), µs per job and outer step of:

* **alone**: one job's program (``jax.jit`` of the unbatched run, compiled once and reused:
  what a user would otherwise run job after job);
* **80 seeds**: 80 jobs of 80 different seeds in one program, laid out as the sweep lays
  them out (``src.sweep.batching.Layout.shared``, grid (1, 80, 1)): every job draws its own
  minibatches;
* **grid**: the benchmark's grid, 8 settings (``step_size`` in {0.01, 0.1} x ``outer_ratio``
  in {0.1, 1, 10, 100}) x 10 seeds, grid (1, 10, 8): the 8 jobs of a seed draw the same
  minibatches, gathered once and multiplied with the 8 jobs' iterates at once.

Each program runs ``--steps`` steps without evaluation rows, from a carry made by the
sweep's ``init`` program, through the sweep's ``advance`` program (the carry's shared
fields unbatched, as between a sweep's chunks), compiled with the sweep's options. The
roofline: the bytes a step must read per job (the sampled rows of the per-sample arrays,
once per seed, so divided by the jobs of a seed; plus SABA's table rows, read and written),
against this machine's streaming bandwidth measured in the same process; FLOPs from
``compiled.cost_analysis()`` of the one-job program (XLA counts a loop body once, so the
inner-loop methods' 10-step loops are undercounted) against its GEMM rate. The programs of
a method are timed in turn, best of ``--repeats``: these shared machines are noisy.

Then the evaluation rows (``eval_every``: the losses, ||grad h||^2 and the gaps, full
batch): µs per evaluated row and job, with the losses from the quadratic's stored means
(``Objective.full_losses``) and from a pass over its samples (before), and what they add
per step at the study's ``eval_every``. And SABA compiled with XLA's default options, whose
copy insertion copies the SAGA tables every step (``src.sweep.programs.CPU_OPTIONS``).

    python benchmarks/stochastic_step.py [--steps 200] [--repeats 3] [--methods soba,saba]
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
STEP_SIZES, RATIOS = (0.01, 0.1), (0.1, 1.0, 10.0, 100.0)
LAYOUTS = {"80 seeds": (80, 1), "grid": (10, 8)}  # (seeds, jobs per seed)
EVAL_EVERY = 80  # the study's eval_every on the quadratic for SOBA and SABA (sweeps/benchmark.yaml)


def compose(*overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=list(overrides))


def setup(method: str):
    from src.config import objective_of, validate
    from src.sweep.plan import job_data

    run = validate(compose("objective=quadratic_sum", f"method={method}", "batch_size=64"))
    objective, data = objective_of(run.static), job_data(run)
    return run, objective, {k: jnp.asarray(v, jnp.float32) for k, v in data.items()}


def jobs_on(method: str, seeds: int, per_seed: int) -> list:
    """The jobs of a (1, seeds, per_seed) grid: the benchmark's settings in turn, seeds 0, 1, ..."""
    from src.config import validate
    from src.sweep.plan import Job

    settings = [(s, r) for s in STEP_SIZES for r in RATIOS]
    runs = [validate(compose("objective=quadratic_sum", f"method={method}", "batch_size=64",
                             f"method.step_size={settings[k % 8][0]}", f"method.outer_ratio={settings[k % 8][1]}"))
            for k in range(per_seed)]  # fmt: skip
    with_seed = lambda r, seed: r._replace(tree={**r.tree, "seed": seed}, dynamic={**r.dynamic, "seed": seed})
    return [Job(with_seed(r, seed), Path("/nonexistent")) for seed in range(seeds) for r in runs]


def batched(method: str, seeds: int, per_seed: int, steps: int, evaluate: bool = False, options=True, objective=None):
    """``(compiled advance, its arguments)``: the sweep's program of ``steps`` steps for a
    (1, seeds, per_seed) grid, its inputs stacked by the sweep's own functions, from the
    carry of its ``init`` program; ``evaluate``: an evaluation row at every step, else none."""
    from src.config import build_method
    from src.core.loop import make_stepper
    from src.sweep.batching import Layout, _on_dynamic, _shared_layout, stack_shared
    from src.sweep.plan import batch_shape
    from src.sweep.programs import compiler_options

    run, objective_, _ = setup(method)
    stepper = _on_dynamic(make_stepper(objective or objective_, steps + 1, None, 1 if evaluate else steps + 1))
    jobs = jobs_on(method, seeds, per_seed)
    dynamic, keys = stack_shared(jobs, _shared_layout(jobs, batch_shape(jobs))[0], jnp.float32)
    layout = Layout.shared(build_method(run.tree))
    opts = compiler_options(jax.default_backend()) if options else None
    init = jax.jit(layout.vmap(stepper.init, ("dynamic", "key"), "carry")).lower(dynamic, keys).compile(opts)
    carry = init(dynamic, keys)
    advance = layout.vmap(lambda c, d: stepper.advance(c, d, steps, 0 if evaluate else 1), ("carry", "dynamic"),
                          ("carry", "rows"))  # fmt: skip
    return jax.jit(advance).lower(carry, dynamic).compile(opts), (carry, dynamic)


def alone(method: str, steps: int):
    """One job's program, unbatched: ``(compiled, arguments, flops of one step)``."""
    from src.config import build_method
    from src.core.loop import make_stepper
    from src.sweep.programs import compiler_options

    run, objective, data = setup(method)
    stepper = make_stepper(objective, steps + 1, None, steps + 1)
    m = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), build_method(run.tree))
    key = jax.random.key(0)
    opts = compiler_options(jax.default_backend())
    carry = jax.jit(stepper.init).lower(m, data, key).compile(opts)(m, data, key)
    fn = jax.jit(lambda c, m: stepper.advance(c, m, data, steps, 1))
    compiled = fn.lower(carry, m).compile(opts)
    one = jax.make_jaxpr(lambda c, m: stepper.advance(c, m, data, 1, 1))(carry, m)
    return compiled, (carry, m), dot_flops(one.jaxpr)


def dot_flops(jaxpr) -> float:
    """The FLOPs of a jaxpr's matrix products (``2 M N K`` each), a scan's body times its
    length, a while loop's once (the samplers' few-round cycle walk), a branch's cheapest
    side (SRBA's and VRBO's full passes come once a period): XLA's ``cost_analysis`` counts
    every loop body once, which undercounts the inner-loop methods ten times."""
    total = 0.0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), (batch, _) = eqn.params["dimension_numbers"]
            a = eqn.invars[0].aval.shape
            out = eqn.outvars[0].aval.shape
            total += 2.0 * np.prod(out) * np.prod([a[d] for d in contract])
        elif eqn.primitive.name == "scan":
            total += eqn.params["length"] * dot_flops(eqn.params["jaxpr"].jaxpr)
        elif eqn.primitive.name == "cond":
            total += min(dot_flops(b.jaxpr) for b in eqn.params["branches"])
        else:
            for name in ("jaxpr", "call_jaxpr", "fun_jaxpr", "body_jaxpr"):
                sub = eqn.params.get(name)
                if sub is not None:
                    total += dot_flops(getattr(sub, "jaxpr", sub))
    return total


def timed(compiled, args, repeats: int) -> float:
    jax.block_until_ready(compiled(*args))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - t)
    return best


def step_bytes(data, objective, method: str, per_seed: int, batch: int = 64) -> float:
    """Bytes one step must read per job: each sampled row of the per-sample arrays, once per
    minibatch the method draws, shared by the ``per_seed`` jobs of a seed; plus SABA's
    table rows of the five directions, read and written."""
    row = lambda keys: sum(int(np.prod(data[k].shape[1:])) for k in keys) * 4
    draws = DRAWS[method]
    total = batch * (draws[0] * row(objective.inner_samples) + draws[1] * row(objective.outer_samples)) / per_seed
    if method == "saba":
        d_in, d_out = data["w0"].size, data["theta0"].size
        total += 2 * 4 * (3 * d_in + d_out + d_out + d_in)  # (z, v, x) inner rows, (z, x) outer rows
    return total


def machine_limits(repeats: int) -> tuple[float, float]:
    """(streaming bytes/s, GEMM FLOP/s) on this machine: the sum of a 256 MB array and a
    (512, 512) x (512, 512) matmul."""
    big = jnp.ones((64 * 1024 * 1024,), jnp.float32)
    stream = 4 * big.size / timed(jax.jit(jnp.sum).lower(big).compile(), (big,), repeats)
    a = jnp.ones((512, 512), jnp.float32)
    flops_s = 2 * 512**3 / timed(jax.jit(lambda x: x @ x).lower(a).compile(), (a,), repeats * 20)
    return stream, flops_s


def measure(method: str, steps: int, repeats: int) -> dict:
    """µs per job-step alone and in each layout, the bytes per job-step and one step's FLOPs."""
    one, one_args, flops = alone(method, steps)
    programs = {"alone": (one, one_args, 1)}
    for name, (seeds, per_seed) in LAYOUTS.items():
        programs[name] = (*batched(method, seeds, per_seed, steps), seeds * per_seed)
    best = {name: float("inf") for name in programs}
    for _ in range(repeats):
        for name, (compiled, args, _) in programs.items():
            best[name] = min(best[name], timed(compiled, args, 1))
    _, objective, data = setup(method)
    out = {name: best[name] / steps / jobs * 1e6 for name, (_, _, jobs) in programs.items()}
    out["bytes"] = {name: step_bytes(data, objective, method, LAYOUTS[name][1]) for name in LAYOUTS}
    out["flops"] = flops
    return out


def evaluation_cost(steps: int, repeats: int) -> dict:
    """µs per evaluated row and job (80 seeds of SOBA), losses from the stored means and from
    a pass over the samples."""
    _, objective, _ = setup("soba")
    variants = {"means": objective, "pass": objective._replace(full_losses=None)}
    plain = batched("soba", 80, 1, steps)
    programs = {name: batched("soba", 80, 1, steps, evaluate=True, objective=o) for name, o in variants.items()}
    best = {name: float("inf") for name in ("plain", *programs)}
    for _ in range(repeats):
        best["plain"] = min(best["plain"], timed(*plain, 1))
        for name, program in programs.items():
            best[name] = min(best[name], timed(*program, 1))
    return {name: (best[name] - best["plain"]) / steps / 80 * 1e6 for name in programs} | {
        "step": best["plain"] / steps / 80 * 1e6
    }


def saba_default_options(steps: int, repeats: int) -> tuple[float, float]:
    """SABA on 80 seeds compiled with XLA's defaults against the sweep's options (µs/job-step)."""
    plain, sweep = batched("saba", 80, 1, steps, options=False), batched("saba", 80, 1, steps)
    best = [float("inf")] * 2
    for _ in range(repeats):
        for i, program in enumerate((plain, sweep)):
            best[i] = min(best[i], timed(*program, 1))
    return best[0] / steps / 80 * 1e6, best[1] / steps / 80 * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated; default: every method")
    p.add_argument("--no-extras", action="store_true", help="skip the evaluation rows and SABA's XLA defaults")
    args = p.parse_args()
    table(args.methods.split(","), args.steps, args.repeats)
    if args.no_extras:
        return
    extras(args.steps, args.repeats)


def table(methods, steps: int, repeats: int) -> dict:
    """Print the per-method table; returns the measurements."""
    stream, gemm = machine_limits(repeats)
    print(f"this machine: streaming {stream / 1e9:.1f} GB/s, GEMM {gemm / 1e9:.1f} GFLOP/s; {steps} steps; "
          f"each figure the best of {repeats} runs, a method's programs timed in turn")  # fmt: skip
    print("| method | alone µs/job-step | 80 seeds µs/job-step | gain | grid 10x8 µs/job-step | gain | "
          "bytes/job-step (80 seeds / grid) | streaming floor µs (80 seeds / grid) | measured / floor | "
          "MFLOP/job-step | GFLOP/s grid (of GEMM) |")  # fmt: skip
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    per = {}
    for method in methods:
        m = per[method] = measure(method, steps, repeats)
        floor = {name: m["bytes"][name] / stream * 1e6 for name in LAYOUTS}
        rate = m["flops"] / m["grid"] * 1e6
        print(f"| {method} | {m['alone']:.1f} | {m['80 seeds']:.1f} | {m['alone'] / m['80 seeds']:.1f}x | "
              f"{m['grid']:.1f} | {m['alone'] / m['grid']:.1f}x | {m['bytes']['80 seeds'] / 1e3:.0f} / "
              f"{m['bytes']['grid'] / 1e3:.0f} KB | {floor['80 seeds']:.1f} / {floor['grid']:.1f} | "
              f"{m['80 seeds'] / floor['80 seeds']:.1f}x / {m['grid'] / floor['grid']:.1f}x | {m['flops'] / 1e6:.2f} | "
              f"{rate / 1e9:.0f} ({rate / gemm:.0%}) |", flush=True)  # fmt: skip
    if "soba" in per and "saba" in per:
        for name in LAYOUTS:
            print(f"SABA / SOBA ({name}): {per['saba'][name] / per['soba'][name]:.2f}")
    return per


def extras(steps: int, repeats: int) -> None:
    """Print the evaluation rows' cost and SABA under XLA's default options."""
    e = evaluation_cost(steps // 2, repeats)
    share, before = e["means"] / EVAL_EVERY, e["pass"] / EVAL_EVERY
    print(f"evaluation row, per job (SOBA, 80 seeds): {e['means']:.1f} µs with the losses from the stored means, "
          f"{e['pass']:.1f} µs with a pass over the samples; at eval_every={EVAL_EVERY}: +{share:.2f} "
          f"µs (+{before:.2f} before) on a {e['step']:.1f} µs step")  # fmt: skip
    default, sweep = saba_default_options(steps, repeats)
    print(f"SABA, 80 seeds: {default:.1f} µs/job-step with XLA's default options, {sweep:.1f} with the sweep's")


if __name__ == "__main__":
    main()
