"""``python -m src.aggregate PATH...``: a sweep's runs as pandas tables and plots.

    python -m src.aggregate outputs/multirun/2026-11-27_12-00-00 --metric outer_loss --plot

* :func:`load_runs` -> one row per job, read from what it stored (``pd.json_normalize``
  of its summary): its resolved config as columns (dotted keys), status, final metrics
  (row T of ``metrics.parquet``, as everywhere), timings;
* :func:`load_steps` -> the long per-step table of every job;
* :func:`summarize` -> mean, std and count of the chosen metrics per group of the swept
  config keys except ``seed``, over completed jobs only; diverged and failed jobs are
  counted in their own columns, never averaged in. Best group first (higher first for
  the metrics the objective declares in ``maximize``).

Writes ``results.csv`` (numeric mean/std/count columns), ``results.md``, ``results.tex``
and, with ``--plot``, PNG figures into the sweep directory (or ``--out``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

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
    from src.files import complete_result

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


GROUP_COLUMNS = ("objective", "method", "inner_solver", "linear_solver", "hypergrad", "optimizer")


def _text(values: pd.Series) -> pd.Series:
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
        if key == "seed" or _text(runs[key]).nunique() < 2:
            continue
        finer = groups.astype(str) + "|" + _text(runs[key])
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
        **{k: _text(keyed[k]) for k in keys if keyed[k].map(type).nunique() > 1 or keyed[k].isna().any()}
    )
    done = keyed[keyed["status"] == "completed"]
    funcs = ["mean", "std", "count"] if stat == "mean" else ["median", _q20, _q80, "count"]
    table = done.groupby(keys, dropna=False, sort=False)[list(metrics)].agg(funcs)
    table.columns = [f"{m}_{name.lstrip('_')}" for m, name in table.columns]
    status = keyed.groupby(keys, dropna=False, sort=False)["status"]
    table = table.reindex(status.size().index)
    table["jobs"] = status.size()
    table["diverged"] = status.apply(lambda s: int((s == "diverged").sum()))
    table["failed"] = status.apply(lambda s: int(s.isin(["failed", "running"]).sum()))
    table["unreadable"] = status.apply(lambda s: int((s == "unreadable").sum()))
    for m in metrics:
        table[f"{m}_count"] = table[f"{m}_count"].fillna(0).astype(int)
    first = metrics[0]
    higher = first in runs.attrs.get("maximize", ())  # declared by the objective, stored in each summary
    table = table.sort_values(f"{first}_{stat}", ascending=not higher, na_position="last")
    table.attrs["stat"] = stat
    return table.reset_index().drop(columns="_all", errors="ignore")


def best_per(table: pd.DataFrame, key: str, metric: str, higher: bool = False) -> pd.DataFrame:
    """The best row of ``table`` (from :func:`summarize`) for each value of ``key``, by the
    metric's central value (benchmark_bilevel picks each solver's setting by its median
    final value); best first."""
    stat = table.attrs.get("stat", "mean")
    column = f"{metric}_{stat}"
    ranked = table.dropna(subset=[column]).sort_values(column, ascending=not higher)
    best = ranked.groupby(_text(ranked[key]), sort=False).head(1)
    best.attrs.update(table.attrs)
    return best


def select(frame: pd.DataFrame, table: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The rows of ``frame`` (runs or steps) in the groups that ``table`` lists."""
    if not by or frame.empty:
        return frame
    wanted = set(zip(*(_text(table[k]) for k in by), strict=True))
    mask = [key in wanted for key in zip(*(_text(frame[k]) for k in by), strict=True)]
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
    from src.files import atomic_write_text

    atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    shown = pretty(table, metrics)
    atomic_write_text(out / f"{name}.md", shown.to_markdown(index=False) + "\n")
    latex = shown.style.hide(axis="index").to_latex(hrules=True).replace("±", r"$\pm$")
    atomic_write_text(out / f"{name}.tex", latex)


def _log_spaced(values: np.ndarray) -> bool:
    v = np.sort(np.unique(values))
    if len(v) < 3 or (v <= 0).any():
        return len(v) >= 2 and (v > 0).all() and v[-1] / v[0] >= 100
    ratios = v[1:] / v[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=0.05) and ratios[0] > 1.5) or v[-1] / v[0] >= 100


LOG_METRICS = re.compile(r"error|norm|residual|gap|grad_h_sq")
STYLES = ("-", "--", ":", "-.")
MAX_CURVES = 10  # per panel: more cannot be told apart
REFERENCE = "full-batch reference"  # what a nested run is called among single-loop methods
METRIC_WORDS = {
    "grad_h_sq": "‖∇h(θ)‖² — squared norm of the value function's gradient",
    "h_value": "h(θ) = F(w*(θ), θ)",
    "outer_loss": "outer loss F(w, θ)",
    "inner_loss": "inner loss G(w, θ)",
    "hypergrad_error": "relative hypergradient error ‖g − ∇h‖ / ‖∇h‖",
    "hypergrad_abs_error": "hypergradient error ‖g − ∇h‖",
    "hypergrad_norm": "‖g‖ — norm of the outer step's direction",
    "inner_gap_sq": "‖w − w*(θ)‖² — inner variable's squared error",
    "v_gap_sq": "‖v − v*(θ)‖² — linear system's squared error",
    "test_accuracy": "test accuracy",
    "val_accuracy": "validation accuracy",
    "run_s": "run time (s)",
    "meta_test_mse": "meta-test MSE — held-out tasks' MSE after adaptation",
    "val_mse": "validation MSE",
}
SHORT_KEYS = {"method.step_size": "step", "method.outer_ratio": "ratio"}


def _words(metric: str) -> str:
    return METRIC_WORDS.get(metric, metric)


def _sort_value(v):
    """Numbers in numeric order before anything else in text order."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _groups(frame: pd.DataFrame, by: Sequence[str]) -> list[tuple[tuple, pd.DataFrame]]:
    """(values of ``by``, rows) per group, sorted numerically by the keys' values."""
    if not by:
        return [((), frame)]
    groups = frame.groupby([_text(frame[k]) for k in by], sort=False)
    named = [(name if isinstance(name, tuple) else (name,), g) for name, g in groups]
    return sorted(named, key=lambda ng: [_sort_value(ng[1][k].iloc[0]) for k in by])


def _styles(names: list[tuple], by: Sequence[str], frame: pd.DataFrame) -> list[dict]:
    """A line style per group: one colour per method where ``method`` is a key (the same
    method has the same colour in every figure), else colours from a colormap ordered by
    the first numeric key's value (else a qualitative palette); dash patterns for the other
    keys, and widths that shrink from the first line drawn so that lines that coincide all
    stay visible."""
    import matplotlib

    numeric = [i for i, k in enumerate(by) if pd.to_numeric(frame[k], errors="coerce").notna().all()]
    if "method" in by:
        i = list(by).index("method")
        palette = matplotlib.colormaps["tab10"]
        methods = sorted({n[i] for n in names})
        colour = {m: ("black" if m == "-" else palette(k % 10)) for k, m in enumerate(methods)}
        dashes: dict = {}
        styles = []
        for n in names:
            seen = dashes.setdefault(n[i], {})
            dash = seen.setdefault(n, STYLES[len(seen) % len(STYLES)])
            styles.append({"color": colour[n[i]], "linestyle": dash})
    elif numeric:
        i = numeric[0]
        levels = sorted({n[i] for n in names}, key=_sort_value)
        cmap = matplotlib.colormaps["viridis"]
        colour = {v: cmap(0.9 * r / max(len(levels) - 1, 1)) for r, v in enumerate(levels)}
        rest = sorted(
            {tuple(v for j, v in enumerate(n) if j != i) for n in names}, key=lambda t: [*map(_sort_value, t)]
        )
        dash = {r: STYLES[k % len(STYLES)] for k, r in enumerate(rest)}
        styles = [
            {"color": colour[n[i]], "linestyle": dash[tuple(v for j, v in enumerate(n) if j != i)]} for n in names
        ]
    else:
        cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
        styles = [{"color": cmap(k % cmap.N), "linestyle": STYLES[k % len(STYLES)]} for k in range(len(names))]
    for k, style in enumerate(styles):
        style["linewidth"] = 1.2 + 1.8 * (len(styles) - 1 - k) / max(len(styles) - 1, 1)
    return styles


def y_scale(values: pd.Series, metric: str) -> tuple[str, dict]:
    """The y axis from the data's spread: ``log`` for positive values of an error, norm or
    gap, or that span two orders of magnitude; ``symlog`` (linear within the smallest
    magnitudes, logarithmic beyond) for values that reach zero or below but whose
    magnitudes span three orders (an outer loss that dips below zero); else linear."""
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "linear", {}
    if (v > 0).all():
        return ("log", {}) if LOG_METRICS.search(metric) or v.max() / v.min() >= 100 else ("linear", {})
    magnitudes = np.abs(v[v != 0])
    if magnitudes.size and magnitudes.max() / magnitudes.min() >= 1000:
        return "symlog", {"linthresh": float(np.quantile(magnitudes, 0.05))}
    return "linear", {}


def _set_y(ax, values: pd.Series, metric: str, prefix: str = "") -> None:
    scale, options = y_scale(values, metric)
    ax.set_yscale(scale, **options)
    suffix = {"log": " (log scale)", "symlog": f" (symlog scale, linear below {options.get('linthresh', 0):.2g})"}
    ax.set_ylabel(prefix + _words(metric).split(" — ")[0] + suffix.get(scale, ""), fontsize=8)


def _constant_within_batches(runs: pd.DataFrame, metric: str) -> bool:
    """Whether a metric is one value per batch (``run_s``: each job's share of its batch),
    so that plotting it against a key that varies inside a batch shows nothing."""
    if "batch" not in runs or runs["batch"].isna().all():
        return False
    shared = runs.groupby("batch")[metric].agg(["nunique", "size"])
    return bool((shared["size"] > 1).any() and (shared["nunique"] <= 1).all())


def _short(value: str) -> str:
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


def _label(by: Sequence[str], name: tuple) -> str:
    """What tells a curve apart: among methods, ``saba (step 0.1, ratio 1)`` and a nested
    run as the full-batch reference; else ``key=value, ...``. Keys that the group's config
    does not have (``-``) are left out."""
    values = dict(zip(by, name, strict=False))
    if "method" in values:
        method = values.pop("method")
        rest = ", ".join(
            f"{SHORT_KEYS.get(k, k.rsplit('.', 1)[-1])} {_short(v)}" for k, v in values.items() if v != "-"
        )
        head = REFERENCE if method == "-" else method
        return f"{head} ({rest})" if rest else head
    return ", ".join(f"{k}={v}" for k, v in values.items() if v != "-") or "all"


def _finish(fig, ax, title: str, path: Path, legend: bool) -> Path:
    ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


X_AXES = {
    "step": "outer step",
    "oracle_calls": "oracle calls (minibatch gradients, Hessian- and Jacobian-vector products)",
    "time": "seconds (each job's share of its batch's run time, spread evenly over its steps)",
}


def with_x(steps: pd.DataFrame, runs: pd.DataFrame, x: str) -> pd.DataFrame:
    """``steps`` with the column ``x`` for the curves: ``oracle_calls`` = inner + outer
    oracle calls so far; ``time`` = the job's run seconds x step / T (a batch's members
    share its time, and the scan's steps are not timed one by one)."""
    if x == "step":
        return steps.assign(_x=steps["step"])
    if x == "oracle_calls":
        return steps.assign(_x=steps["oracle_inner"] + steps["oracle_outer"])
    run_s = runs.set_index(["sweep", "job"])["run_s"]
    total = steps.groupby(["sweep", "job"])["step"].transform("max").clip(lower=1)
    seconds = pd.Series(run_s.reindex(pd.MultiIndex.from_frame(steps[["sweep", "job"]])).to_numpy(), steps.index)
    return steps.assign(_x=seconds * steps["step"] / total)


def panels(groups: list, by: Sequence[str], metric: str, higher: bool) -> list[tuple[str, list, str]]:
    """The curves of a figure in panels of at most :data:`MAX_CURVES`: one panel when they
    fit, else one per value of ``method`` (or of the first key); a panel that still has
    more keeps the best by the final median (and says so). ``(title, groups, note)``."""
    if len(groups) <= MAX_CURVES:
        return [("", groups, "")]
    facet = "method" if "method" in by else by[0]
    i = list(by).index(facet)
    values = list(dict.fromkeys(name[i] for name, _ in groups))
    out = []
    for value in values:
        mine = [(name, g) for name, g in groups if name[i] == value]
        note = ""
        if len(mine) > MAX_CURVES:
            final = [g[g["step"] == g["step"].max()][metric].median() for _, g in mine]
            order = np.argsort(final)[::-1] if higher else np.argsort(final)
            note = f"; the best {MAX_CURVES} of {len(mine)} settings by final median"
            mine = [mine[k] for k in sorted(order[:MAX_CURVES])]
        head = REFERENCE if facet == "method" and value == "-" else f"{facet}={value}"
        out.append((head, mine, note))
    return out


def plot(
    runs: pd.DataFrame,
    steps: pd.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str],
    out: Path,
    x: str = "step",
    prefix: str = "plot_",
) -> list[Path]:
    """Each metric against ``x`` (:data:`X_AXES`; a line per group: the median over seeds,
    a band from the 20 % to the 80 % quantile, over the rows where it was evaluated) and
    against each swept numeric key. The y axis is chosen from the data's spread
    (:func:`y_scale`) and named in words; on a log x axis step 0 is drawn at the axis' left
    edge (half the smallest positive x), so that every curve starts at its step-0 value; more
    than :data:`MAX_CURVES` curves are split into panels (:func:`panels`); legends sorted by
    value, outside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    written = []
    completed = steps[steps["status"] == "completed"] if "status" in steps else steps
    if not completed.empty:
        completed = with_x(completed, runs, x)
    higher_is_better = runs.attrs.get("maximize", set())
    for metric in metrics:
        if metric not in completed.columns or completed[metric].isna().all():
            continue
        evaluated = completed.dropna(subset=[metric])  # rows between evaluations are NaN
        positive = evaluated["_x"][evaluated["_x"] > 0]
        log_x = x != "step" and not positive.empty and positive.max() / positive.min() >= 100
        xlabel = X_AXES[x]
        if log_x:  # budgets that differ by orders of magnitude (a full-batch reference)
            edge = float(positive.min()) / 2  # left of every curve's first positive point
            evaluated = evaluated.assign(_x=evaluated["_x"].where(evaluated["_x"] > 0, edge))
            xlabel += f"; log scale, step 0 drawn at the left edge (x = {edge:g})"
        groups = _groups(evaluated, by)
        laid = panels(groups, by, metric, metric in higher_is_better)
        ncols = min(3, len(laid))
        nrows = -(-len(laid) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 if ncols == 1 else 4.6 * ncols, 4.2 * nrows),
                                 squeeze=False, sharey=True)  # fmt: skip
        for ax, (head, mine, note) in zip(axes.ravel(), laid, strict=False):
            names = [n for n, _ in mine]
            if len(laid) == 1:
                styles = dict(zip(names, _styles(names, by, evaluated), strict=True))
            else:  # a panel per value of the facet key: the other keys tell its curves apart
                i = list(by).index("method" if "method" in by else by[0])
                rest = [k for j, k in enumerate(by) if j != i]
                inner = [tuple(v for j, v in enumerate(n) if j != i) for n in names]
                styles = dict(zip(names, _styles(inner, rest, evaluated), strict=True))
            for name, g in mine:
                q = g.groupby("step")[metric].quantile([0.2, 0.5, 0.8]).unstack()
                xs = g.groupby("step")["_x"].median().loc[q.index]
                ax.plot(xs, q[0.5], label=_label(by, name), **styles[name])
                ax.fill_between(xs, q[0.2], q[0.8], color=styles[name]["color"], alpha=0.15, linewidth=0)
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded labels
            ax.set_xlabel(xlabel if len(laid) == 1 else X_AXES[x].split(" (")[0], fontsize=8)
            _set_y(ax, evaluated[metric], metric)
            if len(laid) > 1:
                ax.set_title(head + note, fontsize=8)
                ax.legend(fontsize=6, loc="best", frameon=False)
        for ax in axes.ravel()[len(laid) :]:
            ax.set_visible(False)
        title = f"{_words(metric)}: median and 20-80 % over seeds"
        suffix = "steps" if x == "step" else x
        path = out / f"{prefix}{metric}_{suffix}.png"
        if len(laid) == 1:
            written.append(_finish(fig, axes[0, 0], title + laid[0][2], path, legend=bool(by)))
        else:
            fig.suptitle(f"{title} ({len(groups)} settings, a panel per {('method' if 'method' in by else by[0])})"
                         + ("" if not log_x else f"\n{xlabel}"), fontsize=9)  # fmt: skip
            fig.tight_layout()
            fig.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(fig)
            written.append(path)
    done = runs[runs["status"] == "completed"]
    for key in by:
        values = pd.to_numeric(done[key], errors="coerce")
        if values.isna().any() or values.nunique() < 2:
            continue
        rest = [k for k in by if k != key]
        for metric in metrics:
            if metric not in done.columns or done[metric].isna().all() or _constant_within_batches(done, metric):
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            groups = _groups(done, rest)
            note = f" (the first {MAX_CURVES} of {len(groups)} settings)" if len(groups) > MAX_CURVES else ""
            groups = groups[:MAX_CURVES]
            for (name, g), style in zip(groups, _styles([n for n, _ in groups], rest, done), strict=True):
                q = g.groupby(pd.to_numeric(g[key]))[metric].quantile([0.2, 0.5, 0.8]).unstack().sort_index()
                err = [q[0.5] - q[0.2], q[0.8] - q[0.5]]
                ax.errorbar(q.index, q[0.5], yerr=err, marker="o", capsize=3, label=_label(rest, name), **style)
            if _log_spaced(values.to_numpy()):
                ax.set_xscale("log")
            _set_y(ax, done[metric], metric, "final ")
            ax.set_xlabel(key)
            path = out / f"{prefix}{metric}_vs_{key.replace('/', '_')}.png"
            title = f"final {_words(metric)}: median and 20-80 % over seeds{note}"
            written.append(_finish(fig, ax, title, path, legend=bool(rest)))
    return written


def images(runs: pd.DataFrame, out: Path, prefix: str = "") -> list[Path]:
    """The learned synthetic images of each completed ``distillation`` job (its final theta,
    one row per image per class, 8 x 8 standardized pixels): ``images_<sweep>_<job>.png``
    (``prefix``: ``<prefix>images_<job>.png``)."""
    if "objective" not in runs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for row in runs[(runs["objective"] == "distillation") & (runs["status"] == "completed")].itertuples():
        theta = np.load(Path(row.path) / "params.npz")["theta"]
        per_class = theta.shape[0] // 10
        fig, axes = plt.subplots(per_class, 10, figsize=(10, 1.1 * per_class), squeeze=False)
        for i, ax in enumerate(axes.T.ravel()):  # column c: the images of class c
            ax.imshow(theta[i].reshape(8, 8), cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
        for c in range(10):
            axes[0, c].set_title(str(c), fontsize=9)
        accuracy = getattr(row, "test_accuracy", float("nan"))
        title = f"job {row.job}: {per_class} per class, test accuracy {accuracy:.3f}"
        fig.suptitle(title, fontsize=9, y=1.0 + 0.35 / per_class)
        name = f"{prefix}images_{row.job}.png" if prefix else f"images_{row.sweep}_{row.job}.png"
        path = out / name.replace("/", "_")
        fig.savefig(path, dpi=110, bbox_inches="tight")
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
                 *images(runs, figures, prefix if args.figures else "")]  # fmt: skip
        for path in drawn:
            print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
