"""The plan stage's pieces: a job, its data, and how jobs group into programs.

* :class:`Job`: a validated run and its output directory;
* :func:`job_data`: a job's host-side data, memoized for the sweep in flight (the jobs of
  a sweep over learning rates x seeds build each seed's data once); :func:`release_data`
  drops them when the sweep ends;
* :func:`group_by_static` / :func:`data_groups` / :func:`key_groups`: jobs that share a
  program (same static config) and, inside a batch, jobs that share a dataset, and a seed;
* :func:`plan_batches`: each group cut into batches of one grid shape, so a group
  compiles once; :func:`group_labels`: what tells the groups apart, for people.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.config import CHOSEN_GROUPS, RunConfig, check_batch_size, objective_of, unflatten


@dataclasses.dataclass
class Job:
    run: RunConfig
    out_dir: Path
    overrides: Sequence[str] = ()
    name: str = ""


def _data_key(run: RunConfig) -> tuple[int, tuple]:
    """What a job's data depend on: its seed (unless the objective's data do not use it) and
    the options of ``objective.data``."""
    objective = objective_of(run.static)
    params = inspect.signature(objective.data).parameters
    options = tuple(sorted((k, v) for k, v in run.tree["objective"].items() if k in params and k != "seed"))
    return (run.seed if seeded_data(run.static, options) else 0), options


@functools.lru_cache(maxsize=256)
def seeded_data(static: tuple, options: tuple) -> bool:
    """Whether an objective's data depend on the seed: what its ``randomness`` declares, or,
    where it declares nothing (``None``, a researcher's own objective), whether the data of
    seeds 0 and 1 differ. Jobs share one copy of the data only when they do not, so a
    sweep over seeds never runs copies of one job by mistake."""
    declared = objective_of(static).randomness
    if declared is not None:
        return bool(declared)
    a, b = _data(static, 0, options), _data(static, 1, options)
    return a.keys() != b.keys() or any(
        a[k].shape != b[k].shape or not np.array_equal(a[k], b[k], equal_nan=True) for k in a
    )


def job_data(run: RunConfig) -> dict[str, np.ndarray]:
    """Host-side data of one job (``objective.data(seed, **options)``), memoized: the jobs
    of a sweep over learning rates x seeds build each seed's data once."""
    seed, options = _data_key(run)
    data = _data(run.static, seed, options)
    check_batch_size(run, objective_of(run.static), data)
    return data


@functools.lru_cache(maxsize=256)
def _data(static: tuple, seed: int, options: tuple) -> dict[str, np.ndarray]:
    data = {k: np.asarray(v) for k, v in objective_of(static).data(seed, **dict(options)).items()}
    for v in data.values():
        v.setflags(write=False)
    return data


def release_data() -> None:
    """Forget every dataset built so far: a sweep calls this when it ends, so that a process
    that runs several sweeps (a notebook, the optuna sweeper's launches, the tests) holds the
    data of one sweep at a time."""
    _data.cache_clear()
    seeded_data.cache_clear()


def data_groups(jobs: Sequence[Job]) -> list[list[int]]:
    """Indices of the jobs grouped by the data they use, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(_data_key(job.run), []).append(i)
    return list(groups.values())


def key_groups(jobs: Sequence[Job]) -> list[list[list[int]]]:
    """Indices of the jobs grouped by dataset (:func:`data_groups`), then, inside a dataset,
    by seed: the jobs of one seed have one key, so they draw the same minibatches (and
    resampled tasks), and a batch computes those once for all of them."""
    rows = []
    for row in data_groups(jobs):
        seeds: dict[int, list[int]] = {}
        for i in row:
            seeds.setdefault(jobs[i].run.seed, []).append(i)
        rows.append(list(seeds.values()))
    return rows


def batch_shape(jobs: Sequence[Job]) -> tuple[int, int, int]:
    """The smallest (datasets, seeds per dataset, jobs per seed) grid that holds these jobs."""
    grid = key_groups(jobs)
    return len(grid), max(len(r) for r in grid), max(len(g) for r in grid for g in r)


def group_by_static(runs: Sequence[RunConfig]) -> dict[tuple, list[int]]:
    """Indices of runs grouped by their static config, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(runs):
        groups.setdefault(r.static, []).append(i)
    return groups


def static_label(static: tuple) -> str:
    """A short human label of a static config: its group choices."""
    tree = unflatten(dict(static))
    return " ".join(f"{g}={tree[g].get('name', '?')}" for g in CHOSEN_GROUPS if g in tree and g != "optimizer")


def group_labels(statics: Sequence[tuple]) -> dict[tuple, str]:
    """A label per static config of a sweep that tells its groups apart: the config groups
    whose option differs (``linear_solver=gmres``) and the other static keys that differ
    (``inner_solver.steps=30``); a sweep of one group gets its group choices."""
    statics = list(dict.fromkeys(statics))
    if len(statics) < 2:
        return {st: static_label(st) for st in statics}
    flats = [dict(st) for st in statics]
    keys = list(dict.fromkeys(k for f in flats for k in f))
    differ = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    named = [k.split(".")[0] for k in differ if k.count(".") == 1 and k.endswith(".name")]
    shown = [f"{k}.name" for k in named] + [k for k in differ if k.split(".")[0] not in named]
    return {  # a key a group does not have (a single-loop method's inner_solver) is left out
        st: " ".join(f"{k.removesuffix('.name')}={f[k]}" for k in shown if f.get(k) is not None)
        for st, f in zip(statics, flats, strict=True)
    }


def _tiles(rows: list[list[list[int]]], max_batch_size: int) -> tuple[list[list[int]], tuple[int, int, int]]:
    """Cut a group's jobs, given as rows of jobs that share a dataset, each a list of the
    jobs of one seed (:func:`key_groups`), into batches of one grid shape (D datasets x S
    seeds x K jobs, D * S * K <= max_batch_size): each batch takes up to D rows, up to S
    seeds of each and up to K jobs of each seed. The shape makes the fewest batches (then
    wastes the fewest padded slots, then puts the most jobs on one seed); every batch is
    padded to it, so the group compiles once."""
    seeds = max(map(len, rows))
    per_seed = max(len(g) for r in rows for g in r)

    blocks = lambda d: [rows[b : b + d] for b in range(0, len(rows), d)]
    sizes = lambda block, s, k: (-(-max(map(len, block)) // s), -(-max(len(g) for r in block for g in r) // k))

    def cut(d, s, k):
        for block in blocks(d):
            n_s, n_k = sizes(block, s, k)
            for a in range(n_s):
                for c in range(n_k):
                    tile = [i for r in block for g in r[a * s : (a + 1) * s] for i in g[c * k : (c + 1) * k]]
                    if tile:
                        yield tile

    best = None
    for k in range(1, min(per_seed, max_batch_size) + 1):
        for s in range(1, min(seeds, max_batch_size // k) + 1):
            d = min(len(rows), max_batch_size // (s * k))
            count = sum(a * c for a, c in (sizes(block, s, k) for block in blocks(d)))  # (ragged grids: at most)
            cost = (count, count * d * s * k, -k)  # then the most jobs per seed: the most sharing
            if best is None or cost < best[0]:
                best = (cost, (d, s, k))
    shape = best[1]
    return list(cut(*shape)), shape


def plan_batches(jobs: Sequence[Job], pending: Sequence[int], max_batch_size: int):
    """Group pending jobs by static config and cut each group into batches of at most
    ``max_batch_size`` jobs that share one program shape: ``(groups, [(static, job
    indices, (datasets, seeds per dataset, jobs per seed))])``."""
    groups = group_by_static([jobs[i].run for i in pending])
    batches = []
    for static, members in groups.items():
        members = [pending[m] for m in members]
        rows = [[[members[k] for k in g] for g in row] for row in key_groups([jobs[i] for i in members])]
        tiles, shape = _tiles(rows, max_batch_size)
        batches.extend((static, tile, shape) for tile in tiles)
    return groups, batches


def seed_used(run: RunConfig) -> bool:
    """Whether a job's seed changes anything: its objective's data, resampled data (iMAML's
    tasks), a minibatch sampler, or the method's own randomness (a random truncation)."""
    objective = objective_of(run.static)
    _, options = _data_key(run)
    sampled = run.tree.get("batch_size") is not None
    return seeded_data(run.static, options) or objective.resample is not None or sampled or _draws(run)


def _draws(run: RunConfig) -> bool:
    node = run.tree.get("method")
    if not node:
        return False
    from src.config.validation import method_class

    return bool(getattr(method_class(node), "random", False))


def unused_seeds(runs: Sequence[RunConfig]) -> str | None:
    """A one-line warning when jobs differ only in a seed that changes nothing (copies of one
    job, whose spread over seeds would read as zero), else None."""
    copies: dict[tuple, set[int]] = {}
    for run in runs:
        if not seed_used(run):
            rest = tuple(sorted((k, v) for k, v in run.dynamic.items() if k != "seed"))
            copies.setdefault((run.static, rest), set()).add(run.seed)
    wasted = {key: group for key, group in copies.items() if len(group) > 1}
    if not wasted:
        return None
    seeds = sorted({s for group in wasted.values() for s in group})
    statics = list(dict.fromkeys(static for static, _ in wasted))
    names = {unflatten(dict(st))["objective"].get("name", "the objective") for st in statics}
    where = (
        "these jobs"
        if len(statics) == len({r.static for r in runs})
        else "the jobs of " + "; ".join(static_label(st) for st in statics)
    )
    return (
        f"Warning: seed={','.join(map(str, seeds))} changes nothing in {where}: objective "
        f"{', '.join(map(repr, sorted(names)))}'s data do not depend on the seed and the method draws nothing at "
        "random, so the jobs of each seed are copies (a spread over them is not a spread over seeds)."
    )
