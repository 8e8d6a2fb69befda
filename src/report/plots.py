"""A sweep's runs as figures: curves against step, oracle calls or time, final values
against each swept number, and each objective's own figure (``Objective.figure``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from src.report.tables import PROBLEM, REFERENCE, as_text


def _log_spaced(values: np.ndarray) -> bool:
    v = np.sort(np.unique(values))
    if len(v) < 3 or (v <= 0).any():
        return len(v) >= 2 and (v > 0).all() and v[-1] / v[0] >= 100
    ratios = v[1:] / v[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=0.05) and ratios[0] > 1.5) or v[-1] / v[0] >= 100


LOG_METRICS = re.compile(r"error|norm|residual|gap|grad_h_sq")
STYLES = ("-", "--", ":", "-.")
MAX_CURVES = 10  # per panel: more cannot be told apart
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
    "test_error": "test error",
    "val_accuracy": "validation accuracy",
    "run_s": "run time (s)",
    "meta_test_mse": "meta-test MSE — held-out tasks' MSE after adaptation",
    "val_mse": "validation MSE",
}
SHORT_KEYS = {"method.step_size": "step", "method.outer_ratio": "ratio"}
# one colour per method in every figure: benchmark_bilevel's plot script's where it has one
METHOD_COLOURS = {
    "soba": "#0072B2", "saba": "#E69F00", "mrbo": "#009E73", "sustain": "#56B4E9", "ttsa": "#D55E00",
    "fsla": "#97F0AA", "amigo": "#000000", "stocbio": "#CC79A7", "bsa": "#F0E442", "srba": "#8B0000",
    "vrbo": "#7F7F7F", "f2sa": "#9467BD", "bome": "#8C564B", "pzobo": "#BCBD22", "-": "#A60628",
}  # fmt: skip


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
    groups = frame.groupby([as_text(frame[k]) for k in by], sort=False)
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
        palette = matplotlib.colormaps["tab20"]
        methods = sorted({n[i] for n in names})
        colour = {m: METHOD_COLOURS.get(m, palette(k % 20)) for k, m in enumerate(methods)}
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
    if PROBLEM in by and not completed.empty and as_text(completed[PROBLEM]).nunique() > 1:
        return [plot_problems(completed, metrics, by, out, x, prefix)]
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


def _log_x(frame: pd.DataFrame, x: str) -> tuple[pd.DataFrame, bool, float]:
    """Whether the x axis is logarithmic (budgets that differ by two orders of magnitude or
    more), with step 0 placed at the axis' left edge (half the smallest positive x)."""
    positive = frame["_x"][frame["_x"] > 0]
    if x == "step" or positive.empty or positive.max() / positive.min() < 100:
        return frame, False, 0.0
    edge = float(positive.min()) / 2
    return frame.assign(_x=frame["_x"].where(frame["_x"] > 0, edge)), True, edge


def plot_problems(
    completed: pd.DataFrame, metrics: Sequence[str], by: Sequence[str], out: Path, x: str, prefix: str
) -> Path:
    """benchmark_bilevel's figure: one panel per problem (value of ``objective``), each with
    the first of ``metrics`` that its runs report, one curve and one colour per method
    (the median over seeds, a 20-80 % band), log axes where the data span them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    problems = list(dict.fromkeys(as_text(completed[PROBLEM])))
    ncols = min(3, len(problems))
    nrows = -(-len(problems) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    rest = [k for k in by if k != PROBLEM]
    shown = []
    for ax, problem in zip(axes.ravel(), problems, strict=False):
        mine = completed[as_text(completed[PROBLEM]) == problem]
        metric = next((m for m in metrics if m in mine and mine[m].notna().any()), None)
        if metric is None:
            ax.set_title(f"{problem}: none of {', '.join(metrics)}", fontsize=9)
            continue
        evaluated, log_x, edge = _log_x(mine.dropna(subset=[metric]), x)
        groups = _groups(evaluated, rest)
        styles = _styles([n for n, _ in groups], rest, evaluated)
        for (name, g), style in zip(groups, styles, strict=True):
            q = g.groupby("step")[metric].quantile([0.2, 0.5, 0.8]).unstack()
            xs = g.groupby("step")["_x"].median().loc[q.index]
            ax.plot(xs, q[0.5], label=_label(rest, name), **style)
            ax.fill_between(xs, q[0.2], q[0.8], color=style["color"], alpha=0.15, linewidth=0)
        if log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        _set_y(ax, evaluated[metric], metric)
        label = X_AXES[x].split(" (")[0] + (f" (log; step 0 at x = {edge:g})" if log_x else "")
        ax.set_xlabel(label, fontsize=8)
        ax.set_title(problem, fontsize=9)
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        shown.append(metric)
    for ax in axes.ravel()[len(problems) :]:
        ax.set_visible(False)
    fig.suptitle("median and 20-80 % over seeds, a panel per problem", fontsize=9)
    fig.tight_layout()
    # named by the first metric, as a one-problem figure of the same command is
    path = out / f"{prefix}{metrics[0]}_{'steps' if x == 'step' else x}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def objective_figures(runs: pd.DataFrame, out: Path, prefix: str = "") -> list[Path]:
    """The figure each completed job's objective draws of its result, where the objective
    has one (``Objective.figure(theta, final_metrics, title)``: distillation's learned images):
    ``images_<sweep>_<job>.png`` (with ``prefix``: ``<prefix>images_<job>.png``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.config import build_objective

    columns = [c for c in runs.columns if c.startswith("objective.")]
    written = []
    for _, row in runs[runs["status"] == "completed"].iterrows():
        node = {c.removeprefix("objective."): row[c] for c in columns if not _missing(row[c])}
        if "_target_" not in node:
            continue
        try:
            objective = build_objective(node)
        except Exception:  # noqa: BLE001 - an objective that cannot be built here draws nothing
            continue
        if objective.figure is None:
            continue
        final = {m: row[m] for m in runs.attrs.get("metrics", ()) if m in row and not _missing(row[m])}
        with np.load(Path(row["path"]) / "params.npz") as params:
            fig = objective.figure(np.asarray(params["theta"]), final, f"job {row['job']}")
        name = f"{prefix}images_{row['job']}.png" if prefix else f"images_{row['sweep']}_{row['job']}.png"
        path = out / name.replace("/", "_")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))
