"""``python -m src.aggregate PATH...``: a sweep's runs as pandas tables and figures.

    python -m src.aggregate outputs/multirun/2026-11-27_12-00-00 --metric outer_loss --plot

Writes ``results.csv`` (numeric mean/std/count columns), ``results.md``, ``results.tex``
and, with ``--plot``, PNG figures into the sweep directory (or ``--out``, or ``--figures``).
The tables come from :mod:`src.report.tables`, the figures from :mod:`src.report.plots`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from src.report.plots import X_AXES, objective_figures, plot
from src.report.tables import (
    STATS,
    best_per,
    default_metrics,
    load_runs,
    load_steps,
    pretty,
    select,
    summarize,
    swept_keys,
    without_results,
    write_tables,
)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.aggregate", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="sweep directories, job directories or outputs/")
    p.add_argument("--metric", action="append", help="metric to report (several allowed); default: sensible set")
    p.add_argument("--by", nargs="*", help="keys to group by; default: the swept keys except seed")
    p.add_argument("--plot", action="store_true", help="write PNG figures")
    p.add_argument("--out", help="where to write results.* and plots; default: the (first) path")
    p.add_argument(
        "--figures",
        metavar="DIR",
        help="write the figures into DIR instead, named <sweep>_<metric>_<x>.png after the first path "
        "(how the README's figures in docs/ are made)",
    )
    p.add_argument("--stat", choices=STATS, default="mean", help="mean ± std, or median [20 %%, 80 %%]")
    p.add_argument("--x", choices=tuple(X_AXES), default="step", help="the curves' x axis (default: step)")
    p.add_argument(
        "--best",
        metavar="KEY",
        help="also the best setting per value of KEY (e.g. method), by --stat; --plot then draws those only",
    )
    args = p.parse_args(argv)
    runs = load_runs(*args.paths)
    if runs.empty:
        print(f"No runs (no job directories) under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    warning = without_results(runs)
    if warning:
        print(warning, file=sys.stderr)
    metrics = args.metric or default_metrics(runs)
    unknown = [m for m in metrics if m not in runs.attrs["metrics"]]
    if unknown:
        allowed = ", ".join(sorted(runs.attrs["metrics"]))
        print(f"Error: unknown --metric {', '.join(unknown)}; available: {allowed}", file=sys.stderr)
        return 2
    by = swept_keys(runs) if args.by is None else args.by
    unknown = [k for k in by if k not in runs.attrs["config"]]
    if unknown:
        allowed = ", ".join(runs.attrs["config"])
        print(f"Error: unknown --by {', '.join(unknown)}; the config's keys: {allowed}", file=sys.stderr)
        return 2
    if args.best and args.best not in by:
        print(f"Error: --best {args.best} is not a grouping key; the keys: {', '.join(by)}", file=sys.stderr)
        return 2
    table = summarize(runs, metrics, by, args.stat)
    out = Path(args.out or args.paths[0])
    out.mkdir(parents=True, exist_ok=True)
    write_tables(table, metrics, out)
    print(pretty(table, metrics).to_markdown(index=False))
    best = None
    if args.best:
        best = best_per(table, args.best, metrics[0], metrics[0] in runs.attrs.get("maximize", ()))
        write_tables(best, metrics, out, "best")
        print(f"\nBest setting per {args.best} (by {args.stat} {metrics[0]}):")
        print(pretty(best, metrics).to_markdown(index=False))
    counts = runs["status"].value_counts().to_dict()
    print(
        f"\n{len(runs)} jobs: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"  -> {out}/results.{{csv,md,tex}}"
    )
    if args.plot:
        steps = load_steps(*args.paths, keys=by)
        if best is not None:  # the curves of each method's best setting, as the benchmark draws them
            runs, steps = select(runs, best, by), select(steps, best, by)
        figures, prefix = out, "plot_"
        if args.figures:
            figures, prefix = Path(args.figures), f"{Path(args.paths[0]).resolve().name}_"
            figures.mkdir(parents=True, exist_ok=True)
        drawn = [*plot(runs, steps, metrics, by, figures, args.x, prefix),
                 *objective_figures(runs, figures, prefix if args.figures else "")]  # fmt: skip
        for path in drawn:
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
