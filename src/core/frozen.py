"""Frozen dataclasses that are JAX pytrees: the shape of every solver and method object.

A solver is a small frozen object (as in lineax and optimistix). Its numeric options
(tolerances, step sizes, learning rates) are pytree *leaves*: traced values, so that the
members of one vmapped batch can differ in them. Options that change shapes or control
flow (iteration caps, step counts, warm starts, which optax factory) are *static* fields,
part of the pytree's structure: objects that differ in them are different programs.

    @frozen
    class CG:
        tol: float = 1e-5                 # a leaf
        maxiter: int = static(100)        # structure
"""

from __future__ import annotations

import dataclasses

import jax


def static(default=dataclasses.MISSING, **kwargs):
    """A dataclass field that is part of the pytree's structure, not a leaf."""
    return dataclasses.field(default=default, metadata={"static": True}, **kwargs)


def frozen(cls):
    """A frozen dataclass registered as a pytree (fields marked :func:`static` are structure)."""
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))
