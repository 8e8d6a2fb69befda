"""Validation of a composed config, the static/dynamic split, and config -> objects.

A composed Hydra config is checked here before any work (by the pydantic schemas of
:mod:`src.config.schemas`): every key of every group is known, typed and in range, or a
:class:`ConfigError` names the key, the value and what is allowed. The run part of a
config is then split into

* the **static** part (anything that changes shapes or control flow: solver names,
  step counts, ``maxiter``, precision, whether a tolerance is set at all), a hashable
  tuple that keys the compiled program and groups batched sweeps, and
* the **dynamic** part (floats and the seed), traced values that can differ between
  the members of one vmapped batch.

:mod:`src.config.build` turns a validated config into the solver and method objects of the
numerical core (which reads no config).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, NamedTuple

import annotated_types as at

from src.config.schemas import (
    ConfigError,
    Finite,
    Inner,
    Run,
    Wandb,
    check,
    check_choice,
    describe,
    signature_model,
    solver_model,
)

RUN_KEYS = (
    "lr",
    "seed",
    "outer_steps",
    "precision",
    "chunk_steps",
    "reference_newton_steps",
    "batch_size",
    "eval_every",
)
GROUPS = ("objective", "inner_solver", "linear_solver", "hypergrad", "optimizer")
CHOSEN_GROUPS = ("objective", "method", *GROUPS[1:])  # every group whose option a user chooses
META_KEYS = ("wandb", "study", "hydra", "method")  # method: a preset; a single-loop method's node
PASSTHROUGH = ("_target_",)  # a factory's import path: checked by importing it


def linear_solver_classes() -> dict[str, type]:
    from src.core import linsolve

    return {
        "cg": linsolve.CG,
        "gmres": linsolve.GMRES,
        "bicgstab": linsolve.BiCGStab,
        "neumann": linsolve.Neumann,
        "direct": linsolve.Direct,
        "identity": linsolve.Identity,
    }


def _stochastic_methods() -> dict[str, type]:
    from src.core.stochastic import METHODS

    return METHODS


def method_class(node: Mapping[str, Any]) -> type:
    """The class of a single-loop method node: a researcher's own in ``method._target_``
    (a frozen dataclass with a ``schedule`` field, written on the protocol of
    :mod:`src.core.stochastic`), else the shipped method named ``method.name``."""
    methods = _stochastic_methods()
    if "_target_" in node:
        import dataclasses

        cls = locate(node["_target_"], "method._target_")
        fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        if not isinstance(cls, type) or "schedule" not in fields or not hasattr(cls, "step"):
            raise ConfigError(
                "method._target_", node["_target_"],
                "a single-loop method class (a frozen dataclass with a schedule field and init/step, "
                "e.g. a subclass of src.core.stochastic.SOBA; see examples/clipped_soba.py)",
            )  # fmt: skip
        return cls
    if node.get("name") not in methods:
        raise ConfigError(
            "method.name",
            node.get("name"),
            f"one of {', '.join(methods)}, or your own method's class in method._target_",
        )
    return methods[node["name"]]


@functools.cache
def stochastic_model(cls: type):
    """The options of a single-loop method: its schedule's and its own (not ``batch_size``,
    a top-level key)."""
    from pydantic import create_model

    from src.config.schemas import STRICT
    from src.core.stochastic import Schedule

    fields = {**solver_model(Schedule).model_fields, **solver_model(cls).model_fields}
    fields.pop("batch_size")
    return create_model(
        f"Options_{cls.__name__}", __config__=STRICT, **{k: (f.annotation, f) for k, f in fields.items()}
    )


def _hypergrad_methods() -> dict[str, type]:
    from src.core.hypergrad import Implicit, Unrolled

    return {"implicit": Implicit, "unrolled": Unrolled}


def _checked(model, node: Mapping[str, Any], prefix: str) -> dict:
    """``check`` with the factory path (``_target_``, checked by importing it) passed through."""
    passed = {k: node[k] for k in PASSTHROUGH if k in node}
    out = check(model, {k: v for k, v in node.items() if k not in passed}, prefix, also=tuple(passed))
    return {**passed, **out}


@functools.cache
def locate(path: str, key: str) -> Callable:
    """Import the object named by a ``_target_`` string, or raise a ConfigError."""
    from hydra.utils import get_object

    try:
        found = get_object(path)
    except Exception as exc:  # noqa: BLE001 - any import failure is a config error here
        raise ConfigError(key, path, f"an importable callable ({type(exc).__name__}: {exc})") from None
    if not callable(found):
        raise ConfigError(key, path, f"an importable callable (it is a {type(found).__name__})")
    return found


# ----------------------------------------------------------------------------- flatten
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


# ----------------------------------------------------------------------------- validate
class RunConfig(NamedTuple):
    """A validated run: its nested config, static part (hashable) and dynamic part."""

    tree: dict[str, Any]
    static: tuple[tuple[str, Any], ...]
    dynamic: dict[str, float]  # dotted key -> float; "seed" -> int
    wandb: dict[str, Any] = {"mode": "disabled"}  # noqa: RUF012 - read-only default

    @property
    def seed(self) -> int:
        return int(self.dynamic["seed"])

    @property
    def precision(self) -> str:
        return self.tree["precision"]

    @property
    def fingerprint(self) -> str:
        """What a job's stored results must match to be trusted (``summary.json``'s
        ``config_fingerprint``)."""
        from src.sweep.files import config_fingerprint

        return config_fingerprint(self.tree)


def _group(cfg: Mapping, name: str) -> dict:
    node = cfg.get(name)
    if not isinstance(node, Mapping):
        raise ConfigError(name, node, f"a config group; choose one with {name}=<option>")
    return dict(node)


PROX_SOLVERS = {"ista": False, "fista": True}  # name -> accelerated


def _check_inner(node: dict) -> dict:
    name = node.get("name")
    if name in PROX_SOLVERS:
        from src.core.inner import ProxGradient

        return _steps_given(check(solver_model(ProxGradient), node, "inner_solver"))
    if name == "exact" or "_target_" not in node:
        if name != "exact":
            raise ConfigError("inner_solver.name", name, "'exact', or an optax factory in inner_solver._target_")
        return _checked(Inner, node, "inner_solver")
    factory = locate(node["_target_"], "inner_solver._target_")
    inner_keys = {
        k: Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation for k, f in Inner.model_fields.items()
    }
    out = _checked(signature_model((factory,), ("learning_rate",), **inner_keys), node, "inner_solver")
    lr_required = inspect.signature(factory).parameters.get("learning_rate")
    if out.get("lr") is None and lr_required is not None and lr_required.default is inspect.Parameter.empty:
        raise ConfigError("inner_solver.lr", None, f"a positive number ({node['_target_']} needs a step size)")
    return _steps_given(out)


def _steps_given(out: dict) -> dict:
    """An iterative inner solver's ``steps`` (removed with ``~inner_solver.steps``) is required."""
    if out.get("steps") is None:
        raise ConfigError("inner_solver.steps", None, "a value is required (an integer >= 1)")
    return out


def _check_optimizer(node: dict) -> dict:
    if "_target_" not in node:
        raise ConfigError("optimizer._target_", None, "an optax optimizer factory, e.g. optax.adam")
    factory = locate(node["_target_"], "optimizer._target_")
    model = signature_model((factory,), name=str, learning_rate=Annotated[float, at.Gt(0), Finite])
    return _checked(model, node, "optimizer")


def _check_objective(node: dict):
    """Checked objective options, the names of its factory's (static) parameters, the objective."""
    if "_target_" not in node:
        raise ConfigError("objective._target_", None, "the factory of the objective, e.g. src.objectives.ridge.make")
    factory = locate(node["_target_"], "objective._target_")
    make_keys = set(signature_model((factory,)).model_fields)
    static_given = check(signature_model((factory,)), {k: v for k, v in node.items() if k in make_keys}, "objective")
    objective = _call_factory(factory, node["_target_"], tuple(sorted(static_given.items())))
    model = signature_model((factory, objective.data), ("seed",), name=str)
    return _checked(model, node, "objective"), make_keys, objective


def _call_factory(factory: Callable, target: str, static_items: tuple):
    """The objective a factory returns, or a ConfigError naming ``objective._target_``."""
    from src.objectives import Objective

    allowed = "an objective factory returning src.objectives.Objective (e.g. src.objectives.ridge.make)"
    try:
        objective = construct_objective(factory, static_items)
    except Exception as exc:  # noqa: BLE001 - whatever a wrong target raises when called
        raise ConfigError(
            "objective._target_", target, f"{allowed}; calling it failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(objective, Objective):
        raise ConfigError("objective._target_", target, f"{allowed}; it returned {type(objective).__name__}")
    return objective


@functools.lru_cache(maxsize=64)
def construct_objective(factory: Callable, static_items: tuple):
    """An objective from its factory and static options, built once per process."""
    return factory(**dict(static_items))


def validate(cfg: Mapping) -> RunConfig:
    """Check a composed config (a DictConfig or dict) and split its run part."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = dict(cfg)
    allowed = set(RUN_KEYS) | set(GROUPS) | set(META_KEYS)
    for key, value in cfg.items():
        if key not in allowed:
            raise ConfigError(key, value, f"unknown key; allowed top-level keys: {', '.join(sorted(allowed))}")
    single_loop = cfg.get("method") is not None
    # what a single-loop method does not use (lr, the nested groups) is neither checked nor stored
    tree: dict[str, Any] = check(Run, {k: cfg[k] for k in RUN_KEYS if k in cfg and not (single_loop and k == "lr")})
    if not single_loop and "lr" not in tree:
        raise ConfigError("lr", None, f"a value is required ({describe(Run.model_fields['lr'])})")
    for key in ("chunk_steps", "reference_newton_steps", "batch_size"):
        tree.setdefault(key, None)
    tree.setdefault("eval_every", 1)
    if single_loop:  # method=soba|saba|...: its own node; the nested groups are not used
        node = _group(cfg, "method")
        tree["method"] = _checked(stochastic_model(method_class(node)), node, "method")
    else:
        tree["inner_solver"] = _check_inner(_group(cfg, "inner_solver"))
        for group, classes in (("linear_solver", linear_solver_classes()), ("hypergrad", _hypergrad_methods())):
            tree[group] = check_choice(group, classes, _group(cfg, group))
        tree["optimizer"] = _check_optimizer(_group(cfg, "optimizer"))
    tree["objective"], make_keys, objective = _check_objective(_group(cfg, "objective"))
    check_compatible(tree, objective)

    static, dynamic = [], {}
    for key, value in flatten(tree).items():
        group, _, leaf = key.partition(".")
        baked = group == "objective" and leaf in make_keys  # factory options are compiled in
        if key == "seed" or (isinstance(value, float) and not baked):
            dynamic[key] = value
        elif key != "chunk_steps":
            static.append((key, value))
    check_representable(dynamic, tree["precision"])
    wandb = check(Wandb, dict(cfg.get("wandb") or {}), "wandb")
    wandb.setdefault("mode", "offline")
    return RunConfig(tree, tuple(sorted(static)), dynamic, wandb)


def check_representable(dynamic: Mapping[str, Any], precision: str) -> None:
    """Every traced float survives the run's precision: a value that float32 turns into 0
    or infinity is refused rather than silently changed."""
    import numpy as np

    dtype = np.float32 if precision == "float32" else np.float64
    info = np.finfo(dtype)
    for key, value in dynamic.items():
        if key == "seed" or not value:
            continue
        with np.errstate(over="ignore", under="ignore"):
            cast = float(dtype(value))
        if cast == 0.0 or not math.isfinite(cast):
            raise ConfigError(
                key,
                value,
                f"a value that {precision} can hold (it becomes {cast} in {precision}, precision={precision}: "
                f"magnitudes from {info.smallest_subnormal:.1e} to {info.max:.1e}); or precision=float64",
            )


def check_batch_size(run: RunConfig, objective, data) -> None:
    """A minibatch no larger than the larger sum (a ``batch_size`` above a sum's samples is
    that sum in full, as a full-batch run is; above both it is a full-batch run by mistake)."""
    from src.core.sampling import sizes

    batch_size = run.tree["batch_size"]
    if batch_size is None or not (objective.inner_samples or objective.outer_samples):
        return
    n_in, n_out = sizes(objective, data)
    if batch_size > max(n_in, n_out):
        name = run.tree["objective"].get("name", run.tree["objective"]["_target_"])
        raise ConfigError(
            "batch_size",
            batch_size,
            f"at most {max(n_in, n_out)}, the samples of objective {name!r} (its inner sum has {n_in}, its outer "
            f"sum {n_out}; a sum with fewer samples than batch_size is taken in full); null for full batch",
        )


def check_compatible(tree: dict, objective) -> None:
    """Choices that are valid alone but not together."""
    name = tree["objective"].get("name", tree["objective"]["_target_"])
    if tree["batch_size"] is not None and not (objective.inner_samples or objective.outer_samples):
        raise ConfigError(
            "batch_size",
            tree["batch_size"],
            f"null (full batch): objective {name!r} is not a finite sum "
            "(finite sums: quadratic_sum, data_cleaning, logreg)",
        )
    if objective.prox is not None and "method" in tree:
        raise ConfigError(
            "method", tree["method"]["name"],
            f"a nested method with inner_solver=ista|fista: objective {name!r} has a non-smooth inner problem, "
            "which the single-loop methods (gradient steps on the inner variable) do not handle",
        )  # fmt: skip
    if objective.prox is not None and tree["inner_solver"]["name"] not in PROX_SOLVERS:
        raise ConfigError(
            "inner_solver", tree["inner_solver"]["name"],
            f"ista or fista (inner_solver=ista|fista): objective {name!r} has a non-smooth inner problem",
        )  # fmt: skip
    if "method" in tree:
        return
    inner, hg, lin = tree["inner_solver"], tree["hypergrad"], tree["linear_solver"]
    if inner["name"] in PROX_SOLVERS and objective.prox is None:
        raise ConfigError(
            "inner_solver",
            inner["name"],
            f"a smooth solver (gd, adam, lbfgs): objective {name!r} has no non-smooth part "
            "(ista and fista are for lasso, elastic_net)",
        )
    if inner["name"] == "exact" and objective.inner_solution is None:
        raise ConfigError(
            "inner_solver",
            "exact",
            f"objective {name!r} has no closed-form inner solution; choose an iterative inner solver (gd, adam, lbfgs)",
        )
    if hg["name"] == "unrolled":
        if inner.get("tol") is not None and inner["name"] != "exact":
            raise ConfigError(
                "inner_solver.tol",
                inner["tol"],
                "null with hypergrad=unrolled: reverse mode cannot pass through a tolerance-stopped "
                "(lax.while_loop) inner loop",
            )
        if "lbfgs" in str(inner.get("_target_", "")):
            raise ConfigError(
                "inner_solver",
                inner["name"],
                "a fixed-step solver (gd, adam, ...) with hypergrad=unrolled: lbfgs's line search is a "
                "lax.while_loop, which reverse mode cannot differentiate",
            )
    if hg["name"] == "implicit" and linear_solver_classes()[lin["name"]].symmetric_only and not objective.symmetric:
        raise ConfigError(
            "linear_solver",
            lin["name"],
            "gmres, bicgstab, neumann or direct: this objective's implicit system is not symmetric",
        )
