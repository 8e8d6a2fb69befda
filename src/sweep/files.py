"""Where a job's results go on disk: local files, written atomically, and provenance.

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
import hashlib
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


def _umask() -> int:
    """The process's umask, read (from /proc where it exists) rather than set at import."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable way to read it, restored at once
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write, sync: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, renamed into
    place; the temporary file is removed on any exception, Ctrl-C included, so that an
    interrupted write leaves neither a partial file nor a stray ``.tmp``. ``sync``: fsync
    before the rename (checkpoints, which must survive a node failure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    atomic_write(path, lambda f: f.write(payload))


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


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content, or None where it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_summary(job_dir: str | os.PathLike) -> dict | None:
    return read_json(Path(job_dir) / SUMMARY)


def config_fingerprint(config: Any) -> str:
    """sha256 of a run's resolved config as canonical JSON. A job's stored results are
    trusted (skipped on resume, handed to Hydra and sweepers) only by a run whose config
    has the same fingerprint."""
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def stored_fingerprint(summary: dict) -> str | None:
    """The fingerprint of the config a summary was produced by (computed from its config
    where an older summary has no ``config_fingerprint``)."""
    if summary.get("config_fingerprint"):
        return summary["config_fingerprint"]
    return config_fingerprint(summary["config"]) if isinstance(summary.get("config"), dict) else None


def complete_result(job_dir: str | os.PathLike) -> dict | None:
    """The job's summary when its whole result set is present and readable: a summary with
    a status and final metrics, a metrics file with the summary's rows, params with
    ``theta`` and ``w``. ``None`` for anything else (missing, truncated, corrupt): such a
    job is run again."""
    import pyarrow.parquet as pq

    job_dir = Path(job_dir)
    summary = read_summary(job_dir)
    if not isinstance(summary, dict) or summary.get("status") not in ("completed", "diverged"):
        return None
    if not _well_formed(summary):
        return None
    try:
        if pq.read_metadata(job_dir / METRICS).num_rows != summary.get("rows"):
            return None
        with np.load(job_dir / PARAMS) as params:
            params["theta"], params["w"]  # noqa: B018 - reading them checks the archive's CRCs
    except Exception:  # noqa: BLE001 - unreadable in any way: not a result
        return None
    return summary


def _number(x) -> bool:
    return x is None or (isinstance(x, int | float) and not isinstance(x, bool)) or isinstance(x, bool)


def _well_formed(summary: dict) -> bool:
    """The fields other code reads have their types: ``config`` a mapping, ``final`` a
    mapping of numbers with ``outer_loss``, ``maximize`` a list of names."""
    final = summary.get("final")
    if not isinstance(final, dict) or "outer_loss" not in final or not all(map(_number, final.values())):
        return False
    if not isinstance(summary.get("config", {}), dict):
        return False
    maximize = summary.get("maximize", [])
    return isinstance(maximize, list | tuple) and all(isinstance(m, str) for m in maximize)


def clear_results(job_dir: str | os.PathLike) -> None:
    """Remove a job's result files (not its .hydra config) and the temporary files a killed
    writer left: before a job runs, and when it is interrupted while they are being
    written, so that a job directory never holds a partial set of results (a job is
    complete exactly when its whole set is there, summary.json last)."""
    for name in (SUMMARY, METRICS, PARAMS):  # the summary first: it marks the job complete
        Path(job_dir, name).unlink(missing_ok=True)
        for tmp in Path(job_dir).glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


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
    """Package versions, the project's git commit and the JAX device; read once per sweep
    (a sweep clears this cache when it starts: the git state may change between sweeps)."""
    from importlib.metadata import PackageNotFoundError, version

    import jax

    versions = {}
    for pkg in ("jax", "jaxlib", "optax", "hydra-core", "omegaconf", "numpy", "wandb"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    root = Path(__file__).resolve().parents[2]  # the repository
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
