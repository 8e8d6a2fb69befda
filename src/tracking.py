"""Where a job's results go: local files (written atomically) and, optionally, wandb.

Local files of a job directory:

* ``metrics.parquet``: one row per outer step ``t = 0 ... T`` (fewer if it diverged);
* ``params.npz``: final ``theta`` and ``w``, full arrays;
* ``summary.json``: status, final metrics, timings and provenance.

Every file is written to a temporary file in the same directory and renamed into
place, so a crash never leaves a half-written file that aggregation would read.
``summary.json`` is written last: its ``status`` says whether the job is complete.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SUMMARY = "summary.json"
METRICS = "metrics.parquet"
PARAMS = "params.npz"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic | np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else (math.inf if x > 0 else -math.inf)
    return x


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=True) + "\n")


def read_summary(job_dir: str | os.PathLike) -> dict | None:
    try:
        return json.loads((Path(job_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def write_metrics(job_dir: Path, columns: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({k: np.asarray(v) for k, v in columns.items()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write_bytes(job_dir / METRICS, buf.getvalue())


def write_params(job_dir: Path, **arrays: Any) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(job_dir / PARAMS, buf.getvalue())


@functools.cache
def provenance() -> dict[str, Any]:
    """Package versions, the project's git commit and the JAX device (once per process)."""
    from importlib.metadata import PackageNotFoundError, version

    import jax

    versions = {}
    for pkg in ("jax", "jaxlib", "optax", "hydra-core", "omegaconf", "numpy", "wandb"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    root = Path(__file__).resolve().parent.parent
    try:
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    device = jax.devices()[0]
    return {
        "versions": versions,
        "git_commit": commit,
        "git_dirty": dirty,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "device_count": jax.device_count(),
    }


# ----------------------------------------------------------------------------- wandb
def wandb_run_id(out_dir: Path) -> str:
    """A job's run id, derived from its sweep and job directory: a rerun replaces its run."""
    import hashlib

    out_dir = Path(out_dir).absolute()
    digest = hashlib.sha1(str(out_dir.parent).encode()).hexdigest()[:10]
    return f"{digest}-{out_dir.name}"


def log_wandb_run(job_dir: str, settings: dict, config: dict, columns: dict, summary: dict) -> str | None:
    """Write one job's wandb run into ``job_dir/wandb``; returns an error message or None.

    One history entry per row of ``metrics.parquet`` at its step; the summary holds the final
    (row T) and best values and the status. Runs in a worker process of :class:`WandbWriter`.
    """
    import shutil

    try:
        import wandb

        shutil.rmtree(Path(job_dir) / "wandb", ignore_errors=True)  # one run per job directory
        run = wandb.init(
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
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True),
        )
        run.define_metric("step")
        names = [k for k in columns if k != "step"]
        for name in names:
            run.define_metric(name, step_metric="step")
        steps = columns["step"]
        for i, step in enumerate(steps):
            run.log({"step": int(step), **{k: _scalar(columns[k][i]) for k in names}}, step=int(step))
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
        return None
    except BaseException as exc:  # noqa: BLE001 - wandb must never take local outputs down
        return f"{type(exc).__name__}: {exc}"


def _scalar(x):
    x = x.item() if hasattr(x, "item") else x
    return int(x) if isinstance(x, bool) else x


def _warm_worker() -> None:
    import wandb  # noqa: F401 - import once per worker, not per run


class WandbWriter:
    """Writes wandb runs, in worker processes off the critical path when ``workers > 0``.

    ``close()`` waits until every run is complete and prints one warning if any failed;
    local outputs are written before a run is submitted, so a failure loses nothing.
    """

    def __init__(self, settings: dict | None, workers: int = 0):
        self.settings = dict(settings or {"mode": "disabled"})
        self.enabled = self.settings.get("mode", "disabled") != "disabled"
        self.pool = None
        self.futures: list = []
        self.errors: list[str] = []
        if self.enabled and workers > 0:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX
            self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_warm_worker)
            for _ in range(workers):  # start the workers now: importing wandb overlaps compilation
                self.pool.submit(_warm_worker)

    def submit(self, job_dir: Path, config: dict, columns: dict, summary: dict, job_type: str | None) -> None:
        if not self.enabled:
            return
        settings = {**self.settings, "job_type": self.settings.get("job_type") or job_type}
        settings.setdefault("name", f"{Path(job_dir).parent.name}/{Path(job_dir).name}")
        columns = {k: np.asarray(v).tolist() for k, v in columns.items()}
        args = (str(job_dir), settings, config, columns, summary)
        if self.pool is None:
            self._done(log_wandb_run(*args))
        else:
            self.futures.append(self.pool.submit(log_wandb_run, *args))

    def _done(self, error: str | None) -> None:
        if error:
            self.errors.append(error)

    def close(self) -> None:
        for f in self.futures:
            try:
                self._done(f.result())
            except Exception as exc:  # noqa: BLE001 - a crashed worker is a wandb failure too
                self._done(f"{type(exc).__name__}: {exc}")
        self.futures = []
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self.errors:
            import sys

            print(
                f"Warning: wandb failed for {len(self.errors)} run(s) (local outputs are complete): {self.errors[0]}",
                file=sys.stderr,
            )
