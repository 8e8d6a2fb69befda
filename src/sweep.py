"""Many jobs at once: validate all, skip completed ones, group by static config, run.

``run_sweep`` is what the batched launcher calls (as the task function's ``run_batch``):
it gets each job's config and output directory explicitly, since Hydra's
``HydraConfig`` describes one job per process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from src.batching import TIMINGS, Job, group_by_static, run_batch, static_label, timed, wandb_config
from src.config import ConfigError, validate
from src.tracking import read_summary, write_json
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


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop) ends the sweep like Ctrl-C: the batch in flight is
    abandoned, cleanup runs, files already written stay complete."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run_sweep(
    entries: Sequence[tuple],
    *,
    max_batch_size: int = 1024,
    resume: bool = True,
    sweep_dir: Path | None = None,
    stats: dict | None = None,
    validated: list | None = None,
) -> list:
    """Run ``(config, output_dir, overrides)`` entries; returns each job's final outer loss
    (or the exception that stopped its batch), in order."""
    from src.batching import COMPILATIONS, enable_compilation_cache
    from src.progress import print_sweep_summary

    t0 = time.perf_counter()
    compiled_before = COMPILATIONS["count"]
    _stop_on_sigterm()
    with timed("validate_s"):
        runs = validated if validated is not None else validate_all(entries)
    enable_compilation_cache()
    jobs = [Job(r, Path(out), tuple(ovs), Path(out).name) for r, (_, out, ovs) in zip(runs, entries, strict=True)]
    results: list = [None] * len(jobs)
    summaries: list = [None] * len(jobs)
    pending = []
    for i, job in enumerate(jobs):
        done = read_summary(job.out_dir) if resume else None
        if done is not None and done.get("status") in ("completed", "diverged"):
            results[i], summaries[i] = done["final"]["outer_loss"], done
        else:
            pending.append(i)
    groups = group_by_static([jobs[i].run for i in pending])
    batches = []
    for static, members in groups.items():
        members = [pending[m] for m in members]
        for start in range(0, len(members), max_batch_size):
            batches.append((static, members[start : start + max_batch_size], min(len(members), max_batch_size)))
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

    print_sweep_summary(
        jobs,
        summaries,
        results,
        n_batches=len(batches),
        n_groups=len(groups),
        skipped=len(jobs) - len(pending),
        wall_s=wall_s,
        sweep_dir=sweep_dir,
    )
    if sweep_dir is not None:
        status = [s["status"] if s else "failed" for s in summaries]
        write_json(
            Path(sweep_dir) / "sweep_summary.json",
            {
                "jobs": len(jobs),
                "resumed": len(jobs) - len(pending),
                "groups": len(groups),
                "batches": [{"label": static_label(st), "jobs": [jobs[i].name for i in m]} for st, m, _ in batches],
                "compiled_programs": COMPILATIONS["count"] - compiled_before,
                "completed": status.count("completed"),
                "diverged": status.count("diverged"),
                "failed": status.count("failed"),
                "wall_s": wall_s,
                "phases_s": dict(TIMINGS),
                **(stats or {}),
            },
        )
    return results


def _run_batches(jobs, batches, results, summaries, n_pending, writer) -> None:
    from src.progress import SweepProgress

    with SweepProgress(len(jobs), len(jobs) - n_pending, len(batches)) as progress:
        for b, (static, members, pad_to) in enumerate(batches):
            steps = jobs[members[0]].run.tree["outer_steps"]
            advance = progress.start_batch(b, static_label(static), len(members), steps)
            info = {"id": b, "label": static_label(static)}
            try:
                batch = [jobs[i] for i in members]
                done = run_batch(batch, on_steps=advance, batch_info=info, pad_to=pad_to, writer=writer)
            except Exception as exc:  # noqa: BLE001 - the batch's jobs fail, the sweep goes on
                print(f"batch {b} ({static_label(static)}) failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                for i in members:
                    results[i] = exc
                progress.end_batch(len(members))
                continue
            for i, summary in zip(members, done, strict=True):
                summaries[i], results[i] = summary, summary["final"]["outer_loss"]
            progress.end_batch(len(members))
