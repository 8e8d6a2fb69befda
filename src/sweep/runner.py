"""Many jobs at once: validate all, skip completed ones, group by static config, run.

``run_sweep`` is what the batched launcher calls (as the task function's ``run_sweep``):
it gets each job's config and output directory explicitly, since Hydra's
``HydraConfig`` describes one job per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from src.config import ConfigError, flatten, validate
from src.report.wandb_runs import WandbWriter
from src.sweep import interrupts
from src.sweep.batching import run_batch
from src.sweep.checkpoints import DEFAULT_EVERY_S, remove_checkpoints
from src.sweep.defaults import MAX_BATCH_SIZE
from src.sweep.files import (
    complete_result,
    provenance,
    read_json,
    read_summary,
    stored_fingerprint,
    write_json,
)
from src.sweep.outcome import BatchFailed, job_status, job_value
from src.sweep.plan import Job, group_labels, job_data, plan_batches, release_data, unused_seeds
from src.sweep.preflight import refuse
from src.sweep.programs import Clock, Programs
from src.sweep.record import wandb_config


def _where(entries, i: int) -> str:
    _, out_dir, overrides = entries[i]
    return f"job {Path(out_dir).name} ({' '.join(overrides)})" if len(entries) > 1 else "config"


def validate_all(entries, clock: Clock | None = None) -> list:
    """Validate every job before any work, and build every job's data (options that only
    the data can check, such as sizes, fail here); a bad job stops the sweep with its
    message."""
    runs = []
    for i, (cfg, _, _) in enumerate(entries):
        try:
            runs.append(validate(cfg))
        except ConfigError as err:
            refuse(f"Error in {_where(entries, i)}: {err}")
    with (clock or Clock()).timed("data_s"):
        for i, run in enumerate(runs):
            try:
                job_data(run)  # memoized: the batch uses these arrays
            except ConfigError as err:  # an option that only the data can check (batch_size)
                refuse(f"Error in {_where(entries, i)}: {err}")
            except Exception as exc:  # noqa: BLE001 - any failure of the objective's data function
                refuse(f"Error in {_where(entries, i)}: its data cannot be built: {type(exc).__name__}: {exc}")
    return runs


def _differences(old: dict, new: dict, limit: int = 4) -> str:
    a, b = flatten(old), flatten(new)
    keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    shown = [f"{k} {a.get(k, '<absent>')!r} (stored) vs {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    return ", ".join(shown + ([f"{len(keys) - limit} more"] if len(keys) > limit else [])) or "the config"


def check_job_dirs(entries, runs, overwrite: bool = False) -> None:
    """Before any job directory is written: every job has its own directory, and none
    holds results of other settings (unless ``overwrite``: those jobs then run again)."""
    first: dict[Path, int] = {}
    for i, (_, out_dir, _) in enumerate(entries):
        key = Path(out_dir).resolve()
        if key in first:
            a, b = (f"#{j} ({' '.join(entries[j][2])})" for j in (first[key], i))
            refuse(
                f"Error: jobs {a} and {b} write to the same directory {key}; "
                "each job needs its own (hydra.sweep.subdir, default ${hydra.job.num})."
            )
        first[key] = i
    if overwrite:
        return
    conflicts = []
    for (_, out_dir, _), run in zip(entries, runs, strict=True):
        stored = read_summary(out_dir)
        if isinstance(stored, dict) and stored.get("config") is not None:
            if stored_fingerprint(stored) != run.fingerprint:
                conflicts.append(f"job {Path(out_dir).name}: {_differences(stored['config'], run.tree)}")
    sweep_dir = Path(entries[0][1]).parent
    if conflicts:
        listed = "; ".join(conflicts[:3]) + (f"; and {len(conflicts) - 3} more jobs" if len(conflicts) > 3 else "")
        refuse(
            f"Error: {sweep_dir} holds results of other settings for {len(conflicts)} of {len(entries)} jobs "
            f"({listed}).\n  Choose a new hydra.sweep.dir, or pass hydra.launcher.overwrite=true to replace them."
        )
    interrupted = _interrupted_elsewhere(entries, sweep_dir)
    if interrupted:
        refuse(
            f"Error: {sweep_dir} holds an interrupted batch of other settings, its progress in "
            f"{sweep_dir / '.checkpoints'} ({interrupted}).\n  Rerun that sweep's own command to resume it, choose "
            "a new hydra.sweep.dir, or pass hydra.launcher.overwrite=true to discard it."
        )


def _interrupted_elsewhere(entries, sweep_dir: Path) -> str | None:
    """Where a sweep directory holds a mid-batch checkpoint and a job directory was started
    with other overrides than this sweep gives it: the first such job, else None. (Running
    this sweep there would take those directories and leave the checkpoint unresumable.)"""
    import yaml

    if not any((sweep_dir / ".checkpoints").glob("*.npz")):
        return None
    for _, out_dir, overrides in entries:
        try:
            stored = yaml.safe_load((Path(out_dir) / ".hydra" / "overrides.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(stored, list) and stored != list(overrides):
            return f"job {Path(out_dir).name}: {' '.join(map(str, stored))}"
    return None


def make_jobs(entries, runs) -> list[Job]:
    return [Job(r, Path(out), tuple(ovs), Path(out).name) for r, (_, out, ovs) in zip(runs, entries, strict=True)]


def resumed(jobs: Sequence[Job], resume: bool) -> dict[int, dict]:
    """Summaries of the jobs a resumed sweep skips, by index: those whose directory holds a
    complete, readable result set (completed or diverged) of exactly this job's config."""
    done = {}
    for i, job in enumerate(jobs if resume else ()):
        summary = complete_result(job.out_dir)
        if summary is not None and stored_fingerprint(summary) == job.run.fingerprint:
            done[i] = summary
    return done


def run_sweep(
    entries: Sequence[tuple],
    *,
    max_batch_size: int = MAX_BATCH_SIZE,
    resume: bool = True,
    sweep_dir: Path | None = None,
    stats: dict | None = None,
    validated: list | None = None,
    summary_file: str | None = "sweep_summary.json",
    append_summary: bool = False,
    handle_signals: bool = True,
    programs: Programs | None = None,
    checkpoint_every_s: float | None = DEFAULT_EVERY_S,
    stops: interrupts.Stops | None = None,
) -> list:
    """Run ``(config, output_dir, overrides)`` entries; returns each job's final outer loss
    (or the exception that stopped its batch), in order.

    ``summary_file=None`` writes no sweep summary and ``handle_signals=False`` leaves the
    signal handlers to the caller: how a batch runs under submitit, which owns them and
    requeues (``src.sweep.executors.BatchTask`` keeps submitit's handler and records it).
    ``programs``: compiled programs to reuse (a launcher keeps them across the launches of
    one multirun). A batch run in chunks checkpoints when stopped and every
    ``checkpoint_every_s`` seconds (None: only when stopped), and resumes from its
    checkpoint (:mod:`src.sweep.checkpoints`)."""
    programs = programs if programs is not None else Programs()
    provenance.cache_clear()  # the git state is read once per sweep
    recorded = interrupts.recorded_signals() if handle_signals else contextlib.nullcontext(stops or interrupts.Stops())
    try:
        with recorded as owned:
            return _sweep(
                entries, max_batch_size, resume, sweep_dir, stats, validated, summary_file, append_summary, programs,
                checkpoint_every_s, owned,
            )  # fmt: skip
    finally:
        release_data()


@dataclasses.dataclass
class Sweep:
    """A planned sweep and what became of each of its jobs: what the stages (plan ->
    execute, in-process or on submitit -> record -> report) hand each other."""

    jobs: list[Job]
    done: dict[int, dict]  # the jobs resumed: their summaries, by index
    groups: dict  # static config -> job indices
    batches: list  # (static, job indices, grid shape)
    summaries: list  # each job's summary once it has complete results
    results: list  # each job's return value to Hydra (a loss, Diverged, BatchFailed)

    @property
    def pending(self) -> list[int]:
        return [i for i in range(len(self.jobs)) if i not in self.done]


def plan_sweep(entries, runs, resume: bool, max_batch_size: int) -> Sweep:
    """The plan stage: jobs, the ones resumed, groups and batches."""
    jobs = make_jobs(entries, runs)
    done = resumed(jobs, resume)
    pending = [i for i in range(len(jobs)) if i not in done]
    groups, batches = plan_batches(jobs, pending, max_batch_size)
    summaries = [done.get(i) for i in range(len(jobs))]
    results = [job_value(jobs[i], done[i]) if i in done else None for i in range(len(jobs))]
    return Sweep(jobs, done, groups, batches, summaries, results)


def _sweep(
    entries, max_batch_size, resume, sweep_dir, stats, validated, summary_file, append_summary, programs,
    checkpoint_every_s, stops,
) -> list:  # fmt: skip
    from src.sweep.programs import enable_compilation_cache

    t0, clock, built = time.perf_counter(), Clock(), programs.built
    with clock.timed("validate_s"):
        runs = validated if validated is not None else validate_all(entries, clock)
    enable_compilation_cache()
    warning = unused_seeds(runs)
    if warning:
        print(warning, file=sys.stderr)
    sweep = plan_sweep(entries, runs, resume, max_batch_size)
    jobs, pending = sweep.jobs, sweep.pending
    settings = dict(runs[0].wandb) if runs else {"mode": "disabled"}
    if sweep_dir is not None and not settings.get("group"):
        settings["group"] = Path(sweep_dir).name

    def report(**more) -> None:
        report_sweep(
            sweep,
            wall_s=time.perf_counter() - t0,
            sweep_dir=sweep_dir,
            path=None if sweep_dir is None or summary_file is None else Path(sweep_dir) / summary_file,
            append=append_summary,
            compiled_programs=programs.built - built,
            phases_s=dict(clock.seconds),  # this launch's
            **(stats or {}),
            **more,
        )

    writer = None
    try:
        writer = WandbWriter(settings, workers=2 if len(pending) > 1 else 0)
        writer.plan([(jobs[i].out_dir, *wandb_config(jobs[i])) for _, members, _ in sweep.batches for i in members])
        _run_batches(sweep, writer, programs, clock, checkpoint_every_s, stops)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: keep what completed, say how to resume
        with interrupts.deferred():
            for k, summary in resumed([jobs[i] for i in pending], True).items():  # written before the stop
                i = pending[k]
                sweep.summaries[i], sweep.results[i] = summary, job_value(jobs[i], summary)
            if writer is not None:
                writer.abort()
            report(interrupted=True)
            kept = sum(s is not None for s in sweep.summaries)
            print(
                f"Interrupted: {kept} of {len(jobs)} jobs have complete results, kept. "
                "Rerun the same command to resume: completed jobs are skipped"
                + (", a batch run in chunks goes on from its checkpoint." if _chunked(sweep) else "."),
                file=sys.stderr,
            )
        raise interrupts.Interrupted(str(exc)) from None
    except BaseException:  # a requeue's SystemExit, an error: runs of completed jobs are kept
        if writer is not None:
            with contextlib.suppress(Exception):  # never in place of the exception that stopped the sweep
                writer.close()
        raise
    with clock.timed("wandb_wait_s"):  # waiting for the last wandb runs once the batches are done
        writer.close()
    report()
    return sweep.results


def report_sweep(sweep: Sweep, *, wall_s, sweep_dir, path, append, batch_info=None, **fields) -> None:
    """The report stage: one screen on stderr and, where ``path`` is given, the sweep's
    summary file (``batch_info``: extra fields per batch, in order)."""
    from src.report.progress import print_sweep_summary

    print_sweep_summary(
        sweep.jobs,
        sweep.summaries,
        sweep.results,
        n_batches=len(sweep.batches),
        n_groups=len(sweep.groups),
        skipped=len(sweep.done),
        wall_s=wall_s,
        sweep_dir=sweep_dir,
    )
    if path is None:
        return
    if sweep_dir is not None and all(s is not None for s in sweep.summaries):
        remove_checkpoints(sweep_dir)  # every job has its results: nothing left to resume
    extra = batch_info or [{}] * len(sweep.batches)
    labels = group_labels(list(sweep.groups))
    listed = [
        {"label": labels[st], "jobs": [sweep.jobs[i].name for i in m], **more}
        for (st, m, _), more in zip(sweep.batches, extra, strict=True)
    ]
    write_sweep_summary(
        path,
        sweep.jobs,
        sweep.summaries,
        sweep.results,
        append,
        batches=listed,
        resumed=len(sweep.done),
        groups=len(sweep.groups),
        wall_s=wall_s,
        **fields,
    )


def write_sweep_summary(path: Path, jobs, summaries, results, append: bool = False, **fields) -> None:
    """The sweep's summary file. ``append``: a later launch of the same multirun (a sweeper
    such as optuna launches one round of jobs at a time) adds to what earlier ones wrote."""
    status = [job_status(s, r) for s, r in zip(summaries, results, strict=True)]
    counts = {k.replace(" ", "_"): status.count(k) for k in ("completed", "diverged", "failed", "not run")}
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


def _chunked(sweep: Sweep) -> bool:
    return any(sweep.jobs[i].run.tree.get("chunk_steps") for i in sweep.pending)


def _run_batches(
    sweep: Sweep, writer, programs: Programs, clock: Clock, checkpoint_every_s=DEFAULT_EVERY_S, stops=None
) -> None:
    """The in-process execute stage: one batch after another, each job's files and wandb
    run recorded as its batch ends (``src.sweep.batching.run_batch``)."""
    from src.report.progress import SweepProgress

    jobs, batches = sweep.jobs, sweep.batches
    labels = group_labels([static for static, _, _ in batches])
    with SweepProgress(len(jobs), len(sweep.done), len(batches)) as progress:
        for b, (static, members, shape) in enumerate(batches):
            stops.check()  # a stop whose exception was dropped (see src.sweep.interrupts)
            steps = jobs[members[0]].run.tree["outer_steps"]
            advance = progress.start_batch(b, labels[static], len(members), steps)
            info = {"id": b, "label": labels[static]}
            try:
                batch = [jobs[i] for i in members]
                done = run_batch(
                    batch,
                    on_steps=advance,
                    batch_info=info,
                    shape=shape,
                    writer=writer,
                    programs=programs,
                    clock=clock,
                    checkpoints=True,
                    checkpoint_every_s=checkpoint_every_s,
                    stops=stops,
                )
            except Exception as exc:  # noqa: BLE001 - the batch's jobs fail, the sweep goes on
                stops.check(cause=exc)  # a signal's exception that a library turned into its own
                failure = BatchFailed(f"batch {b} ({labels[static]}) failed: {type(exc).__name__}: {exc}")
                failure.__cause__ = exc
                print(failure, file=sys.stderr)
                for i in members:
                    sweep.results[i] = failure
                progress.end_batch(len(members))
                continue
            for i, summary in zip(members, done, strict=True):
                sweep.summaries[i], sweep.results[i] = summary, job_value(jobs[i], summary)
            progress.end_batch(len(members))
    stops.check()
