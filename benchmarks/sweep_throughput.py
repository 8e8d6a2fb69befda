"""Sweep throughput: the batched launcher vs Hydra's basic launcher on logreg.

Each sweep is a whole ``python -m src.train -m ...`` process (learning rates x 8 seeds,
100 outer steps, gd with 100 fixed inner steps of 0.2), run after one warm-up run of the
same command so that both launchers find JAX's persistent compilation cache warm. Prints
wall times, ratios, each launcher's marginal cost per job (slope of wall time against job
count), and for the batched launcher the per-job share of the bare vmapped computation
as timed inside the sweep process (``phases_s.run_s`` of its ``sweep_summary.json``) and
the overhead per job: the slope of (wall time - computation) against job count.

    python benchmarks/sweep_throughput.py [--part all|launchers|wandb|overrides] [--sizes 8 64 512]
        [--basic-sizes 8 64] [--wandb-sizes 64 256] [--extra ARGS]

The wandb part runs each size with wandb disabled and offline, one after the other, and
prints wandb's added wall time per job and its slope against the job count. The overrides
part runs the 64-job sweep with ``wandb.mode=disabled`` written as ``key=``, ``++key=``
and with ``+``/``~`` overrides too, side by side: every syntax should keep one full
composition per template (``full_compositions`` of ``sweep_summary.json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SEEDS = 8


def sweep_args(n_jobs: int, wandb: str = "disabled", mode_override: str = "wandb.mode") -> list[str]:
    lrs = np.geomspace(1e-3, 0.3, n_jobs // SEEDS)
    return [
        "objective=logreg",
        "inner_solver=gd",  # 100 fixed steps of 0.2, as when the README's figures were measured
        "inner_solver.lr=0.2",
        "inner_solver.tol=null",
        f"{mode_override}={wandb}",
        "lr=" + ",".join(f"{x:.6g}" for x in lrs),
        "seed=" + ",".join(str(s) for s in range(SEEDS)),
    ]


def wall(
    n_jobs: int, launcher: str, tmp: Path, extra: list[str], wandb: str = "disabled", summary: dict | None = None
) -> tuple[float, float]:
    """(wall seconds, seconds of computation inside the process) of the timed run; the
    timed run's ``sweep_summary.json`` goes into ``summary`` when one is given."""
    args = sweep_args(n_jobs, wandb)
    cmd = [sys.executable, "-m", "src.train", "-m", *args, f"hydra/launcher={launcher}", *extra]
    for attempt in ("warmup", "timed"):
        out = tmp / f"{launcher}-{n_jobs}-{attempt}-{wandb}"
        t = time.perf_counter()
        subprocess.run([*cmd, f"hydra.sweep.dir={out}"], cwd=ROOT, check=True, capture_output=True)
        elapsed = time.perf_counter() - t
    if launcher == "basic":
        return elapsed, float("nan")
    written = json.loads((out / "sweep_summary.json").read_text())
    if summary is not None:
        summary.update(written)
    return elapsed, written["phases_s"]["run_s"]


def slope(sizes, times) -> float:
    return float(np.polyfit(sizes, times, 1)[0])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 512])
    p.add_argument("--basic-sizes", type=int, nargs="+", default=[8, 64])
    p.add_argument("--wandb-sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--part", choices=["all", "launchers", "wandb", "overrides"], default="all")
    p.add_argument("--extra", nargs="*", default=[], help="more overrides for every sweep")
    args = p.parse_args()
    print(f"logreg, lr x {SEEDS} seeds, 100 outer steps; whole processes after one warm-up each")
    if args.part in ("all", "launchers"):
        launchers(args)
    if args.part in ("all", "wandb"):
        wandb_cost(args)
    if args.part in ("all", "overrides"):
        override_syntaxes(args)


def override_syntaxes(args, n: int = 64) -> None:
    """The same 64-job sweep with its constant keys given in each override syntax."""
    cases = {
        "wandb.mode=disabled": [],
        "++wandb.mode=disabled": ["++wandb.mode=disabled"],
        "++wandb.mode, +inner_solver.momentum, ~wandb.tags": [
            "++wandb.mode=disabled",
            "+inner_solver.momentum=0.0",
            "~wandb.tags",
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(cases.items()):
            summary: dict = {}
            seconds = wall(n, "batched", Path(tmp) / f"case{i}", [*args.extra, *extra], summary=summary)[0]
            print(
                f"{n} jobs, {name}: {seconds:.2f} s  full_compositions {summary['full_compositions']}  "
                f"compose {summary['compose_s']:.2f} s"
            )


def launchers(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        measured = {n: wall(n, "batched", Path(tmp), args.extra) for n in args.sizes}
        basic = {n: wall(n, "basic", Path(tmp), args.extra)[0] for n in args.basic_sizes}
    batched = {n: w for n, (w, _) in measured.items()}
    m_batched = slope(list(batched), list(batched.values()))
    m_basic = slope(list(basic), list(basic.values()))
    m_overhead = slope(list(measured), [w - c for w, c in measured.values()])
    print(f"{'jobs':>6} | {'batched (s)':>11} | {'basic (s)':>10} | {'basic/batched':>13}")
    for n in args.sizes:
        b = basic.get(n)
        extrapolated = b is None
        if extrapolated:
            b = basic[max(basic)] + m_basic * (n - max(basic))
        mark = "*" if extrapolated else " "
        print(f"{n:6d} | {batched[n]:11.2f} | {b:9.2f}{mark} | {b / batched[n]:12.1f}x")
    print("(* extrapolated from the basic launcher's marginal cost)" if set(args.sizes) - set(basic) else "")
    print(
        f"marginal cost per job: batched {m_batched * 1e3:.1f} ms | basic {m_basic * 1e3:.1f} ms "
        f"| ratio {m_basic / m_batched:.1f}x"
    )
    shares = "  ".join(f"{c / n * 1e3:.1f} ms (batch {n})" for n, (_, c) in measured.items())
    print(f"bare vmapped computation per job, timed inside the sweep: {shares}")
    print(f"batched launcher overhead per job (slope of wall - computation): {m_overhead * 1e3:.1f} ms")


def wandb_cost(args) -> None:
    """wandb's added wall time per job: the same batched sweep with wandb offline and
    disabled, side by side; and the basic launcher with wandb offline at the smallest size."""
    added, logged = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.wandb_sizes:
            off = wall(n, "batched", Path(tmp), args.extra)[0]
            logged[n] = wall(n, "batched", Path(tmp), args.extra, wandb="offline")[0]
            added[n] = logged[n] - off
            print(
                f"wandb offline, {n} jobs, batched: {logged[n]:.2f} s vs {off:.2f} s disabled "
                f"(+{added[n] / n * 1e3:.0f} ms per job)"
            )
        n = min(args.wandb_sizes)
        logged_basic = wall(n, "basic", Path(tmp), args.extra, wandb="offline")[0]
    if len(added) > 1:
        marginal = slope(list(added), list(added.values()))
        print(f"wandb's marginal cost per job (slope of the added time): {marginal * 1e3:.0f} ms")
    print(
        f"wandb offline on both, {n} jobs: basic {logged_basic:.2f} s | batched {logged[n]:.2f} s "
        f"| basic/batched {logged_basic / logged[n]:.1f}x"
    )


if __name__ == "__main__":
    main()
