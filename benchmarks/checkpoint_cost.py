"""What one mid-batch checkpoint costs: bytes on disk and seconds, for a 64-job logreg batch.

The sweep (8 learning rates x 8 seeds, logreg, 100 outer steps in chunks of 10, gd with 100
inner steps) runs in one process after a warm-up, alternately with a checkpoint after every
chunk (``checkpoint_every_s`` tiny) and with none (a period longer than the run), three times
each. Prints the size and time of each save, and the median wall times side by side.

    python benchmarks/checkpoint_cost.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = ("objective=logreg", "inner_solver=gd", "inner_solver.tol=null", "inner_solver.steps=100",
            "outer_steps=100", "chunk_steps=10", "wandb.mode=disabled")  # fmt: skip


def entries(folder: Path) -> list:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        out = []
        for i, (lr, seed) in enumerate(
            (lr, seed) for lr in (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5) for seed in range(8)
        ):
            overrides = [*SETTINGS, f"lr={lr}", f"seed={seed}"]
            out.append((compose(config_name="train", overrides=overrides), folder / str(i), overrides))
    return out


def main() -> None:
    from src.sweep import checkpoints
    from src.sweep.programs import Programs
    from src.sweep.runner import run_sweep

    saves: list[tuple[int, float]] = []
    save = checkpoints.BatchCheckpoint.save

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        save(self, *args, **kwargs)
        saves.append((self.path.stat().st_size, time.perf_counter() - t))

    checkpoints.BatchCheckpoint.save = timed
    programs = Programs()  # compiled once, shared by the three runs
    with tempfile.TemporaryDirectory() as tmp:
        walls: dict = {"none": [], "every chunk": []}
        for k, (label, every) in enumerate([("warm-up", 1e9)] + [("none", 1e9), ("every chunk", 1e-9)] * 3):
            folder = Path(tmp) / f"{k}"
            saves.clear()
            t = time.perf_counter()
            run_sweep(entries(folder), sweep_dir=folder, checkpoint_every_s=every, programs=programs, summary_file=None)
            walls.setdefault(label, []).append(time.perf_counter() - t)
        print(f"64 logreg jobs, one batch, 10 chunks of 10 outer steps; {len(saves)} checkpoints in the last run")
        sizes, seconds = [b for b, _ in saves], [s for _, s in saves]
        print(f"checkpoint size: {min(sizes):,} to {max(sizes):,} bytes (the carry + the rows so far)")
        print(f"time per save: median {statistics.median(seconds) * 1e3:.1f} ms, max {max(seconds) * 1e3:.1f} ms")
        none, every = statistics.median(walls["none"]), statistics.median(walls["every chunk"])
        print(f"sweep wall time (median of 3): no checkpoint {none:.2f} s, a checkpoint every chunk {every:.2f} s")


if __name__ == "__main__":
    main()
