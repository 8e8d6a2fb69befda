"""Config schemas, validation and the static/dynamic split.

A composed Hydra config is checked here before any work: every key of every group
is known, typed and in range, or a :class:`ConfigError` names the key, the value and
what is allowed. The run part of a config is then split into

* the **static** part (anything that changes shapes or control flow: solver names,
  step counts, ``maxiter``, precision, whether a tolerance is set at all), a hashable
  tuple that keys the compiled program and groups batched sweeps, and
* the **dynamic** part (floats and the seed), traced values that can differ between
  the members of one vmapped batch.

Schemas are plain functions or dataclasses whose parameters carry their types and, via
``Annotated[..., Interval(...)]``, their allowed ranges. Objectives and optax
optimizers are checked against the signature of their factory, so a researcher's own
objective gets the same checks with no extra code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, NamedTuple

RUN_KEYS = ("lr", "seed", "outer_steps", "precision", "chunk_steps", "reference_newton_steps")
GROUPS = ("objective", "inner_solver", "linear_solver", "hypergrad", "optimizer")
PRECISIONS = ("float32", "float64")


class ConfigError(ValueError):
    """A config value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}: {allowed}")


@dataclasses.dataclass(frozen=True)
class Interval:
    """Allowed range of a number; ``lo``/``hi`` are inclusive unless ``open_lo``/``open_hi``."""

    lo: float = -math.inf
    hi: float = math.inf
    open_lo: bool = False
    open_hi: bool = False

    def contains(self, x: float) -> bool:
        above = x > self.lo if self.open_lo else x >= self.lo
        below = x < self.hi if self.open_hi else x <= self.hi
        return above and below

    def __str__(self) -> str:
        lo = "(" if self.open_lo else "["
        hi = ")" if self.open_hi else "]"
        return f"in {lo}{self.lo:g}, {self.hi:g}{hi}"


Positive = Interval(0.0, open_lo=True)
NonNegative = Interval(0.0)
PositiveInt = Interval(1.0)
Fraction = Interval(0.0, 1.0)


# ----------------------------------------------------------------------------- schemas
@dataclasses.dataclass
class RunSchema:
    """Top-level keys of ``conf/train.yaml`` that a run reads."""

    lr: Annotated[float, Positive] = 0.08
    seed: Annotated[int, Interval(0, 2**32 - 1)] = 0  # a PRNG key and numpy/scikit-learn random_state
    outer_steps: Annotated[int, PositiveInt] = 100
    precision: Literal["float32", "float64"] = "float32"
    chunk_steps: Annotated[int, PositiveInt] | None = None
    reference_newton_steps: Annotated[int, PositiveInt] | None = None


@dataclasses.dataclass
class WandbSchema:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str | None = "bilevel-sweeps"
    entity: str | None = None
    group: str | None = None
    tags: list | None = None
    job_type: str | None = None


@dataclasses.dataclass
class InnerSchema:
    """Every inner solver: ``steps`` (and ``lr`` where it has a step size)."""

    name: str = "adam"
    steps: Annotated[int, PositiveInt] = 50
    lr: Annotated[float, Positive] | None = None
    tol: Annotated[float, NonNegative] | None = None
    warm_start: bool = True


@dataclasses.dataclass
class LinearSolverSchema:
    name: str = "cg"
    maxiter: Annotated[int, PositiveInt] = 100
    tol: Annotated[float, NonNegative] = 1e-5
    warm_start: bool = False


@dataclasses.dataclass
class GmresSchema(LinearSolverSchema):
    restart: Annotated[int, PositiveInt] = 20


@dataclasses.dataclass
class NeumannSchema:
    name: str = "neumann"
    maxiter: Annotated[int, PositiveInt] = 50
    step_size: Annotated[float, Positive] = 0.1
    warm_start: bool = False


@dataclasses.dataclass
class NoOptionSchema:
    name: str = "direct"


@dataclasses.dataclass
class ImplicitSchema:
    name: str = "implicit"


@dataclasses.dataclass
class UnrolledSchema:
    name: str = "unrolled"
    truncate: Annotated[int, PositiveInt] | None = None


INNER_SOLVERS = ("gd", "adam", "lbfgs", "exact", "optax")
LINEAR_SCHEMAS: dict[str, type] = {
    "cg": LinearSolverSchema,
    "bicgstab": LinearSolverSchema,
    "gmres": GmresSchema,
    "neumann": NeumannSchema,
    "direct": NoOptionSchema,
    "identity": NoOptionSchema,
}
HYPERGRAD_SCHEMAS: dict[str, type] = {"implicit": ImplicitSchema, "unrolled": UnrolledSchema}


# ----------------------------------------------------------------------------- checks
def _unwrap(annotation: Any) -> tuple[Any, Interval | None, bool]:
    """(base type, interval, optional) of an annotation such as ``Annotated[int, I] | None``."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        annotation = rest[0] if len(rest) == 1 else annotation
    interval = None
    if typing.get_origin(annotation) is Annotated:
        base, *meta = typing.get_args(annotation)
        interval = next((m for m in meta if isinstance(m, Interval)), None)
        annotation = base
    return annotation, interval, optional


def check_value(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ``value`` to ``annotation`` (int -> float where a float is asked) or raise."""
    base, interval, optional = _unwrap(annotation)
    if value is None:
        if optional or base is Any or annotation is inspect.Parameter.empty:
            return None
        raise ConfigError(key, value, f"a value is required ({_describe(base, interval)})")
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        if value not in choices:
            raise ConfigError(key, value, f"one of {', '.join(map(str, choices))}")
        return value
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")
        return value
    if base in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, value, _describe(base, interval))
        if base is int and (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(key, value, _describe(base, interval))
        given, value = value, base(value)
        if base is float and not math.isfinite(value):
            raise ConfigError(key, given, _describe(base, interval))
        if interval is not None and not interval.contains(value):
            raise ConfigError(key, given, _describe(base, interval))
        return value
    if base is str and not isinstance(value, str):
        raise ConfigError(key, value, "a string")
    if base is list and not isinstance(value, list | tuple):
        raise ConfigError(key, value, "a list")
    return value


def _describe(base: Any, interval: Interval | None) -> str:
    kind = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    text = kind.get(base, getattr(base, "__name__", str(base)))
    if interval is None:
        return text
    if base is int:
        if interval.hi == math.inf:
            return f"an integer >= {interval.lo:g}"
        return f"an integer in [{interval.lo:.0f}, {interval.hi:.0f}]"
    if interval.hi == math.inf and interval.lo > -math.inf:  # floats are finite everywhere
        return f"a finite number {'>' if interval.open_lo else '>='} {interval.lo:g}"
    return f"{text} {interval}"


def check_fields(prefix: str, given: Mapping[str, Any], fields: Mapping[str, Any]) -> dict:
    """Check ``given`` against ``fields`` (name -> annotation); unknown keys are errors."""
    out = {}
    for key, value in given.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "no keys"
            raise ConfigError(f"{prefix}.{key}" if prefix else key, value, f"unknown key; allowed: {allowed}")
        out[key] = check_value(f"{prefix}.{key}" if prefix else key, value, fields[key])
    return out


@functools.cache
def schema_fields(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema, include_extras=True)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


@functools.cache
def signature_fields(fn: Callable, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parameters of a factory as fields; unannotated ones take their default's type."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:  # annotations that do not resolve (e.g. optax's): use defaults
        hints = {}
    fields = {}
    for name, p in inspect.signature(fn).parameters.items():
        if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = hints.get(name, inspect.Parameter.empty)
        if ann is inspect.Parameter.empty or not _simple(ann):
            default = p.default
            if isinstance(default, bool):
                ann = bool
            elif isinstance(default, float):
                ann = float | None
            elif isinstance(default, int):
                ann = int | None
            else:
                ann = Any
        fields[name] = ann
    return fields


def _simple(annotation: Any) -> bool:
    base, _, _ = _unwrap(annotation)
    return base in (int, float, bool, str) or typing.get_origin(base) is Literal


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


META_KEYS = ("wandb", "study", "hydra")


def _group(cfg: Mapping, name: str) -> dict:
    node = cfg.get(name)
    if not isinstance(node, Mapping):
        raise ConfigError(name, node, f"a config group; choose one with {name}=<option>")
    return dict(node)


def _check_inner(node: dict) -> dict:
    name = node.get("name")
    fields = dict(schema_fields(InnerSchema))
    if name == "exact" or "_target_" not in node:
        if name != "exact":
            raise ConfigError("inner_solver.name", name, "'exact', or an optax factory in inner_solver._target_")
        return check_fields("inner_solver", node, fields)
    fields["_target_"] = str
    factory = locate(node["_target_"], "inner_solver._target_")
    fields.update(signature_fields(factory, skip=("learning_rate",)))
    out = check_fields("inner_solver", node, fields)
    lr_required = inspect.signature(factory).parameters.get("learning_rate")
    if out.get("lr") is None and lr_required is not None and lr_required.default is inspect.Parameter.empty:
        raise ConfigError("inner_solver.lr", None, f"a positive number ({node['_target_']} needs a step size)")
    return out


def _check_optimizer(node: dict) -> dict:
    if "_target_" not in node:
        raise ConfigError("optimizer._target_", None, "an optax optimizer factory, e.g. optax.adam")
    factory = locate(node["_target_"], "optimizer._target_")
    fields = {"_target_": str, "name": str, **signature_fields(factory)}
    fields["learning_rate"] = Annotated[float, Positive]
    return check_fields("optimizer", node, fields)


def _check_objective(node: dict):
    """Checked objective options, the names of its factory's (static) parameters, the objective."""
    if "_target_" not in node:
        raise ConfigError("objective._target_", None, "the factory of the objective, e.g. src.objectives.ridge.make")
    factory = locate(node["_target_"], "objective._target_")
    make_fields = signature_fields(factory)
    static_given = {k: v for k, v in node.items() if k in make_fields}
    static_given = check_fields("objective", static_given, make_fields)
    objective = _call_factory(factory, node["_target_"], tuple(sorted(static_given.items())))
    fields = {"_target_": str, "name": str, **make_fields, **signature_fields(objective.data, skip=("seed",))}
    return check_fields("objective", node, fields), set(make_fields), objective


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
    top = check_fields("", {k: cfg[k] for k in RUN_KEYS if k in cfg}, schema_fields(RunSchema))
    for key in ("lr", "seed", "outer_steps", "precision"):
        if key not in top:
            raise ConfigError(key, None, "a value is required")
    tree: dict[str, Any] = dict(top)
    tree.setdefault("chunk_steps", None)
    tree.setdefault("reference_newton_steps", None)
    tree["inner_solver"] = _check_inner(_group(cfg, "inner_solver"))
    lin = _group(cfg, "linear_solver")
    if lin.get("name") not in LINEAR_SCHEMAS:
        raise ConfigError("linear_solver.name", lin.get("name"), f"one of {', '.join(LINEAR_SCHEMAS)}")
    tree["linear_solver"] = check_fields("linear_solver", lin, schema_fields(LINEAR_SCHEMAS[lin["name"]]))
    hg = _group(cfg, "hypergrad")
    if hg.get("name") not in HYPERGRAD_SCHEMAS:
        raise ConfigError("hypergrad.name", hg.get("name"), f"one of {', '.join(HYPERGRAD_SCHEMAS)}")
    tree["hypergrad"] = check_fields("hypergrad", hg, schema_fields(HYPERGRAD_SCHEMAS[hg["name"]]))
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
    wandb = check_fields("wandb", dict(cfg.get("wandb") or {}), schema_fields(WandbSchema))
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


def check_compatible(tree: dict, objective) -> None:
    """Choices that are valid alone but not together."""
    inner, hg, lin = tree["inner_solver"], tree["hypergrad"], tree["linear_solver"]
    if inner["name"] == "exact" and objective.inner_solution is None:
        raise ConfigError(
            "inner_solver",
            "exact",
            f"objective {tree['objective'].get('name', tree['objective']['_target_'])!r} has no closed-form "
            "inner solution; choose an iterative inner solver (gd, adam, lbfgs)",
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
    if hg["name"] == "implicit" and linear_solver_of(lin).symmetric_only and not objective.symmetric:
        raise ConfigError(
            "linear_solver",
            lin["name"],
            "gmres, bicgstab, neumann or direct: this objective's implicit system is not symmetric",
        )


# ----------------------------------------------------------------------------- objects
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
    """An :class:`src.inner.Optax`: float options (and None) traced, the rest fixed."""
    from src.inner import Optax

    traced = {k: v for k, v in options.items() if v is None or (isinstance(v, float) and not isinstance(v, bool))}
    fixed = tuple(sorted((k, v) for k, v in options.items() if k not in traced))
    return Optax(factory, traced, fixed)


def linear_solver_of(cfg: Mapping[str, Any]):
    from src import linsolve

    classes = {
        "cg": linsolve.CG,
        "gmres": linsolve.GMRES,
        "bicgstab": linsolve.BiCGStab,
        "neumann": linsolve.Neumann,
        "direct": linsolve.Direct,
        "identity": linsolve.Identity,
    }
    return classes[cfg["name"]](**{k: v for k, v in cfg.items() if k != "name"})


def build_method(tree: Mapping[str, Any]):
    """The method object of a validated config (``RunConfig.tree``): the only place where
    the config's groups become solvers; the numerical core reads no config."""
    from src.hypergrad import Implicit, Unrolled
    from src.inner import Exact, OptaxSolver
    from src.outer import NestedSolve

    inner_cfg = tree["inner_solver"]
    if inner_cfg["name"] == "exact":
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
    return NestedSolve(inner, hypergrad, outer)
