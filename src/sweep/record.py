"""The record stage: a job's files (metrics, params, summary last) and its wandb run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.config import flatten, objective_of
from src.sweep.files import clear_results, provenance, write_json, write_metrics, write_params
from src.sweep.plan import Job


def write_job(job: Job, result, compile_s: float, run_s: float, batch: dict, writer=None, resumed=None) -> dict:
    """Write one job's metrics, params and summary (last), hand them to the wandb writer,
    and return the summary. ``resumed``: the batch's ``attempts`` and the step its last
    attempt resumed from (``resumed_from_step``, 0 when it ran in one go)."""
    out = Path(job.out_dir)
    diverged = int(result.diverged)
    metrics = dict(result.metrics)
    rows = len(next(iter(metrics.values())))
    keep = rows if diverged < 0 else diverged + 1
    columns = {"step": np.arange(keep, dtype=np.int64)}
    columns.update({k: np.asarray(v[:keep]) for k, v in metrics.items()})
    final = {k: v[-1].item() for k, v in columns.items()}
    losses = columns["outer_loss"]
    best_step = int(np.nanargmin(losses)) if np.isfinite(losses).any() else None
    summary = {
        "status": "completed" if diverged < 0 else "diverged",
        "diverged_step": None if diverged < 0 else diverged,
        "steps": int(dict(job.run.static)["outer_steps"]),
        "rows": keep,
        "final": final,
        "best": {"step": best_step, "outer_loss": None if best_step is None else float(losses[best_step])},
        "compile_s": compile_s,
        "run_s": run_s,
        "batch": batch,
        **(resumed or {"attempts": 1, "resumed_from_step": 0}),
        "seed": job.run.seed,
        "precision": job.run.precision,
        "objective": job.run.tree["objective"].get("name"),
        "maximize": list(objective_of(job.run.static).maximize),  # metrics for which higher is better
        "overrides": list(job.overrides),
        "config": job.run.tree,
        "config_fingerprint": job.run.fingerprint,
        "provenance": provenance(),
    }
    try:
        write_metrics(out, columns)
        write_params(out, theta=result.theta, w=result.w)
        write_json(out / "summary.json", summary)  # last: the job is complete
    except BaseException:  # interrupted (pre-emption, Ctrl-C) or failed: leave no partial set
        clear_results(out)
        raise
    if writer is not None:
        config, job_type = wandb_config(job)
        writer.submit(out, config, columns, summary, job_type=job_type)
    return summary


def wandb_config(job: Job) -> tuple[dict, str | None]:
    """A job's wandb config (its resolved config flattened to dotted keys, and its
    overrides) and job type (its objective's name)."""
    config = {**flatten(job.run.tree), "overrides": " ".join(job.overrides)}
    return config, job.run.tree["objective"].get("name")
