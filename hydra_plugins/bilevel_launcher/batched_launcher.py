"""``hydra/launcher=batched``: run a multirun's jobs as vmap-batched XLA programs.

A thin shim: the work is in ``src.sweep.launcher`` (Hydra side: composing jobs, their
directories and files, ``JobReturn``s) and ``src.sweep.batching`` (grouping and running).
Hydra imports every plugin at start-up, so nothing heavy (jax) is imported here.

A task function is *batch-aware* when it has a ``run_sweep`` attribute (``src.train``'s
has); any other task runs one job after another exactly like Hydra's basic launcher.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher

from src.sweep.defaults import CHECKPOINT_EVERY_S, MAX_BATCH_SIZE


class Executor(Enum):
    local = "local"  # batches run in this process, one after another
    submitit_local = "submitit_local"  # each batch a submitit job on this machine (for testing)
    submitit_slurm = "submitit_slurm"  # each batch a SLURM job (an array task) through submitit


@dataclass
class BatchedLauncherConf:
    _target_: str = "hydra_plugins.bilevel_launcher.batched_launcher.BatchedLauncher"
    max_batch_size: int = MAX_BATCH_SIZE  # a group larger than this runs as several batches
    resume: bool = True  # skip jobs whose complete results were produced by the same config
    overwrite: bool = False  # rerun jobs whose directories hold results of other settings (else refused)
    executor: Executor = Executor.local
    # a batch run in chunks (chunk_steps) saves its state this often, and when it is stopped
    # (Ctrl-C, SIGTERM, SLURM's USR2); its next attempt goes on from there. null: only when stopped
    checkpoint_every_s: float | None = CHECKPOINT_EVERY_S
    # executor=submitit_*: each batch is one submitit job. Names and defaults as
    # hydra-submitit-launcher's; a batch is one task on one node.
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"
    timeout_min: int = 60
    cpus_per_task: int | None = None
    gpus_per_node: int | None = None
    mem_gb: int | None = None
    name: str = "${hydra.job.name}"
    stderr_to_stdout: bool = False
    # a timed-out or pre-empted batch is requeued this many times; the launcher's resume
    # makes that safe (hydra-submitit-launcher's default is 0)
    max_num_timeout: int = 3
    signal_delay_s: int = 120  # USR2 this long before the time limit: checkpoint and requeue
    # SLURM only
    partition: str | None = None
    qos: str | None = None
    comment: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    gres: str | None = None
    cpus_per_gpu: int | None = None
    gpus_per_task: int | None = None
    mem_per_gpu: str | None = None
    mem_per_cpu: str | None = None
    account: str | None = None
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    array_parallelism: int = 256  # at most this many batches run at once
    setup: list[str] | None = None  # shell lines run before the batch (module load, ...)


ConfigStore.instance().store(
    group="hydra/launcher", name="batched", node=BatchedLauncherConf, provider="bilevel-sweeps"
)


class BatchedLauncher(Launcher):
    def __init__(
        self,
        max_batch_size: int = 1024,
        resume: bool = True,
        overwrite: bool = False,
        executor="local",
        checkpoint_every_s: float | None = CHECKPOINT_EVERY_S,
        **submitit,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.checkpoint_every_s = checkpoint_every_s
        self.resume, self.overwrite = resume, overwrite
        self.executor = getattr(executor, "value", executor)
        self.submitit = submitit  # executor options, used when executor is submitit_*
        self.config = self.hydra_context = self.task_function = None
        self.programs = None  # compiled programs, kept across the launches of one multirun

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if getattr(self.task_function, "run_sweep", None) is None:
            if self.executor != "local":
                raise ValueError(
                    f"hydra.launcher.executor={self.executor} runs batches of a batch-aware task "
                    "(one with a run_sweep attribute, like src.train's); for any other task use "
                    "hydra/launcher=submitit_local or submitit_slurm (hydra-submitit-launcher)"
                )
            from hydra._internal.core_plugins.basic_launcher import BasicLauncher

            basic = BasicLauncher()
            basic.setup(hydra_context=self.hydra_context, task_function=self.task_function, config=self.config)
            return basic.launch(job_overrides, initial_job_idx)
        from src.sweep.launcher import launch_batched

        return launch_batched(self, job_overrides, initial_job_idx)
