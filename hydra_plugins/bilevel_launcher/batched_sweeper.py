"""``hydra/sweeper=batched``: Hydra's basic sweeper with a cheaper legality check.

The basic sweeper checks a batch by composing every job from scratch
(``load_sweep_config``, ~55 ms a job) before the launcher composes them again. Jobs with
the same config-group choices and the same overridden keys compose alike, so this one
composes one job per such template; the values themselves are checked by the
application's validation before any work. A batch that failed (its jobs' ``JobReturn``s
raise, which makes the basic sweeper raise) ends the sweep with status 1 after the sweep's
own one-line report, not with a traceback; a sweep refused before any work (status 2)
leaves the ``multirun.yaml`` that its directory had.

``hydra.sweeper.also``: more grids, each a mapping like ``params``, whose jobs follow the
main grid's (with the command line's arguments too). A study can so put jobs whose keys
differ side by side: single-loop methods over ``method.step_size`` next to a full-batch
reference over ``lr`` (``sweeps/benchmark.yaml``). A grid with ``optional: true``
runs only where its first job's data can be built (a dataset that is downloaded, when it is
neither on disk nor downloadable): otherwise the sweep says in one line that it skipped it and
why (``sweeps/benchmark.yaml``'s ijcnn1 and covtype). Everything else is the basic sweeper's.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Dict, List, Optional  # noqa: UP035 - Hydra's ConfigStore needs typing generics

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class BatchedSweeperConf:
    _target_: str = "hydra_plugins.bilevel_launcher.batched_sweeper.BatchedSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    also: Optional[List[Dict[str, str]]] = None  # noqa: UP006, UP045 - more grids after params's


ConfigStore.instance().store(group="hydra/sweeper", name="batched", node=BatchedSweeperConf, provider="bilevel-sweeps")


class BatchedSweeper(BasicSweeper):
    def __init__(self, max_batch_size=None, params=None, also=None):
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.also = [dict(grid) for grid in also or ()]
        self._arguments: list[str] = []
        self._available: dict[str, str | None] = {}  # optional grids' problems: None, or why not

    def split_arguments(self, overrides, max_batch_size):  # the basic sweeper's staticmethod, per instance
        from hydra.core.override_parser.overrides_parser import OverridesParser

        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        for grid in self.also:
            optional = str(grid.get("optional", "false")).lower() == "true"
            keys = {k: v for k, v in grid.items() if k != "optional"}
            extra = parser.parse_overrides([f"{k}={v}" for k, v in keys.items()] + self._arguments)
            mine = [job for batch in BasicSweeper.split_arguments(extra, None) for job in batch]
            if optional and mine and not self._data_available(mine[0], keys):
                continue
            jobs += mine
        if max_batch_size is None:
            return [jobs]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))

    def _data_available(self, overrides: Sequence[str], grid: dict) -> bool:
        """Whether an optional grid's data can be built (its first job's); else one line."""
        import sys

        from src.config import validate
        from src.sweep.plan import job_data

        what = " ".join(f"{k}={v}" for k, v in grid.items() if k.startswith("objective"))
        if what not in self._available:  # one try per problem, however many grids it has
            try:
                from omegaconf import open_dict

                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(cfg):
                    del cfg["hydra"]  # the job's runtime keys (hydra.job.num) are not set yet
                job_data(validate(cfg))
                self._available[what] = None
            except Exception as exc:  # noqa: BLE001 - any reason the data cannot be built skips the grid
                self._available[what] = str(exc)
                print(f"Skipped the optional grids [{what}]: their data cannot be built: {exc}", file=sys.stderr)
        return self._available[what] is None

    def sweep(self, arguments: list[str]):
        self._arguments = list(arguments)
        import sys
        from pathlib import Path

        from src.sweep.outcome import BatchFailed

        saved = Path(str(self.config.hydra.sweep.dir), "multirun.yaml")
        before = saved.read_bytes() if saved.is_file() else None
        try:
            return super().sweep(arguments)
        except BatchFailed:  # the sweep said which batch failed and why; not a traceback
            sys.exit(1)
        except SystemExit as exc:
            if exc.code == 2:  # refused before any work: the directory keeps the sweep it had
                if before is None:
                    saved.unlink(missing_ok=True)
                else:
                    saved.write_bytes(before)
            raise

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from src.sweep.launcher import ConfigGroups, template_key

        loader = self.hydra_context.config_loader
        groups = ConfigGroups(loader, self.config)
        seen = set()
        for overrides in batch:
            key = template_key(overrides, groups)
            if key is None or key not in seen:
                loader.load_sweep_config(self.config, list(overrides))
                if key is not None:
                    seen.add(key)
