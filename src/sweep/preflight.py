"""What is checked before a run or sweep writes anything: its output directory, the
batched launcher's options, and the lock that gives a sweep directory to one sweep.

Called by the ``SweepGuard`` Hydra callback (``hydra_plugins/bilevel_launcher``) at the
start of a run or multirun, before Hydra's sweeper writes ``multirun.yaml``. A refusal is
one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import Annotated

import annotated_types as at
from pydantic import BaseModel, ConfigDict

from src.config.schemas import ConfigError, check

LOCK = ".sweep.lock"

Count = Annotated[int, at.Ge(1)]
Some = Annotated[int, at.Ge(0)]


class LauncherRanges(BaseModel):
    """The ranges of the batched launcher's numeric options (its dataclass gives the types)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    max_batch_size: Count
    timeout_min: Count
    max_num_timeout: Some
    signal_delay_s: Some
    array_parallelism: Count
    cpus_per_task: Count | None = None
    gpus_per_node: Some | None = None
    gpus_per_task: Some | None = None
    cpus_per_gpu: Count | None = None
    mem_gb: Count | None = None
    checkpoint_every_s: Annotated[float, at.Gt(0)] | None = None


def refuse(message: str) -> None:
    """Stop before any work: the message (it names the key or job, the value and what is
    allowed), "Nothing was run.", exit status 2."""
    print(f"{message}{'' if message.endswith('.') else '.'} Nothing was run.", file=sys.stderr)
    sys.exit(2)


def check_output_dir(path: str | os.PathLike, key: str) -> Path:
    """An output directory that exists as a directory or can be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        refuse(f"Error: invalid config: {key}={str(path)!r}: a directory; that path is a file.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        refuse(f"Error: invalid config: {key}={str(path)!r}: a directory that can be created ({exc.strerror}).")
    return path


def check_launcher(options: dict) -> None:
    """The batched launcher's numeric options are in range (Hydra checked their types)."""
    try:
        check(LauncherRanges, options, "hydra.launcher")
    except ConfigError as err:
        refuse(f"Error: {err}.")


def lock_sweep_dir(sweep_dir: Path) -> int:
    """Hold an OS lock on the sweep directory for the life of this process (the kernel
    releases it on any exit, a crash or ``kill -9`` included). A second sweep into a
    directory in use is refused before it writes anything there. Returns the lock's fd."""
    fd = os.open(sweep_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        refuse(
            f"Error: hydra.sweep.dir={str(sweep_dir)!r} is in use by another sweep (pid {owner}); wait for it to end "
            "or choose another hydra.sweep.dir."
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
