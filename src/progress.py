"""Console output: a progress bar while work runs and a short summary after it."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def step_progress(total: int, label: str):
    """Yield ``advance(n)``; shows a rich progress bar on a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(f"{label}: compiling", total=total)

        def advance(n: int) -> None:
            progress.update(task, advance=n, description=f"{label}: outer steps")

        yield advance


def print_summary(summary: dict, out_dir) -> None:
    final = summary["final"]
    status = summary["status"]
    if summary.get("diverged_step") is not None:
        status += f" at step {summary['diverged_step']}"
    shown = {k: v for k, v in final.items() if k in ("outer_loss", "hypergrad_norm", "theta", "w")}
    shown.update({k: v for k, v in final.items() if "accuracy" in k})
    metrics = "  ".join(f"{k}={v:.6g}" for k, v in shown.items() if isinstance(v, float | int))
    print(
        f"[{summary.get('objective')}] {status}: {summary['rows'] - 1} steps  {metrics}\n"
        f"  compile {summary['compile_s']:.2f}s  run {summary['run_s']:.3f}s  -> {out_dir}",
        file=sys.stderr,
    )
