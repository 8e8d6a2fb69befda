"""``python -m src.train``: Hydra glue around :func:`train`.

``train(cfg, out_dir) -> summary`` is what tests call: it validates the composed
config, runs it (a batch of one) and writes the job's files.

:func:`main` is Hydra's main with what a user can cause said in one line (a YAML syntax
error with its file, line and column; Hydra's own composition errors as Hydra words them;
an invalid config) instead of a traceback, and Ctrl-C or SIGTERM ending with status 130.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import ConfigError, validate


class DataError(ValueError):
    """An objective's data cannot be built from the options given."""


def train(cfg: DictConfig | dict, out_dir: str | Path, overrides=()) -> dict:
    """Run one job of a composed config into ``out_dir``; returns its summary."""
    from src.report.progress import step_progress
    from src.report.wandb_runs import WandbWriter
    from src.sweep.batching import run_batch
    from src.sweep.plan import Job, job_data, release_data
    from src.sweep.programs import enable_compilation_cache

    run = validate(cfg)  # before any work
    try:
        job_data(run)  # options that only the data can check (memoized for the run)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the objective's data function
        raise DataError(f"its data cannot be built: {type(exc).__name__}: {exc}") from exc
    enable_compilation_cache()
    job = Job(run, Path(out_dir), tuple(overrides))
    writer = WandbWriter(run.wandb)
    try:
        with step_progress(run.tree["outer_steps"], "run") as advance:
            (summary,) = run_batch([job], on_steps=advance, writer=writer)
    finally:
        writer.close()
        release_data()
    return summary


def task(cfg: DictConfig) -> float:
    """One job (``python -m src.train``, or a multirun under Hydra's basic launcher)."""
    from hydra.core.hydra_config import HydraConfig

    from src.report.progress import print_summary

    hc = HydraConfig.get()
    try:
        summary = train(cfg, hc.runtime.output_dir, hc.overrides.task)
    except (ConfigError, DataError) as err:  # Hydra would print a traceback for an exception: exit ourselves
        _discard_refused(Path(hc.runtime.output_dir))
        print(f"Error: {err}. Nothing was run.", file=sys.stderr)
        sys.exit(2)
    except (MemoryError, RuntimeError) as exc:  # out of memory (XLA's RESOURCE_EXHAUSTED), as a sweep says it
        import jax

        if not isinstance(exc, MemoryError | jax.errors.JaxRuntimeError):
            raise
        first = next((line for line in str(exc).splitlines() if line.strip()), "")
        print(f"Error: the run failed: {type(exc).__name__}: {first[:300]}", file=sys.stderr)
        sys.exit(1)
    print_summary(summary, hc.runtime.output_dir)
    if summary["status"] == "diverged":
        from src.sweep.outcome import Diverged

        return Diverged(Path(hc.runtime.output_dir).name, summary["diverged_step"])
    return summary["final"]["outer_loss"]


def _discard_refused(out_dir: Path) -> None:
    """What Hydra wrote for a single run that was refused (``.hydra/``), and the run's
    directory if that leaves it empty; never a directory that holds results."""
    import shutil

    if (out_dir / "summary.json").exists() or (out_dir / "metrics.parquet").exists():
        return
    shutil.rmtree(out_dir / ".hydra", ignore_errors=True)
    try:
        out_dir.rmdir()
    except OSError:
        pass


def _run_sweep(entries, **kwargs) -> list:
    from src.sweep.runner import run_sweep

    return run_sweep(entries, **kwargs)


def _validate_sweep(entries, overwrite: bool = False) -> list:
    from src.sweep.runner import check_job_dirs, validate_all

    runs = validate_all(entries)
    check_job_dirs(entries, runs, overwrite)
    return runs


# Marks the task as batch-aware: the batched launcher hands it all the jobs of a multirun.
task.run_sweep = _run_sweep
task.validate_sweep = _validate_sweep
hydra_main = hydra.main(version_base="1.3", config_path="../conf", config_name="train")(task)


def user_error(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit status of an error a user's input caused (with the
    file, line and column of a YAML syntax error), or None for anything else (a bug)."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for err in chain:
        if isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark or err.context_mark
            where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a YAML file"
            return f"Error: YAML syntax error in {where}: {err.problem or err.context}.", 2
        if isinstance(err, ConfigError):
            return f"Error: {err}.", 2
    if isinstance(exc, HydraException | OmegaConfBaseException):
        cause = exc.__cause__
        text = str(exc) + (f"\n{cause}" if isinstance(cause, OmegaConfBaseException) else "")
        from src.config import CHOSEN_GROUPS

        swept_group = re.match(rf"Could not override '({'|'.join(CHOSEN_GROUPS)})\.([\w.]+)'", text)
        if swept_group and any(a in ("-m", "--multirun") for a in sys.argv[1:]):
            key = f"{swept_group[1]}.{swept_group[2]}"
            text += (
                f"\n(With -m, a key of a group whose option is chosen per job (swept, or by a study) is applied "
                f"job by job: write it as ++{key}=VALUE, or as a sweep of one value, '{key}=choice(VALUE)'.)"
            )
        unknown = re.search(r"Key '\w+' is not in struct\s+full_key: ([\w.]+)", text)
        if unknown:
            key = unknown[1]
            text += (
                f"\n({key} is not a key of the composed config: a group's YAML lists every option it has; "
                f"a key it does not list is added with +{key}=VALUE.)"
            )
        return text, 1
    return None


SWEPT_GROUP = re.compile(r"^(\w+)=(.*,.*|(choice|range|glob)\(.*\))$")
GROUP_KEY = re.compile(r"^(\+{0,2})(\w+)\.([\w.]+)=([^,()\[\]{}'\"\s]+)$")


def per_job_overrides(argv: list[str]) -> list[str]:
    """With ``-m``, a key of a group that the same command sweeps (``method=soba,saba
    method.step_size=0.01``) as a sweep of one value (``method.step_size=choice(0.01)``):
    Hydra composes the multirun's primary config with every plain override before any
    sweeper runs, when no option of the group is chosen yet, and refuses the key there;
    a sweep override is applied job by job, after the group's option."""
    if not any(a in ("-m", "--multirun") for a in argv):
        return argv
    from src.config import CHOSEN_GROUPS

    groups = set(CHOSEN_GROUPS)
    swept = {m[1] for a in argv if (m := SWEPT_GROUP.match(a)) and m[1] in groups}
    out = []
    for a in argv:
        m = GROUP_KEY.match(a)
        out.append(f"{m[1]}{m[2]}.{m[3]}=choice({m[4]})" if m and m[2] in swept else a)
    return out


def main() -> None:
    """``python -m src.train``."""
    from src.sweep.interrupts import Interrupted

    sys.argv[1:] = per_job_overrides(sys.argv[1:])
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user asked for tracebacks
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises, and the errors are worded below
    try:
        hydra_main()
    except KeyboardInterrupt as exc:
        if not isinstance(exc, Interrupted):  # a sweep says what it kept; anything else says this
            print("Interrupted.", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        from src.report.wandb_runs import remove_temp_dirs

        remove_temp_dirs()
        os._exit(130)  # at once: a computation still running in XLA's threads is abandoned
    except Exception as exc:
        said = None if full_error else user_error(exc)
        if said is None:
            raise
        print(said[0], file=sys.stderr)
        sys.exit(said[1])


if __name__ == "__main__":
    main()
