"""A sweep's runs as pandas tables: what each job stored, grouped and summarized.

* :func:`load_runs` -> one row per job, read from what it stored (``pd.json_normalize``
  of its summary): its resolved config as columns (dotted keys), status, final metrics
  (row T of ``metrics.parquet``, as everywhere), timings;
* :func:`load_steps` -> the long per-step table of every job;
* :func:`summarize` -> mean, std and count of the chosen metrics per group of the swept
  config keys except ``seed``, over completed jobs only; diverged and failed jobs are
  counted in their own columns, never averaged in. Best group first (higher first for
  the metrics the objective declares in ``maximize``);
* :func:`write_tables`: ``results.csv`` (numeric mean/std/count columns), ``.md``, ``.tex``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.config import CHOSEN_GROUPS

ID_COLUMNS = ("sweep", "job", "path", "status", "diverged_step", "batch")


def _job_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Job directories under ``paths``: those Hydra set up (``.hydra/``) or that hold a
    summary, whether or not they hold results."""
    dirs: dict[Path, Path] = {}  # resolved -> as given: a job found under two given paths counts once
    for p in map(Path, paths):
        if (p / "summary.json").exists() or (p / ".hydra").is_dir():
            found = [p]
        else:
            found = {s.parent for s in p.rglob("summary.json")} | {h.parent for h in p.rglob(".hydra")}
            found = sorted(found, key=lambda d: (str(d.parent), int(d.name) if d.name.isdigit() else 0, d.name))
        for d in found:
            dirs.setdefault(d.resolve(), d)
    return list(dirs.values())


def _stored_config(d: Path, summary: dict | None) -> dict | None:
    """The job's resolved config as it ran: the summary's, or (for a job without readable
    results) its ``.hydra/config.yaml`` resolved and validated the same way."""
    if summary is not None:
        return summary.get("config")
    try:
        from omegaconf import OmegaConf

        from src.config import validate

        return validate(OmegaConf.load(d / ".hydra" / "config.yaml")).tree
    except Exception:  # noqa: BLE001 - no config to read: the job is listed without one
        return None


def _read_job(d: Path) -> tuple[dict | None, str]:
    """(summary, status) of a job directory: status is the summary's, ``failed`` where there
    is no summary (the job failed or never ran), ``unreadable`` where a result file is
    truncated or corrupt."""
    from src.sweep.files import complete_result

    if not (d / "summary.json").exists():
        return None, "failed"
    summary = complete_result(d)
    return (None, "unreadable") if summary is None else (summary, summary["status"])


def _config_columns(config: pd.DataFrame) -> pd.DataFrame:
    """Flattened config columns named by their dotted keys; a group's ``X.name`` is ``X``
    (the option a user chose, as in ``linear_solver=gmres``)."""
    names = {c: c.removesuffix(".name") if c.count(".") == 1 and c.endswith(".name") else c for c in config.columns}
    return config.rename(columns=names)


def load_runs(*paths: str | Path) -> pd.DataFrame:
    """One row per job found under ``paths`` (sweep directories, job directories, outputs/):
    what each job stored, read with ``pd.json_normalize``: its resolved config (one column
    per dotted key; ``runs.attrs["config"]`` lists them), its final metrics (row T of
    ``metrics.parquet``; ``runs.attrs["metrics"]``), status and timings. Jobs without
    readable results are rows too, with status ``failed`` (no results) or ``unreadable``
    (a truncated or corrupt result file), so that tables count them."""
    records, maximize = [], set()
    for d in _job_dirs(paths):
        s, status = _read_job(d)
        batch = (s or {}).get("batch") or {}
        records.append(
            {
                "sweep": d.parent.name,
                "job": d.name,
                "path": str(d),
                "status": status,
                "diverged_step": (s or {}).get("diverged_step"),
                "batch": f"{d.parent}/{batch['id']}" if "id" in batch else None,
                "run_s": (s or {}).get("run_s"),
                "compile_s": (s or {}).get("compile_s"),
                "config": _stored_config(d, s) or {},
                "final": {k: v for k, v in ((s or {}).get("final") or {}).items() if k != "step"},
            }
        )
        maximize |= set((s or {}).get("maximize") or ())
    if not records:
        return pd.DataFrame()
    flat = pd.json_normalize(records, sep=".")
    config = _config_columns(flat.filter(regex=r"^config\.").rename(columns=lambda c: c.removeprefix("config.")))
    final = flat.filter(regex=r"^final\.").rename(columns=lambda c: c.removeprefix("final."))
    final = final.rename(columns={c: f"final.{c}" for c in final.columns if c in config.columns})  # never mixed
    ids = flat[[c for c in flat.columns if not c.startswith(("config.", "final."))]]
    runs = pd.concat([ids, config, final], axis=1)
    runs.attrs.update(config=list(config.columns), metrics=[*final.columns, "run_s", "compile_s"], maximize=maximize)
    return runs


def without_results(runs: pd.DataFrame) -> str | None:
    """One warning line naming the jobs that have no readable results, or None."""
    if runs.empty:
        return None
    parts = []
    for status, what in (("failed", "no results (failed or not run)"), ("unreadable", "unreadable result files")):
        names = [f"{r.sweep}/{r.job}" for r in runs[runs["status"] == status].itertuples()]
        if names:
            listed = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            parts.append(f"{len(names)} with {what}: {listed}")
    return f"Warning: {len(runs)} jobs, " + "; ".join(parts) + " (counted in their own columns)" if parts else None


def load_steps(*paths: str | Path, keys: Sequence[str] = ()) -> pd.DataFrame:
    """The per-step metrics of every job with readable results, with the config ``keys``
    of :func:`load_runs` (default: the swept ones) as columns."""
    runs = load_runs(*paths)
    if runs.empty:
        return pd.DataFrame()
    keys = list(keys or swept_keys(runs))
    frames = []
    for row in runs[runs["status"].isin(["completed", "diverged"])].itertuples(index=False):
        m = pd.read_parquet(Path(row.path) / "metrics.parquet")
        values = dict(zip(runs.columns, row, strict=True))
        for k in ("sweep", "job", "status", *keys):
            m[k] = values[k]
        frames.append(m)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


PROBLEM = "objective"  # the key whose values are different problems: a panel and a best setting each
REFERENCE = "full-batch reference"  # what a nested run is called among single-loop methods
GROUP_COLUMNS = CHOSEN_GROUPS  # a group's option first among the swept keys


def as_text(values: pd.Series) -> pd.Series:
    """Values as text for grouping, a missing one as ``-`` (a key that a job's config does
    not have: a single-loop method's ``lr``); pandas 3 keeps NaN through ``astype(str)``."""
    return values.map(lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """The config keys whose value differs between jobs, except ``seed``: the config
    groups' options first, then the other keys in the config's order; a key is left out
    when it only repeats how earlier ones split the jobs (``lr`` and
    ``optimizer.learning_rate``; a solver's name and its defaults)."""
    keys: list[str] = []
    groups = pd.Series(0, index=runs.index)
    config = list(runs.attrs.get("config", ()))
    chosen = [k for k in config if k in GROUP_COLUMNS]  # a group's option first: objective=lasso, not its _target_
    for key in chosen + [k for k in config if k not in chosen]:
        if key == "seed" or as_text(runs[key]).nunique() < 2:
            continue
        finer = groups.astype(str) + "|" + as_text(runs[key])
        if finer.nunique() > groups.nunique():
            keys.append(key)
            groups = pd.Series(pd.factorize(finer)[0], index=runs.index)
    return keys


def default_metrics(runs: pd.DataFrame) -> list[str]:
    """What the runs report best: ||grad h||^2 first where single-loop methods ran (the
    benchmark's measure), then the outer loss, an accuracy, the hypergradient's error and
    the run time."""
    cols = set(runs.columns)
    stochastic = "method" in cols and runs["method"].notna().any() and "grad_h_sq" in cols
    out = ["grad_h_sq", "outer_loss"] if stochastic else ["outer_loss"]
    for acc in ("test_accuracy", "val_accuracy"):
        if acc in cols:
            out.append(acc)
            break
    out += [m for m in ("hypergrad_error", "run_s") if m in cols and runs[m].notna().any()]
    return out


STATS = ("mean", "median")  # mean ± std, or median [q20, q80] (summarize)


def _q20(x):
    return x.quantile(0.2)


def _q80(x):
    return x.quantile(0.8)


def summarize(
    runs: pd.DataFrame, metrics: Sequence[str], by: Sequence[str] | None = None, stat: str = "mean"
) -> pd.DataFrame:
    """Per group over completed jobs: mean, std and count of ``metrics`` (``stat="median"``:
    median, 20 % and 80 % quantiles and count, as benchmark_bilevel reports), best group
    first."""
    by = list(swept_keys(runs) if by is None else by)
    keyed = runs.assign(_all="all") if not by else runs
    keys = by or ["_all"]
    keyed = keyed.assign(
        **{k: as_text(keyed[k]) for k in keys if keyed[k].map(type).nunique() > 1 or keyed[k].isna().any()}
    )
    done = keyed[keyed["status"] == "completed"]
    funcs = ["mean", "std", "count"] if stat == "mean" else ["median", _q20, _q80, "count"]
    table = done.groupby(keys, dropna=False, sort=False)[list(metrics)].agg(funcs)
    table.columns = [f"{m}_{name.lstrip('_')}" for m, name in table.columns]
    status = keyed.groupby(keys, dropna=False, sort=False)["status"]
    table = table.reindex(status.size().index)
    table["jobs"] = status.size()
    table["diverged"] = status.apply(lambda s: int((s == "diverged").sum()))
    table["failed"] = status.apply(lambda s: int((s == "failed").sum()))
    table["unreadable"] = status.apply(lambda s: int((s == "unreadable").sum()))
    for m in metrics:
        table[f"{m}_count"] = table[f"{m}_count"].fillna(0).astype(int)
    first = metrics[0]
    higher = first in runs.attrs.get("maximize", ())  # declared by the objective, stored in each summary
    table = table.sort_values(f"{first}_{stat}", ascending=not higher, na_position="last")
    table.attrs["stat"] = stat
    return table.reset_index().drop(columns="_all", errors="ignore")


def best_per(
    table: pd.DataFrame, key: str | Sequence[str], metric: str, higher: bool = False, score: pd.Series | None = None
) -> pd.DataFrame:
    """The best row of ``table`` (from :func:`summarize`) for each value of ``key``, among
    the settings whose every job completed (benchmark_bilevel's plot script keeps the
    configurations that ran for all seeds); best first. Ranked by ``score`` (one value per
    row of ``table``, e.g. :func:`curve_scores`) or else by the metric's central final value."""
    stat = table.attrs.get("stat", "mean")
    column = f"{metric}_{stat}"
    values = table[column] if score is None else score
    ranked = table.assign(_score=values).dropna(subset=["_score"])
    ranked = ranked[ranked[f"{metric}_count"] == ranked["jobs"]]
    ranked = ranked.sort_values("_score", ascending=not higher)
    keys = [key] if isinstance(key, str) else list(key)
    best = ranked.groupby([as_text(ranked[k]) for k in keys], sort=False).head(1).drop(columns="_score")
    best.attrs.update(table.attrs)
    return best


def curve_scores(
    steps: pd.DataFrame,
    table: pd.DataFrame,
    by: Sequence[str],
    metric: str,
    stat: str = "median",
    higher: bool = False,
    evaluations: int | None = None,
) -> pd.Series:
    """Per row of ``table``: the best value of the group's ``stat`` curve over seeds (its
    median or mean at each evaluated step), over its first ``evaluations`` evaluations or all
    of them: how benchmark_bilevel's plot script picks a solver's setting (the lowest median
    over the first 100 evaluations); step 0 left out."""
    rows = steps.dropna(subset=[metric])
    rows = rows[rows["step"] > 0]  # every setting of a method starts from the same point: it ranks none
    if by:
        rows = rows.assign(_group=list(zip(*(as_text(rows[k]) for k in by), strict=True)))
        keys = list(zip(*(as_text(table[k]) for k in by), strict=True))
    else:
        rows, keys = rows.assign(_group=[()] * len(rows)), [()] * len(table)
    curve = rows.groupby(["_group", "step"])[metric].agg(stat).reset_index()
    if evaluations is not None:
        curve = curve[curve.groupby("_group").cumcount() < evaluations]
    best = curve.groupby("_group")[metric].agg("max" if higher else "min")
    return pd.Series([best.get(k, np.nan) for k in keys], index=table.index)


def select(frame: pd.DataFrame, table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` (runs or steps) in the groups that ``table`` lists."""
    if not by or frame.empty:
        return frame
    wanted = set(zip(*(as_text(table[k]) for k in by), strict=True))
    mask = [key in wanted for key in zip(*(as_text(frame[k]) for k in by), strict=True)]
    return frame[np.asarray(mask, bool)]


def pretty(table: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """``mean ± std (n)`` (or ``median [q20, q80] (n)``) strings, for the terminal,
    markdown and LaTeX."""
    keys = [
        c
        for c in table.columns
        if not re.search(r"_(mean|std|median|q20|q80|count)$", c)
        and c not in ("jobs", "diverged", "failed", "unreadable")
    ]
    out = table[keys].copy()
    if "method" in out and (out["method"] == "-").any() and (out["method"] != "-").any():
        out["method"] = out["method"].replace("-", REFERENCE)  # a nested run among single-loop methods
    for m in metrics:
        n = table[f"{m}_count"]
        if f"{m}_median" in table:
            mid, lo, hi = table[f"{m}_median"], table[f"{m}_q20"], table[f"{m}_q80"]
            out[m] = [
                "—" if c == 0 else f"{a:.4g} [{b:.3g}, {d:.3g}] ({c})" if c > 1 else f"{a:.4g} (1)"
                for a, b, d, c in zip(mid, lo, hi, n, strict=True)
            ]
            continue
        mean, std = table[f"{m}_mean"], table[f"{m}_std"]
        out[m] = [
            "—" if c == 0 else f"{a:.4g} ± {b:.2g} ({c})" if c > 1 else f"{a:.4g} (1)"
            for a, b, c in zip(mean, std.fillna(0), n, strict=True)
        ]
    out["diverged"], out["failed"], out["unreadable"] = table["diverged"], table["failed"], table["unreadable"]
    return out


def write_tables(table: pd.DataFrame, metrics: Sequence[str], out: Path, name: str = "results") -> None:
    from src.sweep.files import atomic_write_text

    atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    shown = pretty(table, metrics)
    atomic_write_text(out / f"{name}.md", shown.to_markdown(index=False) + "\n")
    latex = shown.style.hide(axis="index").to_latex(hrules=True).replace("±", r"$\pm$")
    atomic_write_text(out / f"{name}.tex", latex)
