"""``hydra/launcher=batched``: run a multirun's jobs as vmap-batched XLA programs.

A thin shim: the work is in ``src.launcher`` (Hydra side: composing jobs, their
directories and files, ``JobReturn``s) and ``src.batching`` (grouping and running).
Hydra imports every plugin at start-up, so nothing heavy (jax) is imported here.

A task function is *batch-aware* when it has a ``run_batch`` attribute (``src.train``'s
has); any other task runs one job after another exactly like Hydra's basic launcher.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.bilevel_launcher.batched_launcher.BatchedLauncher"
    max_batch_size: int = 1024  # a group larger than this runs as several batches
    resume: bool = True  # skip jobs whose summary.json says completed


ConfigStore.instance().store(
    group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="bilevel-sweeps"
)


class BatchedLauncher(Launcher):
    def __init__(self, max_batch_size: int = 1024, resume: bool = True) -> None:
        self.max_batch_size = max_batch_size
        self.resume = resume
        self.config = self.hydra_context = self.task_function = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if getattr(self.task_function, "run_batch", None) is None:
            from hydra._internal.core_plugins.basic_launcher import BasicLauncher

            basic = BasicLauncher()
            basic.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
            return basic.launch(job_overrides, initial_job_idx)
        from src.launcher import launch_batched

        return launch_batched(self, job_overrides, initial_job_idx)
