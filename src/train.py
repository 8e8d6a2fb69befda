"""``python -m src.train``: Hydra glue around :func:`train`.

``train(cfg, out_dir) -> summary`` is what tests call: it validates the composed
config, runs it (a batch of one) and writes the job's files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import ConfigError, validate


def train(cfg: DictConfig | dict, out_dir: str | Path, overrides=()) -> dict:
    """Run one job of a composed config into ``out_dir``; returns its summary."""
    from src.batching import Job, enable_compilation_cache, run_batch
    from src.progress import step_progress
    from src.wandb_runs import WandbWriter

    run = validate(cfg)  # before any work
    enable_compilation_cache()
    job = Job(run, Path(out_dir), tuple(overrides))
    writer = WandbWriter(run.wandb)
    try:
        with step_progress(run.tree["outer_steps"], "run") as advance:
            (summary,) = run_batch([job], on_steps=advance, writer=writer)
    finally:
        writer.close()
    return summary


def task(cfg: DictConfig) -> float:
    """One job (``python -m src.train``, or a multirun under Hydra's basic launcher)."""
    from hydra.core.hydra_config import HydraConfig

    from src.progress import print_summary

    hc = HydraConfig.get()
    try:
        summary = train(cfg, hc.runtime.output_dir, hc.overrides.task)
    except ConfigError as err:  # Hydra would print a traceback for an exception: exit ourselves
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    print_summary(summary, hc.runtime.output_dir)
    return summary["final"]["outer_loss"]


def _run_batch(entries, **kwargs) -> list:
    from src.sweep import run_sweep

    return run_sweep(entries, **kwargs)


def _validate_batch(entries) -> list:
    from src.sweep import validate_all

    return validate_all(entries)


# Marks the task as batch-aware: the batched launcher hands it all the jobs of a multirun.
task.run_batch = _run_batch
task.validate_batch = _validate_batch
main = hydra.main(version_base="1.3", config_path="../conf", config_name="train")(task)

if __name__ == "__main__":
    main()
