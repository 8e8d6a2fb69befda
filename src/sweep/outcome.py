"""What became of a job: its value for Hydra and its status, in one small module that
the sweep (:mod:`src.sweep.runner`) and the console report (:mod:`src.report.progress`)
both import."""

from __future__ import annotations


class Diverged:
    """What a job that diverged returns to Hydra: not a number, so a sweeper that tunes on
    the returned values (optuna) records the trial as failed and goes on."""

    def __init__(self, job: str, step: int | None):
        self.job, self.step = job, step

    def __repr__(self) -> str:
        return f"job {self.job} diverged at step {self.step}"


class BatchFailed(RuntimeError):
    """What the jobs of a batch that failed return to Hydra (the batch's error is the cause)."""


def job_value(job, summary: dict):
    """A job's return value: its final outer loss, or :class:`Diverged`."""
    if summary["status"] == "diverged":
        return Diverged(job.name, summary.get("diverged_step"))
    return summary["final"]["outer_loss"]


def job_status(summary: dict | None, result) -> str:
    """completed | diverged (from its summary), failed (its batch raised), or not run."""
    if summary:
        return summary["status"]
    return "failed" if isinstance(result, BaseException) else "not run"
