"""One wandb run per job, written off the critical path of a sweep.

A job's run lives in ``<job>/wandb`` (a sweep directory is self-contained; ``wandb sync``
uploads it later) with an id derived from the sweep and the job, so a rerun replaces it.
Its config is the job's resolved config flattened to dotted keys plus its overrides, its
history one entry per row of ``metrics.parquet`` at its step, its summary the final
(row T) and best values, the status and timings.

:class:`WandbWriter` writes the runs of a sweep in two spawned worker processes (never a
fork of a process that runs JAX). A run costs two things: *opening* it (``wandb.init``,
about 40% of its cost) and *writing* it (history, summary, ``finish``). The first needs
only the job's config, so workers open runs as soon as the sweep knows its jobs, while the
parent loads data and compiles; the same worker writes a run once its batch is done. At
most ``open_ahead`` runs are open and unwritten at a time (each holds files in wandb's
service). ``close()`` waits until every run is complete, finishes and removes runs that
were opened for jobs that never completed (a failed or interrupted batch), and prints one
warning if wandb failed; local outputs are written before, so a failure loses nothing.

Workers start with Ctrl-C ignored and in a process group of their own (a terminal's Ctrl-C
reaches the sweep alone, which stops them), and exit when their parent does, even after
``kill -9``; wandb's own service exits with its worker. After an interrupt,
:meth:`WandbWriter.abort` waits a few seconds at most for the runs of completed jobs,
stops the workers and removes the runs of every job that did not complete.

``wandb.mode=online`` with a server that does not answer would cost ~45 s per run: the
server is probed once (at most ~10 s) and, when it does not answer, runs are written
offline into the job directories instead (``wandb sync`` uploads them later).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np


def wandb_run_id(out_dir: Path) -> str:
    """A job's run id, derived from its sweep and job directory: a rerun replaces its run."""
    out_dir = Path(out_dir).absolute()
    digest = hashlib.sha1(str(out_dir.parent).encode()).hexdigest()[:10]
    return f"{digest}-{out_dir.name}"


def _run_settings(wandb):
    """Per-run settings that skip what a job's files already record: system stats, console
    capture, machine metadata, git state and the list of installed packages (scanning the
    environment's package metadata was ~250 ms of every run; summary.json has the versions)."""
    return wandb.Settings(
        silent=True,
        console="off",
        x_disable_stats=True,
        x_disable_meta=True,
        x_save_requirements=False,
        disable_git=True,
        save_code=False,
    )


def _init(job_dir: str, settings: dict, config: dict):
    import wandb

    shutil.rmtree(Path(job_dir) / "wandb", ignore_errors=True)  # one run per job directory
    return wandb.init(
        mode=settings["mode"],
        dir=job_dir,
        project=settings.get("project"),
        entity=settings.get("entity"),
        group=settings.get("group"),
        tags=list(settings.get("tags") or []),
        job_type=settings.get("job_type"),
        name=settings.get("name"),
        id=wandb_run_id(Path(job_dir)),
        config=config,
        reinit="create_new",  # a worker holds several open runs
        settings=_run_settings(wandb),
    )


def _write(run, columns: dict, summary: dict) -> None:
    run.define_metric("step")
    run.define_metric("*", step_metric="step")  # every metric is plotted against `step`
    table = {k: _column(v) for k, v in columns.items()}  # Python scalars, converted once
    for row in zip(*table.values(), strict=True):
        # rows between full-batch evaluations carry NaN there: logged without those keys,
        # so that wandb's charts join the evaluated points instead of breaking at each gap
        entry = {k: v for k, v in zip(table, row, strict=True) if not (isinstance(v, float) and math.isnan(v))}
        run.log(entry, step=entry["step"])
    run.summary.update(
        {
            "status": summary["status"],
            "diverged_step": summary.get("diverged_step"),
            **{f"final/{k}": _scalar(v) for k, v in summary["final"].items()},
            **{f"best/{k}": v for k, v in summary["best"].items()},
            "run_s": summary["run_s"],
            "compile_s": summary["compile_s"],
        }
    )
    run.finish()


def _column(values) -> list:
    values = np.asarray(values)
    return (values.astype(np.int64) if values.dtype == bool else values).tolist()


def _scalar(x):
    x = x.item() if hasattr(x, "item") else x
    return int(x) if isinstance(x, bool) else x


def _error(exc: BaseException) -> str:
    """One line of at most 200 characters (a server's answer may be a page of HTML)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first[:200]}{'...' if len(first) > 200 else ''}"


def log_wandb_run(job_dir: str, settings: dict, config: dict, columns: dict, summary: dict) -> str | None:
    """Open and write one job's run in this process; returns an error message or None."""
    try:
        _write(_init(job_dir, settings, config), columns, summary)
        return None
    except BaseException as exc:  # noqa: BLE001 - wandb must never take local outputs down
        return _error(exc)


# ------------------------------------------------------------------ worker process side
_OPEN: dict[str, object] = {}  # job_dir -> open run, or the error that kept it from opening


def remove_temp_dirs() -> None:
    """wandb's module-level temporary folders (``tmp*wandb-media``, ``tmp*wandb-artifacts``)
    are removed at interpreter exit, which ``os._exit`` skips: remove them before it."""
    for module, attr in (("wandb.sdk.data_types._private", "MEDIA_TMP"), ("wandb.sdk.artifacts.artifact", None)):
        mod = sys.modules.get(module)
        tmp = getattr(mod, attr, None) if attr else getattr(getattr(mod, "Artifact", None), "_TMP_DIR", None)
        if tmp is not None:
            tmp.cleanup()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    remove_temp_dirs()
    os._exit(1)  # the sweep is gone (even by kill -9): so is its worker, and wandb's service with it


def _start_worker(parent: int, temp_dir: str) -> None:
    import tempfile

    os.setpgrp()  # a terminal's Ctrl-C goes to the sweep's process group, not here
    os.environ["TMPDIR"] = tempfile.tempdir = temp_dir  # the parent removes it, however this worker ends
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    # wandb's SDK error reporting (OpenTelemetry) costs ~0.2 ms per logged step; workers
    # turn it off unless the user set WANDB_ERROR_REPORTING themselves
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import wandb  # noqa: F401 - import once per worker, while the parent compiles


def _ready() -> None:
    """A first task: makes the pool start its worker now, so importing wandb overlaps
    the parent's compilation."""


def _open_run(job_dir: str, settings: dict, config: dict) -> str | None:
    try:
        _OPEN[job_dir] = _init(job_dir, settings, config)
        return None
    except BaseException as exc:  # noqa: BLE001
        _OPEN[job_dir] = exc
        return _error(exc)


def _write_run(job_dir: str, settings: dict, config: dict, columns: dict, summary: dict) -> str | None:
    run = _OPEN.pop(job_dir, None)
    if isinstance(run, BaseException):
        return None  # reported when it failed to open
    if run is None:
        return log_wandb_run(job_dir, settings, config, columns, summary)
    try:
        _write(run, columns, summary)
        return None
    except BaseException as exc:  # noqa: BLE001
        return _error(exc)


def _discard_open_runs() -> None:
    """Runs opened for jobs that never completed: finish them and remove their folders."""
    for job_dir, run in list(_OPEN.items()):
        if not isinstance(run, BaseException):
            try:
                run.finish(exit_code=1)
            except BaseException:  # noqa: BLE001, S110 - it is being removed anyway
                pass
        shutil.rmtree(Path(job_dir) / "wandb", ignore_errors=True)
    _OPEN.clear()


# ------------------------------------------------------------------ parent process side
def server_unreachable(base_url: str, timeout: float = 10.0) -> str | None:
    """Why a wandb server does not answer an HTTP request within ``timeout`` seconds (a
    closed port, a name that does not resolve, a socket that accepts and never answers),
    or None when it answers at all (any HTTP status)."""
    import urllib.error
    import urllib.request

    outcome: list = []

    def probe() -> None:
        try:
            urllib.request.urlopen(base_url, timeout=timeout / 2).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # it answered
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer
            outcome.append(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")

    thread = threading.Thread(target=probe, daemon=True)  # also bounds a name lookup that hangs
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _online_or_offline(settings: dict) -> dict:
    """``mode: online`` only when the server answers; else offline, with one warning."""
    if settings.get("mode") != "online":
        return settings
    base_url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    reason = server_unreachable(base_url)
    if reason is None:
        return settings
    print(
        f"Warning: the wandb server {base_url} does not answer ({reason}); runs are written offline into "
        "the job directories: upload them later with `wandb sync <job>/wandb/offline-run-*`.",
        file=sys.stderr,
    )
    return {**settings, "mode": "offline"}


class WandbWriter:
    """Writes one wandb run per job; in worker processes when ``workers > 0``."""

    def __init__(self, settings: dict | None, workers: int = 0, open_ahead: int = 64):
        self.settings = _online_or_offline(dict(settings or {"mode": "disabled"}))
        self.enabled = self.settings.get("mode", "disabled") != "disabled"
        self.pools: list = []
        self.futures: list = []
        self.writes: dict[str, object] = {}  # job_dir -> the future of its run's writing
        self.planned: set[str] = set()  # job_dirs whose runs this writer may open
        self.errors: list[str] = []
        self.owner: dict[str, int] = {}  # job_dir -> the worker that opened its run
        self.to_open: deque = deque()
        self.open_ahead = open_ahead
        self.turn = 0
        self.temp_dir: str | None = None
        if self.enabled and workers > 0:
            import multiprocessing
            import tempfile
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX
            self.temp_dir = tempfile.mkdtemp(prefix="bilevel-wandb-")  # the workers' temporary files
            main = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None  # inherited: ignored
            try:
                for _ in range(workers):  # one process per pool: a run is written where it was opened
                    pool = ProcessPoolExecutor(
                        max_workers=1,
                        mp_context=ctx,
                        initializer=_start_worker,
                        initargs=(os.getpid(), self.temp_dir),
                    )
                    pool.submit(_ready)  # start now: importing wandb overlaps compilation
                    self.pools.append(pool)
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)

    def _settings(self, job_dir: Path, job_type: str | None) -> dict:
        settings = {**self.settings, "job_type": self.settings.get("job_type") or job_type}
        settings.setdefault("name", f"{Path(job_dir).parent.name}/{Path(job_dir).name}")
        return settings

    def plan(self, jobs) -> None:
        """``(job_dir, config, job_type)`` of the jobs to come, in the order they will run:
        their runs are opened ahead, while the parent computes."""
        if self.enabled and self.pools:
            jobs = list(jobs)
            self.planned.update(str(job[0]) for job in jobs)
            self.to_open.extend(jobs)
            self._open_more()

    def _next_worker(self) -> int:
        self.turn = (self.turn + 1) % len(self.pools)
        return self.turn

    def _open_more(self) -> None:
        while self.to_open and len(self.owner) < self.open_ahead:  # owner: opened, not yet written
            job_dir, config, job_type = self.to_open.popleft()
            key = str(job_dir)
            if key in self.owner:
                continue
            self.owner[key] = k = self._next_worker()
            self.futures.append(self.pools[k].submit(_open_run, key, self._settings(job_dir, job_type), config))

    def submit(self, job_dir: Path, config: dict, columns: dict, summary: dict, job_type: str | None) -> None:
        if not self.enabled:
            return
        key, settings = str(job_dir), self._settings(job_dir, job_type)
        if not self.pools:
            self._done(log_wandb_run(key, settings, config, columns, summary))
            return
        k = self.owner.pop(key, None)
        if k is None:
            k = self._next_worker()
        self.planned.add(key)
        self.writes[key] = future = self.pools[k].submit(_write_run, key, settings, config, columns, summary)
        self.futures.append(future)
        self._open_more()

    def _done(self, error: str | None) -> None:
        if error:
            self.errors.append(error)

    def abort(self, timeout: float = 5.0) -> None:
        """After an interrupt: wait (``timeout`` seconds at most) for the runs of the jobs that
        completed, stop the workers (and with them wandb's services), and remove the runs of
        every other job. Runs not written by then are removed too: their jobs are complete
        locally, and a rerun resumes them without a wandb run."""
        deadline = time.monotonic() + timeout
        written = set()
        for key, future in self.writes.items():
            try:
                if future.result(timeout=max(0.0, deadline - time.monotonic())) is None:
                    written.add(key)
            except Exception:  # noqa: BLE001, S110 - not written in time, or failed
                pass
        for pool in self.pools:
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.kill()
            for process in processes:
                process.join(timeout=2)
        self.pools, self.futures = [], []
        for key in self.planned - written:
            shutil.rmtree(Path(key) / "wandb", ignore_errors=True)
        self._remove_temp_dir()

    def _remove_temp_dir(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def close(self) -> None:
        """Wait for every run; discard runs opened for jobs that did not complete."""
        for pool in self.pools:
            try:
                self.futures.append(pool.submit(_discard_open_runs))
            except Exception as exc:  # noqa: BLE001 - a broken pool (its worker was killed, as by a requeue)
                self._done(_error(exc))
        for f in self.futures:
            try:
                self._done(f.result())
            except Exception as exc:  # noqa: BLE001 - a crashed worker is a wandb failure too
                self._done(_error(exc))
        self.futures = []
        for pool in self.pools:
            pool.shutdown()
        self.pools = []
        self._remove_temp_dir()
        if self.errors:
            print(
                f"Warning: wandb failed for {len(self.errors)} run(s) (local outputs are complete): {self.errors[0]}",
                file=sys.stderr,
            )
