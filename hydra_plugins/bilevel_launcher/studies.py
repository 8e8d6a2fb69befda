"""The ``study`` config group: the ready studies of ``sweeps/``, one per file.

Registered in Hydra's ConfigStore when Hydra scans its plugins at start-up, so
``python -m src.train -m study=linear_solvers`` works from any working directory; a
mistyped name gets Hydra's list of the available studies.
"""

from pathlib import Path

from hydra.core.config_store import ConfigStore

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


def register(directory: Path = SWEEPS) -> None:
    from omegaconf import OmegaConf

    for path in sorted(directory.glob("*.yaml")):
        ConfigStore.instance().store(
            group="study", name=path.stem, node=OmegaConf.load(path), package="_global_", provider="bilevel-sweeps"
        )


register()
