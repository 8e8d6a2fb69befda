"""A Hydra callback (set in ``conf/launch.yaml``): before a run or a multirun writes
anything, check its output directory and the launcher's options, and lock the sweep
directory for this process (see ``src.sweep.preflight``)."""

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class SweepGuard(Callback):
    def __init__(self) -> None:
        self.lock_fd: int | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src.sweep.preflight import check_output_dir

        check_output_dir(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from src.sweep.preflight import check_launcher, check_output_dir, lock_sweep_dir

        launcher = OmegaConf.to_container(config.hydra.launcher, resolve=False)
        if str(launcher.get("_target_", "")).endswith("BatchedLauncher"):
            check_launcher(launcher)
        sweep_dir = check_output_dir(config.hydra.sweep.dir, "hydra.sweep.dir")
        self.lock_fd = lock_sweep_dir(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import os

        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
