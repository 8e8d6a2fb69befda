"""The config layer: what a composed Hydra config may hold, and what it becomes.

* :mod:`src.config.schemas`: pydantic models of each part (strict types, ranges), derived
  from the solver classes and factory signatures, with errors worded for a user;
* :mod:`src.config.validation`: ``validate(cfg) -> RunConfig`` (checked, split into the
  static part that keys a compiled program and the dynamic part that is traced);
* :mod:`src.config.build`: a validated config -> the objects of the numerical core.

It imports the core (to read its solver classes); the core never imports it.
"""

from src.config.build import build_method, build_objective, linear_solver_of, objective_of, optax_of
from src.config.schemas import ConfigError
from src.config.validation import (
    CHOSEN_GROUPS,
    GROUPS,
    RUN_KEYS,
    RunConfig,
    check_batch_size,
    check_compatible,
    flatten,
    locate,
    method_class,
    unflatten,
    validate,
)

__all__ = [
    "CHOSEN_GROUPS",
    "GROUPS",
    "RUN_KEYS",
    "ConfigError",
    "RunConfig",
    "build_method",
    "build_objective",
    "check_batch_size",
    "check_compatible",
    "flatten",
    "linear_solver_of",
    "locate",
    "method_class",
    "objective_of",
    "optax_of",
    "unflatten",
    "validate",
]
