"""python -m src.aggregate on real small sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.report.tables import load_runs, load_steps, summarize
from tests.conftest import cli


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agg")
    ridge = tmp / "ridge"
    proc = cli("-m", "objective=ridge", "lr=0.05,0.2", "seed=0,1,2", "outer_steps=5", f"hydra.sweep.dir={ridge}")
    assert proc.returncode == 0, proc.stderr
    toy = tmp / "toy"
    proc = cli("-m", "lr=0.05,1e30", "seed=0,1", "outer_steps=5", f"hydra.sweep.dir={toy}")
    assert proc.returncode == 0, proc.stderr
    return ridge, toy


def test_means_stds_counts_by_hand_from_the_summaries(sweeps):
    import statistics

    ridge, _ = sweeps
    by_lr: dict = {}
    for s in ridge.glob("*/summary.json"):
        summary = json.loads(s.read_text())
        by_lr.setdefault(summary["config"]["lr"], []).append(summary["final"]["outer_loss"])

    runs = load_runs(ridge)
    assert len(runs) == 6 and set(runs["seed"]) == {0, 1, 2}
    table = summarize(runs, ["outer_loss", "val_mse"]).set_index("lr")
    for lr, losses in by_lr.items():  # the sample standard deviation, as papers report it
        assert table.loc[lr, "outer_loss_mean"] == pytest.approx(sum(losses) / len(losses), rel=1e-12)
        assert table.loc[lr, "outer_loss_std"] == pytest.approx(statistics.stdev(losses), rel=1e-12)
        assert table.loc[lr, "outer_loss_count"] == len(losses) == 3
    assert table["outer_loss_std"].gt(0).all()  # seeds really differ
    means = {lr: sum(v) / len(v) for lr, v in by_lr.items()}
    assert list(table.index) == sorted(means, key=means.get)  # best first


def test_diverged_jobs_are_counted_apart(sweeps):
    _, toy = sweeps
    runs = load_runs(toy)
    assert (runs["status"] == "diverged").sum() == 2
    everything = summarize(runs, ["outer_loss"], by=[])
    assert everything.loc[0, "jobs"] == 4 and everything.loc[0, "diverged"] == 2
    assert everything.loc[0, "outer_loss_count"] == 2
    completed = runs[runs["status"] == "completed"]["outer_loss"]
    assert everything.loc[0, "outer_loss_mean"] == pytest.approx(completed.mean())
    by_lr = summarize(runs, ["outer_loss"]).set_index("lr")
    assert by_lr.loc[1e30, "outer_loss_count"] == 0 and np.isnan(by_lr.loc[1e30, "outer_loss_mean"])
    assert by_lr.loc[1e30, "diverged"] == 2
    steps = load_steps(toy)
    for job, g in steps.groupby("job"):
        summary = json.loads((toy / job / "summary.json").read_text())
        assert len(g) == summary["rows"]  # a diverged job keeps its rows up to the divergence


def test_cli_writes_tables_and_figures(sweeps):
    ridge, _ = sweeps
    proc = cli(str(ridge), "--metric", "outer_loss", "--metric", "val_mse", "--plot", module="src.aggregate")
    assert proc.returncode == 0, proc.stderr
    assert "± " in proc.stdout and "6 jobs: 6 completed" in proc.stdout
    csv = pd.read_csv(ridge / "results.csv")
    assert {"lr", "outer_loss_mean", "outer_loss_std", "outer_loss_count", "val_mse_mean", "diverged"} <= set(csv)
    assert "\\pm" in (ridge / "results.tex").read_text()
    assert "outer_loss" in (ridge / "results.md").read_text()
    for name in ("plot_outer_loss_steps.png", "plot_outer_loss_vs_lr.png"):
        assert (ridge / name).stat().st_size > 5000


def test_cli_unknown_metric_is_a_clear_error(sweeps):
    ridge, _ = sweeps
    proc = cli(str(ridge), "--metric", "nope", module="src.aggregate")
    assert proc.returncode == 2 and "unknown --metric nope" in proc.stderr and "Traceback" not in proc.stderr
    # beside a metric the runs report (another problem's metric, as in study=benchmark's command): said, left out
    proc = cli(str(ridge), "--metric", "outer_loss", "--metric", "nope", module="src.aggregate")
    assert proc.returncode == 0 and "no run reports --metric nope (left out)" in proc.stderr
    assert "nope" not in (ridge / "results.md").read_text()


def test_failed_and_unreadable_jobs_are_counted_with_one_warning(sweeps, tmp_path):
    import shutil

    ridge, _ = sweeps
    broken = tmp_path / "broken"
    shutil.copytree(ridge, broken)
    for name in ("results.csv", "results.md", "results.tex"):
        (broken / name).unlink(missing_ok=True)
    jobs = {json.loads((broken / str(j) / "summary.json").read_text())["config"]["lr"]: [] for j in range(6)}
    for j in range(6):
        jobs[json.loads((broken / str(j) / "summary.json").read_text())["config"]["lr"]].append(str(j))
    a, b = jobs[0.05][:2]  # two jobs of lr=0.05
    c = jobs[0.2][0]
    (broken / a / "summary.json").unlink()  # failed: no results (its .hydra/ is there)
    (broken / b / "summary.json").write_text((broken / b / "summary.json").read_text()[:50])  # truncated
    data = (broken / c / "metrics.parquet").read_bytes()
    (broken / c / "metrics.parquet").write_bytes(data[:100])  # truncated next to an intact summary

    proc = cli(str(broken), "--metric", "outer_loss", "--plot", module="src.aggregate")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if line.startswith("Warning")]
    assert len(warning) == 1
    assert f"1 with no results (failed or not run): broken/{a}" in warning[0]
    assert f"2 with unreadable result files: broken/{min(b, c, key=int)}, broken/{max(b, c, key=int)}" in warning[0]
    table = pd.read_csv(broken / "results.csv").set_index("lr")
    assert table.loc[0.05, "failed"] == 1 and table.loc[0.05, "unreadable"] == 1 and table.loc[0.05, "jobs"] == 3
    assert table.loc[0.2, "failed"] == 0 and table.loc[0.2, "unreadable"] == 1
    # the means are over the readable completed jobs only, by hand from their summaries
    for lr, members in jobs.items():
        kept = [m for m in members if m not in (a, b, c)]
        losses = [json.loads((ridge / m / "summary.json").read_text())["final"]["outer_loss"] for m in kept]
        assert table.loc[lr, "outer_loss_count"] == len(kept)
        assert table.loc[lr, "outer_loss_mean"] == pytest.approx(np.mean(losses), rel=1e-12)
    assert (broken / "plot_outer_loss_steps.png").stat().st_size > 5000


def test_plots_order_colour_and_scale_by_value(tmp_path):
    """Lines in numeric order of the swept value, coloured along a colormap, errors on a
    log axis with positive bands, the legend outside the data, and no plot of a metric
    that is one value per batch."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from src.report.plots import plot

    out = tmp_path / "steps"
    proc = cli(
        "-m",
        "objective=ridge",
        "inner_solver.warm_start=false",
        "inner_solver.steps=3,10,100",
        "seed=0,1,2",
        "outer_steps=3",
        f"hydra.sweep.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    runs, steps = load_runs(out), load_steps(out)
    figures = []
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, path, **kwargs):
        figures.append((path.name, fig))
        return real_savefig(fig, path, **kwargs)

    matplotlib.figure.Figure.savefig = keep
    try:
        written = plot(runs, steps, ["hypergrad_error", "run_s"], ["inner_solver.steps"], out)
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
    names = [p.name for p in written]
    assert names == ["plot_hypergrad_error_steps.png", "plot_hypergrad_error_vs_inner_solver.steps.png"]
    (_, fig), _ = figures
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["inner_solver.steps=3", "inner_solver.steps=10", "inner_solver.steps=100"]
    colours = [line.get_color() for line in ax.get_lines()]
    viridis = matplotlib.colormaps["viridis"]
    assert colours[0] == viridis(0.0) and colours[-1] == viridis(0.9)
    for band in ax.collections:  # the 20-80 % bands stay above zero
        assert (band.get_paths()[0].vertices[:, 1] > 0).all()
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # the figure was closed after saving
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # outside the axes
    plt.close("all")


@pytest.fixture(scope="module")
def stochastic(tmp_path_factory):
    """Two single-loop methods x two step sizes x 3 seeds, and a full-batch nested reference."""
    out = tmp_path_factory.mktemp("stoch") / "sweep"
    conf = out.parent / "conf" / "study"
    conf.mkdir(parents=True)
    (conf / "mix.yaml").write_text(
        "# @package _global_\n"
        "hydra:\n  sweeper:\n"
        "    params: {method: 'soba,saba', method.step_size: '0.01,0.1', seed: '1,2,3'}\n"
        "    also: [{method: cg}]\n"
    )
    proc = cli(
        "-m", "study=mix", f"hydra.searchpath=[file://{out.parent / 'conf'}]", "objective=logreg", "batch_size=32",
        "outer_steps=12", "eval_every=4", "wandb.mode=disabled", f"hydra.sweep.dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def test_median_quantiles_and_best_per_method(stochastic):
    from src.report.tables import best_per, swept_keys

    runs = load_runs(stochastic)
    assert len(runs) == 13 and "method" in swept_keys(runs)
    table = summarize(runs, ["outer_loss"], stat="median")
    single = runs[runs["method"].notna()]
    for (method, step), g in single.groupby(["method", "method.step_size"]):
        row = table[(table["method"] == method) & (table["method.step_size"] == str(step))].iloc[0]
        losses = g["outer_loss"].to_numpy()
        assert row["outer_loss_median"] == pytest.approx(np.median(losses), rel=1e-12)
        assert row["outer_loss_q20"] == pytest.approx(np.quantile(losses, 0.2), rel=1e-12)
        assert row["outer_loss_q80"] == pytest.approx(np.quantile(losses, 0.8), rel=1e-12)
    best = best_per(table, "method", "outer_loss")
    assert sorted(best["method"]) == ["-", "saba", "soba"]  # "-": the nested reference has no method node
    for method in ("soba", "saba"):
        mine = table[table["method"] == method]
        assert best[best["method"] == method]["outer_loss_median"].item() == mine["outer_loss_median"].min()


def test_curves_against_oracle_calls_and_time(stochastic):
    from src.report.plots import with_x

    runs, steps = load_runs(stochastic), load_steps(stochastic)
    calls = with_x(steps, runs, "oracle_calls")
    np.testing.assert_array_equal(calls["_x"], steps["oracle_inner"] + steps["oracle_outer"])
    timed = with_x(steps, runs, "time")
    last = timed.groupby("job").tail(1).set_index("job")["_x"]
    np.testing.assert_allclose(last, runs.set_index("job").loc[last.index, "run_s"])  # the last row: all of it
    proc = cli(str(stochastic), "--metric", "outer_loss", "--stat", "median", "--best", "method", "--plot",
               "--x", "oracle_calls", module="src.aggregate")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Best setting per method" in proc.stdout and (stochastic / "best.csv").exists()
    assert (stochastic / "plot_outer_loss_oracle_calls.png").stat().st_size > 5000
    assert len(pd.read_csv(stochastic / "best.csv")) == 3


def test_overlapping_paths_count_each_job_once(sweeps):
    ridge, _ = sweeps
    assert len(load_runs(ridge, ridge / "0", ridge)) == 6
    assert len(load_runs(ridge, f"{ridge}/../{ridge.name}")) == 6


@pytest.mark.parametrize(
    "edit",
    [
        {"config": "lr=0.05"},  # a config that is not a mapping
        {"maximize": 5},
        {"final": {"outer_loss": "low"}},
    ],
    ids=["config-string", "maximize-number", "final-text"],
)
def test_a_summary_of_the_wrong_shape_is_unreadable(sweeps, tmp_path, edit):
    import shutil

    ridge, _ = sweeps
    broken = tmp_path / "broken"
    shutil.copytree(ridge, broken)
    summary = json.loads((broken / "0" / "summary.json").read_text())
    (broken / "0" / "summary.json").write_text(json.dumps({**summary, **edit}))
    runs = load_runs(broken)
    assert (runs.set_index("job").loc["0", "status"]) == "unreadable"
    proc = cli(str(broken), "--metric", "outer_loss", module="src.aggregate")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 with unreadable result files: broken/0" in proc.stderr


def _drawn(fn, *args, **kwargs):
    """The figures ``fn`` saves, by file name (kept open for inspection)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    figures, real = {}, matplotlib.figure.Figure.savefig

    def keep(fig, path, **kw):
        figures[Path(path).name] = fig
        return real(fig, path, **kw)

    matplotlib.figure.Figure.savefig = keep
    try:
        fn(*args, **kwargs)
    finally:
        matplotlib.figure.Figure.savefig = real
    return figures


def test_a_figure_a_paper_can_use(stochastic, tmp_path):
    """On a log oracle-call axis every curve starts at its step-0 value (drawn at the left
    edge); curves are named by what differs, the nested run as the full-batch reference; one
    colour per method; the y axis is named in words with its scale."""
    from src.report.plots import plot
    from src.report.tables import REFERENCE

    runs, steps = load_runs(stochastic), load_steps(stochastic)
    by = ["method", "method.step_size"]
    figures = _drawn(plot, runs, steps, ["outer_loss"], by, tmp_path, "oracle_calls")
    ax = figures["plot_outer_loss_oracle_calls.png"].axes[0]
    assert ax.get_xscale() == "log" and "step 0 drawn at the left edge" in ax.get_xlabel()
    assert ax.get_ylabel().startswith("outer loss F(w, θ)")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [REFERENCE, "saba (step 0.01)", "saba (step 0.1)", "soba (step 0.01)", "soba (step 0.1)"]
    first = steps[steps["step"] == 0]
    start = first.groupby(first["method"].fillna("-"))["outer_loss"].median()
    lines = ax.get_lines()
    edge = min(line.get_xdata()[0] for line in lines)
    for label, line in zip(labels, lines, strict=True):
        method = "-" if label == REFERENCE else label.split()[0]
        assert line.get_xdata()[0] == edge  # every curve has its step 0, at the left edge
        assert line.get_ydata()[0] == pytest.approx(start[method], rel=1e-6)
    colours = {label.split()[0]: [] for label in labels}
    for label, line in zip(labels, lines, strict=True):
        colours[label.split()[0]].append(line.get_color())
    assert all(len(set(c)) == 1 for c in colours.values()) and len({c[0] for c in colours.values()}) == 3
    from src.report.tables import pretty

    shown = pretty(summarize(runs, ["outer_loss"], by), ["outer_loss"])
    assert REFERENCE in set(shown["method"]) and "-" not in set(shown["method"])


def test_many_curves_are_split_into_panels_and_the_axis_follows_the_data():
    from src.report.plots import MAX_CURVES, panels, y_scale

    frame = pd.DataFrame({"step": [0, 1], "m": [1.0, 0.5]})
    groups = [
        ((method, str(step), str(ratio)), frame.assign(m=frame["m"] * (1 + step + ratio)))
        for method in ("amigo", "saba", "soba")
        for step in (0.01, 0.1, 1.0)
        for ratio in (0.1, 1, 10, 100)
    ]
    laid = panels(groups, ["method", "method.step_size", "method.outer_ratio"], "m", higher=False)
    assert [head for head, _, _ in laid] == ["method=amigo", "method=saba", "method=soba"]
    assert all(len(mine) == MAX_CURVES and "the best 10 of 12" in note for _, mine, note in laid)
    kept = {name[1:] for name, _ in laid[0][1]}
    assert ("1.0", "100") not in kept and ("0.1", "100") not in kept and len(kept) == 10  # the two worst dropped
    assert panels(groups[:5], ["method"], "m", False) == [("", groups[:5], "")]
    assert y_scale(pd.Series([-0.01, 5.0, 300.0, 1e4]), "outer_loss")[0] == "symlog"
    assert y_scale(pd.Series([0.5, 2.0, 30.0]), "outer_loss")[0] == "linear"
    assert y_scale(pd.Series([1e-6, 1.0]), "outer_loss")[0] == "log"
    assert y_scale(pd.Series([-1.0, 0.5, 2.0]), "outer_loss")[0] == "linear"


def test_single_loop_runs_report_grad_h_sq_first(capsys):
    from src.report.progress import print_summary
    from src.report.tables import default_metrics

    runs = pd.DataFrame({"method": ["saba", None], "grad_h_sq": [1e-6, 1e-3], "outer_loss": [1.0, 2.0]})
    assert default_metrics(runs)[:2] == ["grad_h_sq", "outer_loss"]
    assert default_metrics(runs.drop(columns="method"))[0] == "outer_loss"
    summary = {"final": {"outer_loss": 1.0, "grad_h_sq": 3e-6, "hypergrad_norm": 0.1}, "status": "completed",
               "rows": 11, "objective": "quadratic_sum", "compile_s": 1.0, "run_s": 0.1}  # fmt: skip
    print_summary(summary, "out")
    assert "grad_h_sq=3e-06" in capsys.readouterr().err
