"""A validated config (``RunConfig.tree``) -> the objects of the numerical core.

:func:`build_method` is the one place where the config's groups become solver and method
objects; :func:`objective_of` builds an objective once per static config.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from src.config.validation import (
    PROX_SOLVERS,
    construct_objective,
    linear_solver_classes,
    locate,
    method_class,
    unflatten,
)


def build_objective(obj_cfg: dict):
    """Call an objective's factory with its static options (those in its signature)."""
    factory = locate(obj_cfg["_target_"], "objective._target_")
    params = inspect.signature(factory).parameters
    return construct_objective(factory, tuple(sorted((k, v) for k, v in obj_cfg.items() if k in params)))


@functools.lru_cache(maxsize=256)
def objective_of(static: tuple):
    """The objective of a static config (built once per process)."""
    return build_objective(unflatten(dict(static))["objective"])


def optax_of(factory: Callable, options: Mapping[str, Any]):
    """An :class:`src.core.inner.Optax`: float options (and None) traced, the rest fixed."""
    from src.core.inner import Optax

    traced = {k: v for k, v in options.items() if v is None or (isinstance(v, float) and not isinstance(v, bool))}
    fixed = tuple(sorted((k, v) for k, v in options.items() if k not in traced))
    return Optax(factory, traced, fixed)


def linear_solver_of(cfg: Mapping[str, Any]):
    return linear_solver_classes()[cfg["name"]](**{k: v for k, v in cfg.items() if k != "name"})


def build_method(tree: Mapping[str, Any]):
    """The method object of a validated config (``RunConfig.tree``): the only place where
    the config's groups become solvers; the numerical core reads no config."""
    from src.core.hypergrad import Implicit, Unrolled
    from src.core.inner import Exact, OptaxSolver
    from src.core.nested import NestedSolve

    if "method" in tree:
        return _single_loop(tree["method"], tree["batch_size"])
    inner_cfg = tree["inner_solver"]
    if inner_cfg["name"] in PROX_SOLVERS:
        from src.core.inner import ProxGradient

        inner = ProxGradient(
            int(inner_cfg["steps"]),
            inner_cfg.get("lr"),
            inner_cfg.get("tol"),
            bool(inner_cfg.get("warm_start", True)),
            PROX_SOLVERS[inner_cfg["name"]],
        )
    elif inner_cfg["name"] == "exact":
        inner = Exact(warm_start=bool(inner_cfg.get("warm_start", True)))
    else:
        options = {
            k: v for k, v in inner_cfg.items() if k not in ("_target_", "name", "steps", "lr", "tol", "warm_start")
        }
        optimizer = optax_of(
            locate(inner_cfg["_target_"], "inner_solver._target_"), {"learning_rate": inner_cfg.get("lr"), **options}
        )
        inner = OptaxSolver(
            optimizer, int(inner_cfg["steps"]), inner_cfg.get("tol"), bool(inner_cfg.get("warm_start", True))
        )
    hg = tree["hypergrad"]
    hypergrad = (
        Unrolled(hg.get("truncate")) if hg["name"] == "unrolled" else Implicit(linear_solver_of(tree["linear_solver"]))
    )
    opt = tree["optimizer"]
    factory = locate(opt["_target_"], "optimizer._target_")
    outer = optax_of(factory, {k: v for k, v in opt.items() if k not in ("_target_", "name")})
    return NestedSolve(inner, hypergrad, outer, tree["batch_size"])


def _single_loop(node: Mapping[str, Any], batch_size: int | None):
    import dataclasses

    from src.core.stochastic import Schedule

    cls = method_class(node)
    schedule = Schedule(**{f.name: node[f.name] for f in dataclasses.fields(Schedule)})
    own = {
        f.name: node[f.name]
        for f in dataclasses.fields(cls)
        if f.name not in ("schedule", "batch_size") and f.name in node
    }
    return cls(schedule=schedule, batch_size=batch_size, **own)
