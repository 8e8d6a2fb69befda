"""Batches as submitit jobs: ``hydra.launcher.executor=submitit_local|submitit_slurm``.

The launcher composes every job, validates them all and writes their ``.hydra`` files
here, in the submitting process; the jobs are grouped and cut into batches exactly as
in-process (``src.sweep.plan.plan_batches``), and each batch becomes one submitit job (one
SLURM array task) that runs ``run_sweep`` on its jobs: one vmapped program, each job
writing its own directory, files and wandb run. The submitting process waits, reads the
jobs' summaries back and hands Hydra one ``JobReturn`` per job.

Pre-emption and time limits: submitit sends USR2 ``signal_delay_s`` before the limit (or on
pre-emption), calls :meth:`BatchTask.checkpoint` and requeues the same batch (up to
``max_num_timeout`` times); on the way out, a batch run in chunks saves its state at its
last chunk boundary (:mod:`src.sweep.checkpoints`), and the requeued attempt goes on from there.
Jobs whose ``summary.json`` says completed are skipped; a job interrupted while its files
were being written has them removed (see ``src.sweep.record.write_job``), so no job directory is
left with a partial set of results. Where SLURM keeps no accounting, the submitting process
follows the batches through their result files and ``squeue`` (:func:`_result`).
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import time
from pathlib import Path

from src.sweep.outcome import BatchFailed
from src.sweep.runner import plan_sweep, report_sweep

POLL_S = 1.0  # how often the submitting process looks at its batches


def _option_names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """hydra-submitit-launcher's option names (from its config dataclasses): those of every
    executor and those of SLURM only. ``nodes`` and ``tasks_per_node`` are fixed here (a
    batch is one process), the folder and requeue count are given to the executor itself."""
    from dataclasses import fields

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf

    fixed = {"submitit_folder", "nodes", "tasks_per_node", "_target_", "max_num_timeout"}
    base = tuple(f.name for f in fields(BaseQueueConf) if f.name not in fixed)
    slurm = tuple(f.name for f in fields(SlurmQueueConf) if f.name not in fixed and f.name not in base)
    return base, slurm


def make_executor(kind: str, options: dict):
    """A submitit executor for ``kind`` (submitit_local | submitit_slurm) from the
    launcher's options, named as hydra-submitit-launcher names them."""
    try:
        import submitit

        base, slurm = _option_names()
    except ImportError as exc:
        raise ImportError(f"hydra.launcher.executor={kind} needs submitit: pip install -e '.[cluster]'") from exc
    from omegaconf import OmegaConf

    options = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in options.items()}
    cluster = kind.removeprefix("submitit_")
    executor = submitit.AutoExecutor(
        folder=options["submitit_folder"], cluster=cluster, **{f"{cluster}_max_num_timeout": options["max_num_timeout"]}
    )
    params = {k: options[k] for k in base if options.get(k) is not None}
    params.update(tasks_per_node=1, nodes=1)  # a batch is one process: one vmapped program
    if cluster == "slurm":
        params.update({f"slurm_{k}": options[k] for k in slurm if options.get(k) is not None})
    elif options.get("setup"):
        params["local_setup"] = options["setup"]
    executor.update_parameters(**params)
    return executor


def _sacct_missing() -> bool:
    """On a cluster without accounting (``AccountingStorageType=accounting_storage/none``)
    every ``sacct`` fails: sacct prints "Slurm accounting storage is disabled" and submitit
    warns "Bypassing sacct error ..., status may be inaccurate", several times per poll.
    Checked once, and said in one line; the batches are then followed through their result
    files and ``squeue``, without sacct (:func:`_result`), and submitit's warnings about it
    are dropped (:class:`_QuietSacct`)."""
    import subprocess

    try:
        probe = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    return probe.returncode != 0


class _QuietSacct(logging.Filter):
    """Drops submitit's "Bypassing sacct error" warnings while installed."""

    def __init__(self) -> None:
        super().__init__()
        logging.getLogger("submitit").addFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()

    def remove(self) -> None:
        logging.getLogger("submitit").removeFilter(self)


def _queued(job_id: str) -> bool:
    """Whether SLURM still holds the job (pending, running, requeued...)."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True  # cannot tell: keep waiting
    return out.returncode == 0 and bool(out.stdout.strip())


def _result(job, without_sacct: bool):
    """The batch's return value. Without sacct: waited for through its result file and
    ``squeue``; a batch that left the queue without a result (``scancel``, a lost node)
    fails instead of being waited for forever."""
    gone = 0
    while without_sacct and not job.paths.result_pickle.exists():
        gone = 0 if _queued(job.job_id) else gone + 1
        if gone >= 3:  # out of the queue for three polls, and still no result file
            raise RuntimeError(
                f"SLURM job {job.job_id} left the queue without a result (cancelled or killed); "
                "rerun the same command to resume it"
            )
        time.sleep(POLL_S)
    return job.results()[0]


class BatchTask:
    """One batch as a submitit callable; checkpointable, so a pre-empted batch is requeued."""

    def __init__(
        self, run_sweep, entries: list, sweep_dir: Path, hydra_state: dict, resume: bool = True, every_s=None
    ) -> None:
        self.run_sweep, self.entries, self.sweep_dir, self.hydra_state = run_sweep, entries, sweep_dir, hydra_state
        self.resume, self.every_s = resume, every_s

    def __call__(self) -> list:
        from submitit.core.job_environment import JobEnvironment

        from src.sweep.interrupts import recorded_signals

        # submitit's USR2 handler (checkpoint, requeue, exit) stays, recorded: an exit that
        # Python drops (the handler ran inside jax's gc callback) still ends the batch. SIGTERM
        # (scancel, the end of a time limit or a grace period) stops it; both save a chunked
        # batch's checkpoint on the way out (src.sweep.checkpoints)
        with recorded_signals(stop=(signal.SIGTERM,), wrap=(JobEnvironment._usr_sig(),)) as stops:
            import jax  # noqa: F401 - imported before the line below, which tests wait for
            from hydra.core.singleton import Singleton

            Singleton.set_state(self.hydra_state)  # Hydra's config store and HydraConfig, as submitted
            print(f"batch of {len(self.entries)} jobs: {', '.join(Path(e[1]).name for e in self.entries)}", flush=True)
            return self.run_sweep(
                self.entries,
                max_batch_size=len(self.entries),
                resume=self.resume,
                sweep_dir=self.sweep_dir,
                summary_file=None,  # the submitting process writes the sweep's summary
                handle_signals=False,  # submitit owns the signals (USR2: checkpoint and requeue)
                stops=stops,  # what their handlers raised, recorded above
                checkpoint_every_s=self.every_s,
            )

    def checkpoint(self):
        import submitit

        # the requeued batch always resumes: it skips the jobs this attempt completed
        again = BatchTask(self.run_sweep, self.entries, self.sweep_dir, self.hydra_state, True, self.every_s)
        return submitit.helpers.DelayedSubmission(again)


def run_on_submitit(launcher, entries: list, runs: list, sweep_dir: Path, stats: dict, append: bool = False) -> list:
    """Run a multirun's jobs as one submitit job per batch; returns each job's final outer
    loss (or the exception that stopped its batch), in order."""
    from hydra.core.singleton import Singleton

    from src.sweep.files import complete_result

    t0 = time.perf_counter()
    sweep = plan_sweep(entries, runs, launcher.resume, launcher.max_batch_size)
    submitted = []
    if sweep.batches:
        executor = make_executor(launcher.executor, launcher.submitit)
        state = Singleton.get_state()
        run_sweep = launcher.task_function.run_sweep
        tasks = [
            BatchTask(
                run_sweep, [entries[i] for i in m], sweep_dir, state, launcher.resume, launcher.checkpoint_every_s
            )
            for _, m, _ in sweep.batches
        ]
        try:
            submitted = executor.submit_array(tasks)
        except Exception as exc:  # noqa: BLE001 - sbatch refused (a partition, no cluster): nothing runs
            from src.sweep.preflight import refuse

            refuse(f"Error: {launcher.executor} refused the batches: {reason(exc)}")
        ids = ", ".join(job.job_id for job in submitted)
        print(f"submitted {len(tasks)} batch(es) to {launcher.executor}: {ids}", file=sys.stderr)
    quiet = None  # installed where sacct fails: then batches are followed without it
    if submitted and launcher.executor == "submitit_slurm" and _sacct_missing():
        quiet = _QuietSacct()
        print("SLURM accounting (sacct) is off on this cluster: batches are followed through squeue "
              "and their result files", file=sys.stderr)  # fmt: skip

    def report(**more) -> None:
        report_sweep(
            sweep,
            wall_s=time.perf_counter() - t0,
            sweep_dir=sweep_dir,
            path=Path(sweep_dir) / "sweep_summary.json",
            append=append,
            batch_info=[{"submitit_job_id": job.job_id} for job in submitted],
            executor=launcher.executor,
            **stats,
            **more,
        )

    try:
        for (_, members, _), job in zip(sweep.batches, submitted, strict=True):
            try:
                values = _result(job, without_sacct=quiet is not None)
            except Exception as exc:  # noqa: BLE001 - the batch's jobs fail, the sweep goes on
                failure = BatchFailed(f"batch {job.job_id} failed: {reason(exc)}")
                failure.__cause__ = exc
                values = [failure] * len(members)
            said = {str(v) for v in values if isinstance(v, BaseException)}
            for text in sorted(said):  # a batch's failure in one line, as a local sweep says it
                print(text if text.startswith("batch") else f"batch {job.job_id} failed: {text}", file=sys.stderr)
            for i, value in zip(members, values, strict=True):
                sweep.results[i] = value
                sweep.summaries[i] = complete_result(sweep.jobs[i].out_dir)  # complete result sets only
    except KeyboardInterrupt:  # Ctrl-C of the submitting process: the batches are cancelled
        from src.sweep import interrupts

        with interrupts.deferred():
            cancel = [job for job in submitted if not job.done()]
            for job in cancel:
                job.cancel(check=False)  # SIGTERM: a batch in chunks saves its checkpoint first
            for i, job in enumerate(sweep.jobs):
                sweep.summaries[i] = sweep.summaries[i] or complete_result(job.out_dir)
            report(interrupted=True, cancelled=[job.job_id for job in cancel])
            kept = sum(s is not None for s in sweep.summaries)
            ids = ", ".join(job.job_id for job in cancel) or "none"
            print(
                f"Interrupted: cancelled the {len(cancel)} submitted batch(es) still queued or running "
                f"({launcher.executor} jobs {ids}); {kept} of {len(sweep.jobs)} jobs have complete results, kept. "
                "Rerun the same command to resume (a batch run in chunks goes on from its checkpoint).",
                file=sys.stderr,
            )
        raise interrupts.Interrupted("cancelled") from None
    finally:
        if quiet is not None:
            quiet.remove()
    report()
    return sweep.results


def reason(exc: BaseException) -> str:
    """One line for what stopped a batch or a submission: the last line of the error that a
    traceback or a scheduler's answer ends with (``ValueError: ...``, ``sbatch: error:
    ...``), not the traceback itself."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not set(line.strip()) <= {"-"}]
    errors = [
        line for line in lines if re.match(r"^([\w.]+(Error|Exception|Exit|Interrupt)|sbatch: (error|fatal))\b", line)
    ]
    scheduler = list(dict.fromkeys(line for line in errors if line.startswith("sbatch")))
    if scheduler:
        return "; ".join(scheduler)
    found = errors[-1] if errors else (lines[0] if lines else type(exc).__name__)
    return found if found.startswith(type(exc).__name__) or errors else f"{type(exc).__name__}: {found}"
