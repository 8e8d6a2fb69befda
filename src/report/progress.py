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
    shown = {k: v for k, v in final.items() if k in ("outer_loss", "hypergrad_norm", "grad_h_sq", "theta", "w")}
    shown.update({k: v for k, v in final.items() if "accuracy" in k})
    metrics = "  ".join(f"{k}={v:.6g}" for k, v in shown.items() if isinstance(v, float | int))
    print(
        f"[{summary.get('objective')}] {status}: {summary['rows'] - 1} steps  {metrics}\n"
        f"  compile {summary['compile_s']:.2f}s  run {summary['run_s']:.3f}s  -> {out_dir}",
        file=sys.stderr,
    )


class SweepProgress:
    """Progress over the batches of a sweep (jobs done, outer steps of the current batch)."""

    def __init__(self, n_jobs: int, skipped: int, n_batches: int):
        self.n_jobs, self.skipped, self.n_batches = n_jobs, skipped, n_batches
        self.tty = sys.stderr.isatty()
        self.progress = None

    def __enter__(self):
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.progress = Progress(*cols, transient=True)
            self.progress.__enter__()
            self.jobs = self.progress.add_task("jobs", total=self.n_jobs, completed=self.skipped)
            self.steps = self.progress.add_task("", total=1, visible=False)
        elif self.skipped:
            print(f"resume: {self.skipped} of {self.n_jobs} jobs already completed", file=sys.stderr)
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_batch(self, b: int, label: str, size: int, steps: int):
        import time

        self._t = time.perf_counter()
        self._line = f"batch {b + 1}/{self.n_batches} [{label}] {size} jobs"
        if self.progress is None:
            return lambda n: None
        desc = f"{self._line}: outer steps"
        self.progress.reset(self.steps, total=steps, description=desc, visible=True)
        return lambda n: self.progress.update(self.steps, advance=n)

    def end_batch(self, size: int) -> None:
        import time

        if self.progress is not None:
            self.progress.update(self.jobs, advance=size)
        else:
            print(f"{self._line}: {time.perf_counter() - self._t:.2f}s", file=sys.stderr)


def print_sweep_summary(jobs, summaries, results, *, n_batches, n_groups, skipped, wall_s, sweep_dir) -> None:
    """One screen at the end of a sweep: jobs, groups, wall time, best job, diverged jobs."""
    from src.sweep.outcome import job_status

    status = [job_status(s, r) for s, r in zip(summaries, results, strict=True)]
    rows = zip(summaries, jobs, status, strict=True)
    done = [(s["final"]["outer_loss"], j) for s, j, st in rows if st == "completed"]
    diverged = [j for j, st in zip(jobs, status, strict=True) if st == "diverged"]
    counts = f"  completed {len(done)}  diverged {len(diverged)}  failed {status.count('failed')}"
    lines = [
        f"sweep: {len(jobs)} jobs ({skipped} resumed) in {n_groups} groups, {n_batches} batches, "
        f"{wall_s:.2f}s" + (f"  -> {sweep_dir}" if sweep_dir else ""),
        counts + (f"  not run {status.count('not run')}" if "not run" in status else ""),
    ]
    if done:
        loss, best = min(done, key=lambda lj: lj[0])
        lines.append(f"  best: job {best.name} outer_loss={loss:.6g}  {' '.join(best.overrides)}")
    for j in diverged[:3]:
        lines.append(f"  diverged: job {j.name}  {' '.join(j.overrides)}")
    if len(diverged) > 3:
        lines.append(f"  ... and {len(diverged) - 3} more diverged")
    print("\n".join(lines), file=sys.stderr)
