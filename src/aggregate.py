"""``python -m src.aggregate PATH...``: a sweep's runs as pandas tables and plots.

    python -m src.aggregate outputs/multirun/2026-11-27_12-00-00 --metric outer_loss --plot

* :func:`load_runs` -> one row per job: its overrides as columns, status, final metrics
  (row T of ``metrics.parquet``, as everywhere), timings;
* :func:`load_steps` -> the long per-step table of every job;
* :func:`summarize` -> mean, std and count of the chosen metrics per group of the swept
  keys except ``seed``, over completed jobs only; diverged and failed jobs are counted in
  their own columns, never averaged in. Best group first.

Writes ``results.csv`` (numeric mean/std/count columns), ``results.md``, ``results.tex``
and, with ``--plot``, PNG figures into the sweep directory (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

HIGHER_IS_BETTER = re.compile(r"accuracy|recall|precision")
ID_COLUMNS = ("sweep", "job", "path", "status", "diverged_step", "objective")


def _job_dirs(paths: Sequence[str | Path]) -> list[Path]:
    dirs = []
    for p in map(Path, paths):
        if (p / "summary.json").exists():
            dirs.append(p)
        else:
            dirs.extend(sorted(s.parent for s in p.rglob("summary.json")))
    return dirs


def _overrides(overrides: Sequence[str]) -> dict:
    """A job's overrides as typed values, parsed by Hydra's own override grammar."""
    from src.launcher import _parse

    out = {}
    for o in _parse(list(overrides)):
        if o.is_hydra_override() or o.is_delete():
            continue
        value = o.value()
        out[o.key_or_group] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
    return out


def load_runs(*paths: str | Path) -> pd.DataFrame:
    """One row per job found under ``paths`` (sweep directories, job directories, outputs/)."""
    rows = []
    for d in _job_dirs(paths):
        s = json.loads((d / "summary.json").read_text())
        row = {"sweep": d.parent.name, "job": d.name, "path": str(d), "status": s.get("status", "failed")}
        row["diverged_step"] = s.get("diverged_step")
        row["objective"] = s.get("objective")
        row.update(_overrides(s.get("overrides", [])))
        row.setdefault("seed", s.get("seed"))
        row.update({k: v for k, v in s.get("final", {}).items() if k != "step" and k not in row})
        row["run_s"], row["compile_s"] = s.get("run_s"), s.get("compile_s")
        rows.append(row)
    return pd.DataFrame(rows)


def load_steps(*paths: str | Path) -> pd.DataFrame:
    """The per-step metrics of every job, with the job's overrides as columns."""
    frames = []
    for d in _job_dirs(paths):
        if not (d / "metrics.parquet").exists():
            continue
        s = json.loads((d / "summary.json").read_text())
        m = pd.read_parquet(d / "metrics.parquet")
        for k, v in {
            "sweep": d.parent.name,
            "job": d.name,
            "status": s.get("status"),
            **_overrides(s.get("overrides", [])),
        }.items():
            m[k] = v if not isinstance(v, list | dict) else str(v)
        frames.append(m)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """Override columns whose value differs between jobs, except ``seed``."""
    metrics = set(runs.columns) - set(ID_COLUMNS)
    keys = []
    for col in runs.columns:
        if col in ID_COLUMNS or col in ("seed", "run_s", "compile_s") or col not in metrics:
            continue
        if col in _metric_columns(runs):
            continue
        if runs[col].astype(str).nunique() > 1:
            keys.append(col)
    return keys


def _metric_columns(runs: pd.DataFrame) -> set[str]:
    overrides = set()
    for path in runs.get("path", []):
        s = json.loads((Path(path) / "summary.json").read_text())
        overrides |= set(_overrides(s.get("overrides", [])))
        break
    finals = set()
    for path in runs.get("path", []):
        finals |= set(json.loads((Path(path) / "summary.json").read_text()).get("final", {}))
        break
    return (finals | {"run_s", "compile_s"}) - overrides


def default_metrics(runs: pd.DataFrame) -> list[str]:
    cols = set(runs.columns)
    out = ["outer_loss"]
    for acc in ("test_accuracy", "val_accuracy"):
        if acc in cols:
            out.append(acc)
            break
    out += [m for m in ("hypergrad_error", "run_s") if m in cols and runs[m].notna().any()]
    return out


def summarize(runs: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, std and count of ``metrics`` per group over completed jobs, best group first."""
    by = list(swept_keys(runs) if by is None else by)
    keyed = runs.assign(_all="all") if not by else runs
    keys = by or ["_all"]
    keyed = keyed.assign(**{k: keyed[k].astype(str) for k in keys if keyed[k].map(type).nunique() > 1})
    done = keyed[keyed["status"] == "completed"]
    table = done.groupby(keys, dropna=False, sort=False)[list(metrics)].agg(["mean", "std", "count"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    status = keyed.groupby(keys, dropna=False, sort=False)["status"]
    table = table.reindex(status.size().index)
    table["jobs"] = status.size()
    table["diverged"] = status.apply(lambda s: int((s == "diverged").sum()))
    table["failed"] = status.apply(lambda s: int(s.isin(["failed", "running"]).sum()))
    for m in metrics:
        table[f"{m}_count"] = table[f"{m}_count"].fillna(0).astype(int)
    first = metrics[0]
    table = table.sort_values(f"{first}_mean", ascending=not HIGHER_IS_BETTER.search(first), na_position="last")
    return table.reset_index().drop(columns="_all", errors="ignore")


def pretty(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``mean ± std (n)`` strings, for the terminal, markdown and LaTeX."""
    keys = [
        c for c in table.columns if not re.search(r"_(mean|std|count)$", c) and c not in ("jobs", "diverged", "failed")
    ]
    out = table[keys].copy()
    for m in metrics:
        mean, std, n = table[f"{m}_mean"], table[f"{m}_std"], table[f"{m}_count"]
        out[m] = [
            "—" if c == 0 else f"{a:.4g} ± {b:.2g} ({c})" if c > 1 else f"{a:.4g} (1)"
            for a, b, c in zip(mean, std.fillna(0), n, strict=True)
        ]
    out["diverged"], out["failed"] = table["diverged"], table["failed"]
    return out


def write_tables(table: pd.DataFrame, metrics: Sequence[str], out: Path) -> None:
    from src.tracking import atomic_write_text

    atomic_write_text(out / "results.csv", table.to_csv(index=False))
    shown = pretty(table, metrics)
    atomic_write_text(out / "results.md", shown.to_markdown(index=False) + "\n")
    latex = shown.style.hide(axis="index").to_latex(hrules=True).replace("±", r"$\pm$")
    atomic_write_text(out / "results.tex", latex)


def _log_spaced(values: np.ndarray) -> bool:
    v = np.sort(np.unique(values))
    if len(v) < 3 or (v <= 0).any():
        return len(v) >= 2 and (v > 0).all() and v[-1] / v[0] >= 100
    ratios = v[1:] / v[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=0.05) and ratios[0] > 1.5) or v[-1] / v[0] >= 100


def plot(runs: pd.DataFrame, steps: pd.DataFrame, metrics: Sequence[str], by: Sequence[str], out: Path) -> list[Path]:
    """A metric against outer step (a line per group, a band over seeds), and against each
    swept numeric parameter (log axis where its values are log-spaced)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    completed = steps[steps["status"] == "completed"] if "status" in steps else steps
    for metric in metrics:
        if metric not in completed.columns:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        groups = completed.groupby([completed[k].astype(str) for k in by], sort=True) if by else [("all", completed)]
        for name, g in groups:
            stats = g.groupby("step")[metric].agg(["mean", "std"])
            label = ", ".join(
                f"{k}={v}" for k, v in zip(by, name if isinstance(name, tuple) else (name,), strict=False)
            )
            ax.plot(stats.index, stats["mean"], label=label or "all")
            ax.fill_between(
                stats.index, stats["mean"] - stats["std"].fillna(0), stats["mean"] + stats["std"].fillna(0), alpha=0.2
            )
        ax.set_xlabel("outer step")
        ax.set_ylabel(metric)
        if (completed[metric] > 0).all() and metric != "run_s":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(f"{metric} (mean ± std over seeds)")
        fig.tight_layout()
        path = out / f"plot_{metric}_steps.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    done = runs[runs["status"] == "completed"]
    for key in by:
        values = pd.to_numeric(done[key], errors="coerce")
        if values.isna().any() or values.nunique() < 2:
            continue
        rest = [k for k in by if k != key]
        for metric in metrics:
            if metric not in done.columns:
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            groups = done.groupby([done[k].astype(str) for k in rest]) if rest else [("", done)]
            for name, g in groups:
                stats = g.groupby(pd.to_numeric(g[key]))[metric].agg(["mean", "std"]).sort_index()
                label = (
                    ", ".join(
                        f"{k}={v}" for k, v in zip(rest, name if isinstance(name, tuple) else (name,), strict=False)
                    )
                    or metric
                )
                ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=label)
            if _log_spaced(values.to_numpy()):
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(f"final {metric}")
            ax.legend(fontsize=7)
            fig.tight_layout()
            path = out / f"plot_{metric}_vs_{key.replace('/', '_')}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m src.aggregate", description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="sweep directories, job directories or outputs/")
    p.add_argument("--metric", action="append", help="metric to report (several allowed); default: sensible set")
    p.add_argument("--by", nargs="*", help="keys to group by; default: the swept keys except seed")
    p.add_argument("--plot", action="store_true", help="write PNG figures")
    p.add_argument("--out", help="where to write results.* and plots; default: the (first) path")
    args = p.parse_args(argv)
    runs = load_runs(*args.paths)
    if runs.empty:
        print(f"No runs (no summary.json) under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    metrics = args.metric or default_metrics(runs)
    unknown = [m for m in metrics if m not in runs.columns]
    if unknown:
        allowed = sorted(set(runs.columns) - set(ID_COLUMNS) - set(swept_keys(runs)) - {"seed"})
        print(f"Error: unknown --metric {', '.join(unknown)}; available: {', '.join(allowed)}", file=sys.stderr)
        return 2
    by = swept_keys(runs) if args.by is None else args.by
    table = summarize(runs, metrics, by)
    out = Path(args.out or args.paths[0])
    out.mkdir(parents=True, exist_ok=True)
    write_tables(table, metrics, out)
    print(pretty(table, metrics).to_markdown(index=False))
    counts = runs["status"].value_counts().to_dict()
    print(
        f"\n{len(runs)} jobs: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"  -> {out}/results.{{csv,md,tex}}"
    )
    if args.plot:
        for path in plot(runs, load_steps(*args.paths), metrics, by, out):
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
