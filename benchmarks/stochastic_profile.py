"""Where a batched stochastic step spends its time: a ``jax.profiler`` trace of the sweep's
``advance`` program, read back with ``jax.profiler.ProfileData``, the host's XLA ops summed
by kind (the minibatch gathers, the matrix products, the other fusions, copies, the
loops' and branches' own bookkeeping).

    python benchmarks/stochastic_profile.py [--method soba] [--layout grid|80-seeds|alone] [--steps 200]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import stochastic_step  # noqa: E402

KINDS = (  # (kind, pattern of the op's name), first match wins
    ("gather of minibatch rows", r"gather"),
    ("matrix products (XNNPACK/YNNPACK fusions, dots)", r"^ynn|^xnn|^dot|^custom-call|matmul|gemm"),
    ("copies", r"^copy"),
    ("table updates (dynamic-update-slice)", r"dynamic-update-slice|dynamic_update_slice|scatter"),
    ("loops and branches", r"^while|^conditional|^cond|^call|^tuple|get-tuple"),
    ("other fusions (elementwise, reductions, sampler)", r"fusion|^wrapped"),
)


def kind(name: str) -> str:
    for label, pattern in KINDS:
        if re.search(pattern, name):
            return label
    return "other"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", default="soba")
    p.add_argument("--layout", default="grid", choices=["grid", "80-seeds", "alone"])
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args()
    if args.layout == "alone":
        compiled, inputs, _ = stochastic_step.alone(args.method, args.steps)
        jobs = 1
    else:
        seeds, per_seed = stochastic_step.LAYOUTS["grid" if args.layout == "grid" else "80 seeds"]
        compiled, inputs = stochastic_step.batched(args.method, seeds, per_seed, args.steps)
        jobs = seeds * per_seed
    jax.block_until_ready(compiled(*inputs))  # warm
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            jax.block_until_ready(compiled(*inputs))
        (path,) = Path(folder).rglob("*.xplane.pb")
        profile = jax.profiler.ProfileData.from_file(str(path))
    per_kind: dict[str, float] = collections.defaultdict(float)
    per_op: dict[str, float] = collections.defaultdict(float)
    for plane in profile.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        for line in plane.lines:
            for event in line.events:
                name = event.name
                if name.startswith(("jit_", "PjRt", "Execute", "ThunkExecutor", "Threadpool", "$")) or " " in name:
                    continue
                per_kind[kind(name)] += event.duration_ns
                per_op[name] += event.duration_ns
    total = sum(per_kind.values())
    if not total:
        print("no XLA op events in the trace (this JAX's CPU profiler records none)")
        return
    scale = 1e-3 / args.steps / jobs  # ns -> µs per job-step
    print(f"{args.method}, {args.layout}: {total * scale:.2f} µs per job-step in XLA ops "
          f"(summed over threads), by kind:")  # fmt: skip
    for label, ns in sorted(per_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {label:50} {ns * scale:7.2f} µs  {ns / total:6.1%}")
    print("  the ten costliest ops:")
    for name, ns in sorted(per_op.items(), key=lambda kv: -kv[1])[:10]:
        print(f"    {name:48} {ns * scale:7.2f} µs  {ns / total:6.1%}")


if __name__ == "__main__":
    main()
