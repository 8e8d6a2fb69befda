"""What each part of a config accepts, checked by pydantic (strict types, ranges as
``annotated_types`` constraints), with errors worded for a user: the key, the value and
what is allowed (``invalid config: lr=0: a finite number > 0``).

* the top level and ``wandb``: :class:`Run`, :class:`Wandb`;
* ``linear_solver`` and ``hypergrad``: derived from the solver classes themselves
  (:mod:`src.core.linsolve`, :mod:`src.core.hypergrad`), whose annotated fields are the options;
* ``inner_solver``, ``optimizer`` and ``objective``: derived from the signature of the
  factory named in ``_target_`` (an optax optimizer, a researcher's own objective): its
  annotated parameters, or the type of their defaults, so that a new objective is
  checked with no extra code.

Defaults live in the YAML files of ``conf/``; a schema only says what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

Finite = Field(allow_inf_nan=False)
STRICT = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)


class ConfigError(ValueError):
    """A config value that is not allowed: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        shown = "null" if value is None else repr(value)
        super().__init__(f"invalid config: {key}={shown}: {allowed}")


class Run(BaseModel):
    """The top-level keys of ``conf/train.yaml`` that a run reads."""

    model_config = STRICT
    lr: Annotated[float, at.Gt(0), Finite] = None  # required by nested methods (src.config.validation.validate)
    seed: Annotated[int, at.Interval(ge=0, le=2**32 - 1)]  # a PRNG key and numpy/scikit-learn random_state
    outer_steps: Annotated[int, at.Ge(1)]
    precision: Literal["float32", "float64"]
    chunk_steps: Annotated[int, at.Ge(1)] | None = None
    reference_newton_steps: Annotated[int, at.Ge(1)] | None = None
    batch_size: Annotated[int, at.Interval(ge=1, le=2**31 - 1)] | None = None  # samples per minibatch; null: full batch
    eval_every: Annotated[int, at.Ge(1)] = 1  # rows between full-batch evaluations


class Wandb(BaseModel):
    model_config = STRICT
    mode: Literal["offline", "online", "disabled"] = None
    project: str | None = None
    entity: str | None = None
    group: str | None = None
    tags: list | None = None
    job_type: str | None = None


class Inner(BaseModel):
    """The keys every inner solver has; an optax solver adds its factory's options. A key
    whose default is ``None`` is optional; ``null`` is a value only where it means
    something (``tol: null``: a fixed number of steps; ``lr: null``: the factory's own)."""

    model_config = STRICT
    name: str
    steps: Annotated[int, at.Ge(1)] = None
    lr: Annotated[float, at.Gt(0), Finite] | None = None
    tol: Annotated[float, at.Ge(0), Finite] | None = None
    warm_start: bool = None


# ----------------------------------------------------------------------------- models
def _simple(annotation: Any) -> bool:
    """int, float, bool, str or a Literal, possibly Annotated and/or optional."""
    base = annotation
    for _ in range(3):
        if typing.get_origin(base) is Annotated:
            base = typing.get_args(base)[0]
        args = [a for a in typing.get_args(base) if a is not type(None)]
        if typing.get_origin(base) is not Literal and len(args) == 1 and len(typing.get_args(base)) == 2:
            base = args[0]
    return base in (int, float, bool, str) or typing.get_origin(base) is Literal


def _finite(annotation: Any) -> Any:
    """Floats are finite everywhere in a config."""
    if annotation is float:
        return Annotated[float, Finite]
    if typing.get_origin(annotation) is Annotated and typing.get_args(annotation)[0] is float:
        return Annotated[annotation, Finite]
    return annotation


def _optional(annotation: Any) -> Any:
    return annotation if annotation is Any else annotation | None


def _same(annotation: Any) -> Any:
    return annotation


def _nullable(annotation: Any) -> bool:
    """Whether ``None`` is one of an annotation's values (``X | None``, ``Optional[X]``, Any)."""
    if annotation is Any or annotation is None or annotation is type(None):
        return True
    if typing.get_origin(annotation) is Annotated:
        return _nullable(typing.get_args(annotation)[0])
    return (
        any(_nullable(a) for a in typing.get_args(annotation))
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else False
    )


@functools.cache
def signature_model(fns: tuple[Callable, ...], skip: tuple[str, ...] = (), **extra: Any) -> type[BaseModel]:
    """A model of the keyword parameters of factories ``fns``: their annotations where they
    are simple (``Annotated[int, annotated_types.Ge(1)]``), else the type of their
    defaults; every field optional (only what a config gives is checked), and ``null`` a
    value only of a parameter whose default is ``None`` or whose annotation allows it (a
    ``null`` for an option with a default is refused, not run as something else).
    ``extra``: more fields (as annotated), or fields that replace a parameter's."""
    fields: dict[str, Any] = {}
    for fn in fns:
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # noqa: BLE001 - annotations that do not resolve (optax's): use defaults
            hints = {}
        for name, p in inspect.signature(fn).parameters.items():
            if name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            annotation = hints.get(name, inspect.Parameter.empty)
            if annotation is inspect.Parameter.empty or not _simple(annotation):
                default = p.default
                if isinstance(default, bool):
                    annotation = bool
                elif isinstance(default, float):
                    annotation = float
                elif isinstance(default, int):
                    annotation = int
                else:
                    annotation = Any
            nullable = p.default is None or _nullable(annotation)
            fields[name] = ((_optional if nullable else _same)(_finite(annotation)), None)
    for name, annotation in extra.items():
        fields[name] = (_finite(annotation), None)
    names = "_".join(getattr(fn, "__qualname__", "factory") for fn in fns).replace(".", "_").replace("<", "")
    return create_model(f"Options_{names.replace('>', '')}", __config__=STRICT, **fields)


@functools.cache
def solver_model(cls: type) -> type[BaseModel]:
    """A model of a solver class's options (its dataclass fields of simple types; those
    without a default are required; ``null`` only where the annotation allows it), plus its
    ``name``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields: dict[str, Any] = {"name": (str, ...)}
    for f in dataclasses.fields(cls):
        if not _simple(hints[f.name]):
            continue  # a solver inside a solver (Implicit's linear solver) is a config group of its own
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        fields[f.name] = (_finite(hints[f.name]), ...) if required else (_finite(hints[f.name]), None)
    return create_model(f"Options_{cls.__name__}", __config__=STRICT, **fields)


@functools.cache
def choice_model(group: str, choices: tuple[tuple[str, type], ...]) -> tuple[TypeAdapter, dict[str, type[BaseModel]]]:
    """A group whose option is chosen by ``name`` (``linear_solver``, ``hypergrad``): a
    pydantic discriminated union of the options' models, each with ``name`` its literal."""
    variants = {
        name: create_model(f"{group}_{name}", __base__=solver_model(cls), name=(Literal[name], ...))
        for name, cls in choices
    }
    union = Annotated[typing.Union[tuple(variants.values())], Field(discriminator="name")]  # noqa: UP007
    return TypeAdapter(union), variants


def check_choice(group: str, classes: Mapping[str, type], node: Mapping[str, Any]) -> dict:
    """``node`` checked against the option its ``name`` chooses (pydantic dispatches on the
    discriminator); a ConfigError names the key, as :func:`check` does."""
    adapter, variants = choice_model(group, tuple(classes.items()))
    try:
        adapter.validate_python(dict(node))
    except ValidationError as err:
        e = err.errors()[0]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise ConfigError(f"{group}.name", node.get("name"), f"one of {', '.join(classes)}") from None
    return check(variants[node["name"]], node, group)


# ----------------------------------------------------------------------------- checking
def describe(info) -> str:
    """What a field allows, in words, from its type and ``annotated_types`` constraints."""
    base = info.annotation
    args = [a for a in typing.get_args(base) if a is not type(None)]
    if typing.get_origin(base) is not Literal and args and len(args) < len(typing.get_args(base)):
        base = args[0]  # Optional[X]
    if typing.get_origin(base) is Annotated:
        base = typing.get_args(base)[0]
    if typing.get_origin(base) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(base)))
    bounds: dict[str, float] = {}
    nested = [m for a in typing.get_args(info.annotation) for m in getattr(a, "__metadata__", ())]
    metadata = [*info.metadata, *nested]
    for m in metadata:
        for attr in ("gt", "ge", "lt", "le"):
            if getattr(m, attr, None) is not None:
                bounds[attr] = getattr(m, attr)
    if base is bool:
        return "true or false"
    if base is int:
        if "ge" in bounds and "le" in bounds:
            return f"an integer in [{bounds['ge']}, {bounds['le']}]"
        return f"an integer >= {bounds['ge']}" if "ge" in bounds else "an integer"
    if base is float:
        if "ge" in bounds and "le" in bounds:
            return f"a number in [{bounds['ge']:g}, {bounds['le']:g}]"
        if "gt" in bounds:
            return f"a finite number > {bounds['gt']:g}"
        return f"a finite number >= {bounds['ge']:g}" if "ge" in bounds else "a finite number"
    return {str: "a string", list: "a list"}.get(base, getattr(base, "__name__", str(base)))


def check(model: type[BaseModel], given: Mapping[str, Any], prefix: str = "", also: tuple[str, ...] = ()) -> dict:
    """``given`` checked (and coerced: ints where floats are asked) against ``model``; only
    the given keys come back. A :class:`ConfigError` names the first bad key; ``also``:
    keys allowed beside the model's (checked elsewhere), listed with them."""
    try:
        return model.model_validate(dict(given)).model_dump(exclude_unset=True)
    except ValidationError as err:
        e = err.errors()[0]
        key = ".".join(str(part) for part in (prefix, *e["loc"]) if part != "")
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(sorted([*model.model_fields, *also])) or "no keys"
            raise ConfigError(key, e["input"], f"unknown key; allowed: {allowed}") from None
        info = model.model_fields[e["loc"][0]]
        if e["type"] == "missing":
            raise ConfigError(key, None, f"a value is required ({describe(info)})") from None
        if e["input"] is None:
            raise ConfigError(
                key, None, f"{describe(info)}; null is not a value of this key (drop the override to keep its default)"
            ) from None
        raise ConfigError(key, e["input"], describe(info)) from None
