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

import pandas as pd

from src.report.plots import X_AXES, objective_figures, plot
from src.report.tables import (
    PROBLEM,
    STATS,
    as_text,
    best_per,
    curve_scores,
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
        help="also the best setting per value of KEY (e.g. method), by --stat; --plot then draws those only "
        "(per problem where the runs span several objectives, each by the first --metric it reports)",
    )
    p.add_argument(
        "--best-by",
        choices=("final", "curve"),
        default="final",
        help="rank settings by the final value (default) or by the best point of the --stat curve over seeds "
        "(benchmark_bilevel's plot script: the lowest median over the first evaluations)",
    )
    p.add_argument(
        "--best-evals",
        type=int,
        metavar="K",
        help="with --best-by curve: only the first K evaluations of each curve (the benchmark: 100); default all",
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
    allowed = ", ".join(sorted(runs.attrs["metrics"]))
    if unknown and len(unknown) == len(metrics):
        print(f"Error: unknown --metric {', '.join(unknown)}; available: {allowed}", file=sys.stderr)
        return 2
    if unknown:  # a problem's metric where the runs hold other problems only: said, then left out
        print(f"Warning: no run reports --metric {', '.join(unknown)} (left out); available: {allowed}",
              file=sys.stderr)  # fmt: skip
        metrics = [m for m in metrics if m not in unknown]
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
    steps = None
    if args.best:
        if args.best_by == "curve" or args.plot:
            steps = load_steps(*args.paths, keys=by)
        best = best_settings(runs, table, steps, metrics, by, args)
        write_tables(best, metrics, out, "best")
        rule = (
            "final value"
            if args.best_by == "final"
            else "best point of the curve"
            + (f" over the first {args.best_evals} evaluations" if args.best_evals else "")
        )
        print(f"\nBest setting per {args.best} (by {args.stat} {', '.join(best.attrs['ranked_by'])}; {rule}):")
        print(pretty(best, metrics).to_markdown(index=False))  # with --best-by curve: its best_point
        missing = sorted(set(as_text(table[args.best])) - set(as_text(best[args.best])))
        if missing:
            print(f"  no setting of {', '.join(missing)} completed all its jobs: left out", file=sys.stderr)
    counts = runs["status"].value_counts().to_dict()
    print(
        f"\n{len(runs)} jobs: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"  -> {out}/results.{{csv,md,tex}}"
    )
    if args.plot:
        steps = load_steps(*args.paths, keys=by) if steps is None else steps
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


def problem_key(runs: pd.DataFrame, by: Sequence[str]) -> str | None:
    """``objective`` where the runs span several problems (a panel and a best setting each)."""
    return PROBLEM if PROBLEM in by and as_text(runs[PROBLEM]).nunique() > 1 else None


def best_settings(runs, table, steps, metrics, by, args) -> pd.DataFrame:
    """The best setting per value of ``--best``, per problem where there are several, each
    ranked by the first of ``metrics`` that its runs report."""
    problem = problem_key(runs, by)
    parts, ranked_by = [], []
    for _, sub in table.groupby(as_text(table[problem]), sort=False) if problem else [(None, table)]:
        metric = next((m for m in metrics if sub[f"{m}_count"].sum() > 0), metrics[0])
        higher = metric in runs.attrs.get("maximize", ())
        score = None
        if args.best_by == "curve":
            score = curve_scores(steps, sub, by, metric, args.stat, higher, args.best_evals)
        # the full-batch references (no method node) are told apart by their hypergradient
        keys = [args.best, *(["hypergrad"] if args.best == "method" and "hypergrad" in by else [])]
        chosen = best_per(sub, keys, metric, higher, score)
        if score is not None:  # what ranked them, shown beside the final values
            chosen = chosen.assign(best_point=score.loc[chosen.index])
        parts.append(chosen)
        ranked_by.append(metric)
    best = pd.concat(parts) if len(parts) > 1 else parts[0]
    best.attrs.update(table.attrs, ranked_by=list(dict.fromkeys(ranked_by)))
    return best


if __name__ == "__main__":
    sys.exit(main())
