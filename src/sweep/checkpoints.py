"""Mid-batch checkpoints: a long batch survives time limits, pre-emption and Ctrl-C.

A batch that runs in chunks (``chunk_steps``) saves, at chunk boundaries, the scan carry of
every member (theta, the inner and linear-system variables, the optimizer and sampler
states, keys), the metrics rows so far and the number of steps done, into one ``.npz`` in
``<sweep>/.checkpoints/``, written atomically (a temporary file, fsync, ``os.replace``). It
saves

* every ``every_s`` seconds (``hydra.launcher.checkpoint_every_s``), which bounds what a
  node failure or ``kill -9`` loses;
* when the batch is stopped between or inside chunks (USR2 from SLURM before a time limit
  or on pre-emption, SIGTERM, Ctrl-C): the state after the last completed chunk, before the
  stop goes on (submitit's requeue, the sweep's clean exit).

The next attempt of the same batch (submitit's requeue, or the same command run again into
the same sweep directory) finds the checkpoint by the batch's identity (its jobs'
directories and config fingerprints, the layout and the chunking, and the code the results
depend on: a digest of the project's sources and of each objective's module, so that a
changed objective or method never resumes state computed by the old code), loads it into a freshly
initialized carry and goes on from that step; the results are those of an uninterrupted run
bit for bit (the same compiled chunks see the same inputs). ``attempts`` counts the starts
of a batch that has not completed (a small JSON beside the checkpoint); both files are
removed when the batch completes, and the whole folder once every job of the sweep has its
results (a batch whose members changed between attempts, because some of its jobs had
written their results, or whose settings changed, leaves a checkpoint nothing can resume).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from src.sweep.defaults import CHECKPOINT_EVERY_S as DEFAULT_EVERY_S
from src.sweep.files import atomic_write


def _is_key(x) -> bool:
    import jax

    return jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)


def _to_host(x) -> np.ndarray:
    import jax

    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


SRC = Path(__file__).resolve().parent


@functools.cache
def _digest(files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode())
        h.update(Path(name).read_bytes())
    return h.hexdigest()[:16]


def code_identity(targets: tuple[str, ...]) -> str:
    """A digest of the code a batch's results depend on: every source file of the project
    (``src/``) and the module of each objective factory (``_target_``, which may live
    outside it: a researcher's own objective)."""
    files = sorted(str(p) for p in SRC.rglob("*.py"))
    for target in targets:
        spec = importlib.util.find_spec(target.rpartition(".")[0])
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files.append(spec.origin)
    return _digest(tuple(dict.fromkeys(files)))


class BatchCheckpoint:
    """The checkpoint of one batch: ``<folder>/<identity>.npz`` and its attempts file."""

    def __init__(self, folder: Path, identity: str, every_s: float | None = DEFAULT_EVERY_S) -> None:
        self.folder, self.identity = Path(folder), identity
        self.every_s = every_s
        self.path = self.folder / f"{identity}.npz"
        self.attempts_path = self.folder / f"{identity}.json"
        self.attempts = 1
        self.resumed_from_step = 0
        self._last = time.monotonic()

    @classmethod
    def for_batch(cls, jobs, layout: Any, every_s: float | None = DEFAULT_EVERY_S) -> BatchCheckpoint:
        """The checkpoint of the batch of ``jobs`` (its identity: the jobs' directories and
        config fingerprints, ``layout``: anything else its carry's shape depends on, and the
        code's digest)."""
        described = [[str(Path(j.out_dir).resolve()), j.run.fingerprint] for j in jobs]
        code = code_identity(tuple(sorted({j.run.tree["objective"]["_target_"] for j in jobs})))
        digest = hashlib.sha256(json.dumps([described, repr(layout), code]).encode()).hexdigest()[:16]
        return cls(Path(jobs[0].out_dir).resolve().parent / ".checkpoints", f"batch-{digest}", every_s)

    def start(self) -> None:
        """Count this attempt (a batch that has not completed started ``attempts`` times)."""
        try:
            self.attempts = int(json.loads(self.attempts_path.read_text())["attempts"]) + 1
        except (OSError, ValueError, KeyError, TypeError):
            self.attempts = 1
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob(f".{self.identity}.*.tmp"):  # a killed (-9) writer's
            stale.unlink(missing_ok=True)
        atomic_write(self.attempts_path, lambda f: f.write(json.dumps({"attempts": self.attempts}).encode()), sync=True)
        self._last = time.monotonic()

    def due(self) -> bool:
        return self.every_s is not None and time.monotonic() - self._last >= self.every_s

    def save(self, chunks_done: int, steps_done: int, carry, rows: list, reason: str = "periodic") -> None:
        """Save the state after ``chunks_done`` chunks (``steps_done`` outer steps);
        ``reason``: periodic, or stopped (the batch is being stopped)."""
        import jax

        arrays = {f"carry_{i}": _to_host(x) for i, x in enumerate(jax.tree.leaves(carry))}
        for r, row in enumerate(rows):  # each chunk's rows: {column: array}
            arrays.update({f"rows_{r}/{name}": np.asarray(x) for name, x in row.items()})
        meta = {"chunks": chunks_done, "steps": steps_done, "rows": len(rows), "attempts": self.attempts}
        meta["reason"] = reason
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda f: np.savez(f, **arrays), sync=True)
        self._last = time.monotonic()

    def load(self, carry, sizes: list[int], axis: int) -> tuple[int, Any, list] | None:
        """``(chunks done, carry, rows)`` from the checkpoint, shaped like ``carry`` (a fresh
        one: its leaves' dtypes, key types and shardings), its rows ``sizes[r]`` steps long
        on ``axis`` for chunk ``r``; None when there is none, or when it does not fit (then it
        is set aside, with a warning)."""
        import jax

        if not self.path.exists():
            return None
        try:
            with np.load(self.path) as f:
                meta = json.loads(bytes(f["meta"]).decode())
                leaves, treedef = jax.tree.flatten(carry)
                loaded = []
                for i, like in enumerate(leaves):
                    x = f[f"carry_{i}"]
                    if _is_key(like):
                        x = jax.random.wrap_key_data(x, impl=jax.random.key_impl(like))
                    elif x.shape != like.shape or x.dtype != like.dtype:
                        raise ValueError(f"carry leaf {i}: {x.shape} {x.dtype}, expected {like.shape} {like.dtype}")
                    loaded.append(jax.device_put(x, like.sharding))
                rows = [{} for _ in range(meta["rows"])]
                for name in f.files:
                    if name.startswith("rows_"):
                        r, column = name.removeprefix("rows_").split("/", 1)
                        rows[int(r)][column] = f[name]
                _check_rows(meta, rows, sizes, axis)
        except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file: start over, say so
            import warnings

            aside = self.path.with_suffix(".npz.unreadable")
            os.replace(self.path, aside)
            warnings.warn(f"checkpoint {self.path} could not be used ({exc}); moved to {aside.name}", stacklevel=2)
            return None
        self.resumed_from_step = int(meta["steps"])
        return int(meta["chunks"]), treedef.unflatten(loaded), rows

    def remove(self) -> None:
        for path in (self.path, self.attempts_path):
            path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()  # only when no other batch's checkpoint is there
        except OSError:
            pass


def _check_rows(meta: dict, rows: list[dict], sizes: list[int], axis: int) -> None:
    """The metadata agree with the arrays: as many chunks of rows as chunks done, each as
    long as its chunk, and the steps done their sum."""
    chunks = meta["chunks"]
    if not 0 < chunks <= len(sizes) or len(rows) != chunks or meta["steps"] != sum(sizes[:chunks]):
        raise ValueError(f"metadata (chunks {chunks}, steps {meta['steps']}, rows {len(rows)}) do not fit this batch")
    for r, row in enumerate(rows):
        for column, x in row.items():
            if x.ndim <= axis or x.shape[axis] != sizes[r]:
                raise ValueError(f"rows of chunk {r}: {column} has shape {x.shape}, expected {sizes[r]} steps")


def remove_checkpoints(sweep_dir: Path) -> None:
    """Remove a sweep's checkpoints once every one of its jobs has results: those left by a
    batch whose members or settings changed between attempts (another identity) can never
    be resumed."""
    import shutil

    shutil.rmtree(Path(sweep_dir) / ".checkpoints", ignore_errors=True)
