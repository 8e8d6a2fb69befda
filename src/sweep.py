"""Many jobs at once: validate all, skip completed ones, group by static config, run.

``run_sweep`` is what the batched launcher calls (as the task function's ``run_batch``):
it gets each job's config and output directory explicitly, since Hydra's
``HydraConfig`` describes one job per process.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from src import interrupts
from src.batching import TIMINGS, Job, group_by_static, run_batch, static_label, timed, wandb_config
from src.config import ConfigError, validate
from src.tracking import read_json, read_summary, write_json
from src.wandb_runs import WandbWriter


def validate_all(entries) -> list:
    """Validate every job before any work; a bad one stops the sweep with its message."""
    runs = []
    for cfg, out_dir, overrides in entries:
        try:
            runs.append(validate(cfg))
        except ConfigError as err:
            where = f"job {Path(out_dir).name} ({' '.join(overrides)})" if len(entries) > 1 else "config"
            print(f"Error in {where}: {err}\nNothing was run.", file=sys.stderr)
            sys.exit(2)
    return runs


def make_jobs(entries, runs) -> list[Job]:
    return [Job(r, Path(out), tuple(ovs), Path(out).name) for r, (_, out, ovs) in zip(runs, entries, strict=True)]


def resumed(jobs: Sequence[Job], resume: bool) -> dict[int, dict]:
    """Summaries of the jobs a resumed sweep skips (completed or diverged), by index."""
    done = {}
    for i, job in enumerate(jobs):
        summary = read_summary(job.out_dir) if resume else None
        if summary is not None and summary.get("status") in ("completed", "diverged"):
            done[i] = summary
    return done


def plan_batches(jobs: Sequence[Job], pending: Sequence[int], max_batch_size: int):
    """Group pending jobs by static config and cut groups into batches of at most
    ``max_batch_size``: ``(groups, [(static, job indices, padded size)])``."""
    groups = group_by_static([jobs[i].run for i in pending])
    batches = []
    for static, members in groups.items():
        members = [pending[m] for m in members]
        for start in range(0, len(members), max_batch_size):
            batches.append((static, members[start : start + max_batch_size], min(len(members), max_batch_size)))
    return groups, batches


def run_sweep(
    entries: Sequence[tuple],
    *,
    max_batch_size: int = 1024,
    resume: bool = True,
    sweep_dir: Path | None = None,
    stats: dict | None = None,
    validated: list | None = None,
    summary_file: str | None = "sweep_summary.json",
    append_summary: bool = False,
    handle_signals: bool = True,
) -> list:
    """Run ``(config, output_dir, overrides)`` entries; returns each job's final outer loss
    (or the exception that stopped its batch), in order.

    ``summary_file=None`` writes no sweep summary and ``handle_signals=False`` leaves the
    signal handlers to the caller: how a batch runs under submitit, which owns them and
    requeues (``src.executors.BatchTask`` keeps submitit's handler and records it)."""
    with interrupts.recorded_signals() if handle_signals else contextlib.nullcontext():
        return _sweep(entries, max_batch_size, resume, sweep_dir, stats, validated, summary_file, append_summary)


def _sweep(entries, max_batch_size, resume, sweep_dir, stats, validated, summary_file, append_summary) -> list:
    from src.batching import COMPILATIONS, enable_compilation_cache

    t0 = time.perf_counter()
    compiled_before, phases_before = COMPILATIONS["count"], dict(TIMINGS)
    with timed("validate_s"):
        runs = validated if validated is not None else validate_all(entries)
    enable_compilation_cache()
    jobs = make_jobs(entries, runs)
    results: list = [None] * len(jobs)
    summaries: list = [None] * len(jobs)
    done = resumed(jobs, resume)
    for i, summary in done.items():
        results[i], summaries[i] = summary["final"]["outer_loss"], summary
    pending = [i for i in range(len(jobs)) if i not in done]
    groups, batches = plan_batches(jobs, pending, max_batch_size)
    settings = dict(runs[0].wandb) if runs else {"mode": "disabled"}
    if sweep_dir is not None and not settings.get("group"):
        settings["group"] = Path(sweep_dir).name
    writer = WandbWriter(settings, workers=2 if len(pending) > 1 else 0)
    writer.plan([(jobs[i].out_dir, *wandb_config(jobs[i])) for _, members, _ in batches for i in members])
    try:
        _run_batches(jobs, batches, results, summaries, len(pending), writer)
    finally:
        with timed("wandb_wait_s"):  # waiting for the last wandb runs once the batches are done
            writer.close()
    wall_s = time.perf_counter() - t0

    report_sweep(
        jobs,
        summaries,
        results,
        groups,
        batches,
        skipped=len(done),
        wall_s=wall_s,
        sweep_dir=sweep_dir,
        path=None if sweep_dir is None or summary_file is None else Path(sweep_dir) / summary_file,
        append=append_summary,
        compiled_programs=COMPILATIONS["count"] - compiled_before,
        phases_s={k: v - phases_before.get(k, 0.0) for k, v in TIMINGS.items()},  # this launch's
        **(stats or {}),
    )
    return results


def report_sweep(
    jobs, summaries, results, groups, batches, *, skipped, wall_s, sweep_dir, path, append, batch_info=None, **fields
) -> None:
    """The end of a sweep: one screen on stderr and, where ``path`` is given, the sweep's
    summary file (``batch_info``: extra fields per batch, in order)."""
    from src.progress import print_sweep_summary

    print_sweep_summary(
        jobs,
        summaries,
        results,
        n_batches=len(batches),
        n_groups=len(groups),
        skipped=skipped,
        wall_s=wall_s,
        sweep_dir=sweep_dir,
    )
    if path is None:
        return
    extra = batch_info or [{}] * len(batches)
    listed = [
        {"label": static_label(st), "jobs": [jobs[i].name for i in m], **more}
        for (st, m, _), more in zip(batches, extra, strict=True)
    ]
    write_sweep_summary(
        path, jobs, summaries, append, batches=listed, resumed=skipped, groups=len(groups), wall_s=wall_s, **fields
    )


def write_sweep_summary(path: Path, jobs, summaries, append: bool = False, **fields) -> None:
    """The sweep's summary file. ``append``: a later launch of the same multirun (a sweeper
    such as optuna launches one round of jobs at a time) adds to what earlier ones wrote."""
    status = [s["status"] if s else "failed" for s in summaries]
    counts = {k: status.count(k) for k in ("completed", "diverged", "failed")}
    new = {"jobs": len(jobs), **counts, **fields, "launches": 1}
    old = read_json(path) if append else None
    if old:
        for key, value in new.items():
            if key in old and isinstance(value, list):
                new[key] = old[key] + value
            elif key in old and isinstance(value, dict):
                new[key] = {k: old[key].get(k, 0) + value.get(k, 0) for k in old[key] | value}
            elif key in old and isinstance(value, int | float) and not isinstance(value, bool):
                new[key] = old[key] + value
    write_json(path, new)


def _run_batches(jobs, batches, results, summaries, n_pending, writer) -> None:
    from src.progress import SweepProgress

    with SweepProgress(len(jobs), len(jobs) - n_pending, len(batches)) as progress:
        for b, (static, members, pad_to) in enumerate(batches):
            interrupts.check()  # a stop whose exception was dropped (see src.interrupts)
            steps = jobs[members[0]].run.tree["outer_steps"]
            advance = progress.start_batch(b, static_label(static), len(members), steps)
            info = {"id": b, "label": static_label(static)}
            try:
                batch = [jobs[i] for i in members]
                done = run_batch(batch, on_steps=advance, batch_info=info, pad_to=pad_to, writer=writer)
            except Exception as exc:  # noqa: BLE001 - the batch's jobs fail, the sweep goes on
                interrupts.check(cause=exc)  # a signal's exception that a library turned into its own
                print(f"batch {b} ({static_label(static)}) failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                for i in members:
                    results[i] = exc
                progress.end_batch(len(members))
                continue
            for i, summary in zip(members, done, strict=True):
                summaries[i], results[i] = summary, summary["final"]["outer_loss"]
            progress.end_batch(len(members))
    interrupts.check()
