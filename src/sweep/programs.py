"""Compiled programs and the time they take: what a sweep holds as values, not globals.

* :class:`Programs`: the XLA programs of a process's sweeps, by name, static config and
  argument shapes, so that every batch of a group (and every launch of one multirun, as
  optuna's rounds are) runs one program; ``built`` counts the programs built (persistent
  compilation-cache hits included), for ``compiled_programs`` in ``sweep_summary.json``.
* :class:`Clock`: seconds per phase (``data_s``, ``compile_s``, ``run_s``, ``write_s``...),
  for ``phases_s``.

Compilation runs in a thread and results are awaited by polling, so that Ctrl-C is seen
within a fraction of a second even while XLA compiles or runs (both hold their calling
thread in C++, where Python runs no signal handler).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path


class Clock:
    """Seconds spent per phase, added up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextlib.contextmanager
    def timed(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t)


class Programs:
    """Compiled programs by (name, static config, argument structure and shapes, precision)."""

    def __init__(self) -> None:
        self._executables: dict = {}
        self.built = 0

    def get(self, name: str, static: tuple, fn: Callable, *args):
        """``(executable, compile seconds)``: compiled once, then reused (0 seconds)."""
        import jax

        signature = jax.tree.map(lambda x: (x.shape, x.dtype, getattr(x, "sharding", None)), args)
        key = (name, static, jax.tree.structure(args), tuple(jax.tree.leaves(signature)), jax.config.jax_enable_x64)
        if key in self._executables:
            return self._executables[key], 0.0
        t = time.perf_counter()
        options = compiler_options(jax.default_backend())
        self._executables[key] = in_thread(lambda: jax.jit(fn).lower(*args).compile(compiler_options=options))
        self.built += 1
        return self._executables[key], time.perf_counter() - t


# XLA's copy insertion on CPU cannot tell, without region analysis, that a read of a
# loop-carried buffer comes before an in-place write to it, and copies the buffer: SABA's
# SAGA tables were copied twice per step that way (80 jobs x 5 tables: ~70 MB a step) until
# SABA read its rows after the write (src.core.stochastic.soba). Region analysis keeps any
# other such pattern in place too, with the same results (tests/test_programs.py).
CPU_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


def compiler_options(backend: str) -> dict | None:
    """The XLA options the sweep's programs are compiled with, per backend."""
    return dict(CPU_OPTIONS) if backend == "cpu" else None


def enable_compilation_cache(path: str | Path = "outputs/.jax_cache") -> None:
    """JAX's persistent compilation cache, so that a rerun or resumed sweep does not compile
    again (``JAX_COMPILATION_CACHE_DIR`` wins when set)."""
    import os

    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    where = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(Path(path).absolute())
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def in_thread(fn: Callable, *args):
    """``fn(*args)`` in a daemon thread, waited for where a signal can interrupt the wait:
    an XLA compilation holds its calling thread in C++ for seconds, where Python runs no
    signal handler (Ctrl-C would wait for it). The thread gets this thread's precision."""
    import jax

    x64, out = bool(jax.config.jax_enable_x64), {}

    def target() -> None:
        try:
            with jax.enable_x64(x64):
                out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.05)
    if "error" in out:
        raise out["error"]
    return out["value"]


def wait_ready(tree):
    """Wait for a computation's outputs, with Python seeing signals meanwhile
    (``block_until_ready`` holds the main thread in C++ until the program ends)."""
    import jax

    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "is_ready")]
    pause = 1e-4
    while not all(x.is_ready() for x in leaves):
        time.sleep(pause)
        pause = min(2 * pause, 0.01)
    return jax.block_until_ready(tree)  # raises a computation's error, if any
